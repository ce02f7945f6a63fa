//! Choosing an engine: `--engine auto|cpu|gpu` on the command line and in the app.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::cpu::CpuEngine;
use super::gpu::{AdapterPolicy, GpuContext, GpuEngine};
use super::{Engine, EngineError};
use crate::model::Network;

/// Which engine to run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// A hardware GPU when there is one, else the cpu engine.
    #[default]
    Auto,
    /// The cpu engine (candle).
    Cpu,
    /// The gpu engine on any adapter, a software one (lavapipe) included.
    Gpu,
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Cpu => "cpu",
            EngineChoice::Gpu => "gpu",
        })
    }
}

impl FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(EngineChoice::Auto),
            "cpu" => Ok(EngineChoice::Cpu),
            "gpu" => Ok(EngineChoice::Gpu),
            other => Err(format!(
                "unknown engine {other:?}; expected auto, cpu or gpu"
            )),
        }
    }
}

/// An opened engine and, when the choice could not be honoured, why.
pub struct Opened {
    /// The engine.
    pub engine: Box<dyn Engine>,
    /// A message for the user when `auto` or `gpu` fell back to the cpu engine.
    pub notice: Option<String>,
}

/// Opens `net` on the engine `choice` asks for. `Gpu` fails when no adapter works; `Auto` falls
/// back to the cpu engine (with a notice only when a hardware adapter was found but failed).
pub fn open_engine(net: Arc<Network>, choice: EngineChoice) -> Result<Opened, EngineError> {
    let gpu =
        |policy| GpuContext::headless(policy).and_then(|ctx| GpuEngine::new(net.clone(), ctx));
    match choice {
        EngineChoice::Cpu => Ok(Opened {
            engine: Box::new(CpuEngine::new(net.clone())?),
            notice: None,
        }),
        EngineChoice::Gpu => Ok(Opened {
            engine: Box::new(gpu(AdapterPolicy::AllowSoftware)?),
            notice: None,
        }),
        EngineChoice::Auto => match gpu(AdapterPolicy::Hardware) {
            Ok(e) => Ok(Opened {
                engine: Box::new(e),
                notice: None,
            }),
            Err(e) => Ok(Opened {
                engine: Box::new(CpuEngine::new(net.clone())?),
                notice: Some(format!("no usable GPU ({e}); running on the cpu engine")),
            }),
        },
    }
}
