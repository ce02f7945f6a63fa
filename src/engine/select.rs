//! Choosing an engine: `--engine auto|cpu|gpu` on the command line and in the app. With `auto`,
//! a GPU that fails at run time (lost device, missing feature, out of memory) hands over to the
//! cpu engine with a message instead of failing the work.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::cpu::CpuEngine;
use super::gpu::{AdapterPolicy, GpuContext, GpuEngine};
use super::{
    Engine, EngineError, Forward, ForwardOptions, FusedLoop, FusedOutcome, Gradient, Loss,
};
use crate::array::Array;
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
    /// A message for the user when `auto` fell back to the cpu engine although a GPU was found.
    pub notice: Option<String>,
}

/// Opens `net` on the engine `choice` asks for. This is the one engine policy, for the CLI and
/// the app alike:
/// - `Cpu`: the cpu engine.
/// - `Gpu`: the gpu engine on `device` (the app passes the window's), or on a device of its own
///   (software adapters allowed) when `device` is `None`; fails when that does not work.
/// - `Auto`: the gpu engine on a hardware adapter (`device` when it is one, else one it finds)
///   with a fallback to the cpu engine, which also takes over if the GPU fails later; the cpu
///   engine alone where there is no hardware adapter (lavapipe is slower than the cpu engine).
pub fn open_engine(
    net: Arc<Network>,
    choice: EngineChoice,
    device: Option<&GpuContext>,
) -> Result<Opened, EngineError> {
    match choice {
        EngineChoice::Cpu => Ok(Opened {
            engine: Box::new(CpuEngine::new(net)?),
            notice: None,
        }),
        EngineChoice::Gpu => {
            let ctx = match device {
                Some(ctx) => ctx.clone(),
                None => GpuContext::headless(AdapterPolicy::AllowSoftware)?,
            };
            Ok(Opened {
                engine: Box::new(GpuEngine::new(net, ctx)?),
                notice: None,
            })
        }
        EngineChoice::Auto => {
            let ctx = match device {
                Some(ctx) if !ctx.is_software() => Ok(ctx.clone()),
                Some(_) => Err(EngineError::NoAdapter("only a software adapter".into())),
                None => GpuContext::headless(AdapterPolicy::Hardware),
            };
            open_auto(net, ctx)
        }
    }
}

/// `auto` on a given device (or the error from finding one): the gpu engine with a cpu fallback.
pub fn open_auto(
    net: Arc<Network>,
    ctx: Result<GpuContext, EngineError>,
) -> Result<Opened, EngineError> {
    match ctx.and_then(|c| GpuEngine::new(net.clone(), c)) {
        Ok(gpu) => Ok(Opened {
            engine: Box::new(WithFallback {
                gpu: Some(gpu),
                cpu: None,
                net,
                failure: None,
            }),
            notice: None,
        }),
        Err(EngineError::NoAdapter(_)) => Ok(Opened {
            engine: Box::new(CpuEngine::new(net)?),
            notice: None,
        }),
        Err(e) => Ok(Opened {
            engine: Box::new(CpuEngine::new(net)?),
            notice: Some(format!(
                "the GPU is not usable ({e}); running on the cpu engine"
            )),
        }),
    }
}

/// The gpu engine until it fails with a device error, then the cpu engine for good.
pub struct WithFallback {
    gpu: Option<GpuEngine>,
    cpu: Option<CpuEngine>,
    net: Arc<Network>,
    /// Why the GPU was given up, once it has been (shown by `describe`, so the run record and
    /// the app's status bar say it).
    failure: Option<String>,
}

impl WithFallback {
    fn fall_back(&mut self, why: &EngineError) -> Result<&mut CpuEngine, EngineError> {
        if self.cpu.is_none() {
            self.failure = Some(why.to_string());
            self.gpu = None;
            self.cpu = Some(CpuEngine::new(self.net.clone())?);
        }
        self.cpu.as_mut().ok_or_else(|| EngineError::Backend {
            engine: "cpu",
            message: "fallback engine missing".into(),
        })
    }

    /// Runs `op` on the gpu, or on the cpu once the gpu has failed with a device error. Errors
    /// about the input (shape, NaN, loss) are returned as they are.
    fn run<T>(
        &mut self,
        mut op: impl FnMut(&mut dyn Engine) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if let Some(gpu) = self.gpu.as_mut() {
            match op(gpu) {
                Err(e @ EngineError::Backend { .. }) => {
                    let cpu = self.fall_back(&e)?;
                    return op(cpu);
                }
                other => return other,
            }
        }
        let cpu = self.fall_back(&EngineError::NoAdapter("no GPU".into()))?;
        op(cpu)
    }
}

impl Engine for WithFallback {
    fn describe(&self) -> String {
        match &self.gpu {
            Some(g) => g.describe(),
            None => format!(
                "cpu (after a GPU failure: {})",
                self.failure.as_deref().unwrap_or("unknown")
            ),
        }
    }

    fn network(&self) -> &Network {
        &self.net
    }

    fn forward(&mut self, x: &Array, opts: &ForwardOptions) -> Result<Forward, EngineError> {
        self.run(|e| e.forward(x, opts))
    }

    fn input_grad(
        &mut self,
        x: &Array,
        loss: &Loss,
        opts: &ForwardOptions,
    ) -> Result<Gradient, EngineError> {
        self.run(|e| e.input_grad(x, loss, opts))
    }

    fn iterate(
        &mut self,
        x: &Array,
        start: &Array,
        classes: &[usize],
        spec: &FusedLoop,
        opts: &ForwardOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<Result<FusedOutcome, EngineError>> {
        let gpu = self.gpu.as_mut()?;
        match gpu.iterate(x, start, classes, spec, opts, cancelled)? {
            Err(e @ EngineError::Backend { .. }) => {
                // Let the caller run the host loop on the cpu engine.
                self.fall_back(&e).err().map(Err)
            }
            other => Some(other),
        }
    }
}
