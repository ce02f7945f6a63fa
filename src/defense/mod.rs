//! Input-transformation defences: image processing placed in front of a network (JPEG
//! compression, bit-depth reduction, median smoothing, random resize and pad), and the rules
//! by which an attack's gradient passes them (naive, BPDA, exact, EOT over their randomness).
//!
//! A [`Chain`] acts on images in [0, 1] before the network's own normalisation; every transform
//! keeps the image's shape, so the network and its taps are unchanged. The defended model is a
//! [`Defense`] plus a network, run through [`crate::engine::Defended`], which wraps any engine:
//! the transforms run on the host for every engine (JPEG has no device form, and the others
//! are cheap next to a network), so the cpu and gpu engines see identical transformed inputs.

mod bits;
mod chain;
mod draws;
mod jpeg;
mod median;
mod resize_pad;
mod transform;

pub use chain::{Applied, Chain, MAX_CHAIN};
pub use draws::Draws;
pub use resize_pad::{Pattern, padded_size};
pub use transform::{MAX_MEDIAN, Transform};

use std::fmt;
use std::str::FromStr;

/// Image dimensions `[C, H, W]`, shared by the transforms (kept here so that they need not
/// import `transform.rs`, which imports them).
pub(crate) type Dims = [usize; 3];

/// Errors in a defence's description or its application.
#[derive(Debug, thiserror::Error)]
pub enum DefenseError {
    /// A transform's name is not one advlens knows.
    #[error("unknown defence {0:?}; expected jpeg[:Q], bits[:B], median[:K] or resize-pad[:S]")]
    UnknownTransform(String),
    /// A parameter is missing its number or is out of range.
    #[error("{transform}: {message}")]
    Parameter {
        /// The transform as written.
        transform: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The images do not fit the transform (too small, or a size over the limit).
    #[error("{transform} cannot act on {channels}×{height}×{width} images: {message}")]
    Shape {
        /// The transform.
        transform: String,
        /// Channels.
        channels: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
        /// Why.
        message: String,
    },
    /// The JPEG codec failed.
    #[error("jpeg: {0}")]
    Codec(String),
    /// A batch could not be assembled.
    #[error(transparent)]
    Array(#[from] crate::array::ArrayError),
    /// A gradient does not have the shape of the batch it belongs to.
    #[error("gradient has shape {actual:?}, the transformed batch has {expected:?}")]
    GradientShape {
        /// Shape of the batch.
        expected: Vec<usize>,
        /// Shape given.
        actual: Vec<usize>,
    },
}

/// How an attack's gradient passes the transforms of a chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientMode {
    /// Each transform's own derivative where it has one (median routes to the median pixel,
    /// resize and pad are exact) and zero where it has none (JPEG, bit depth): what an
    /// evaluation that ignores the defence computes.
    Naive,
    /// Backward-pass differentiable approximation (Athalye et al. 2018): the identity for the
    /// non-differentiable steps (JPEG, bit depth, median), the exact adjoint for resize and pad.
    #[default]
    Bpda,
}

impl GradientMode {
    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            GradientMode::Naive => "naive",
            GradientMode::Bpda => "bpda",
        }
    }
}

impl fmt::Display for GradientMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GradientMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "naive" => Ok(GradientMode::Naive),
            "bpda" => Ok(GradientMode::Bpda),
            other => Err(format!(
                "unknown gradient mode {other:?}; expected naive or bpda"
            )),
        }
    }
}

/// The most draws one gradient may average over.
pub const MAX_EOT: usize = 1000;

/// A defended model's preprocessing: the chain, how gradients pass it, how many draws of its
/// randomness a gradient averages over, and the seed of those draws. Saved in run records.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Defense {
    /// The transforms, applied in order.
    pub chain: Chain,
    /// The backward rule of the non-differentiable transforms.
    pub gradient: GradientMode,
    /// Expectation over transformation: each input gradient (and its loss and logits) is the
    /// mean over this many independent draws of the chain's randomness. 1 for no averaging;
    /// ignored (one draw) for a chain without randomness.
    pub eot: usize,
    /// The seed of every draw.
    pub seed: u64,
}

impl Default for Defense {
    fn default() -> Self {
        Self {
            chain: Chain::default(),
            gradient: GradientMode::default(),
            eot: 1,
            seed: 0,
        }
    }
}

impl Defense {
    /// A defence with `chain`, BPDA gradients, no EOT and seed 0.
    pub fn new(chain: Chain) -> Self {
        Self {
            chain,
            ..Self::default()
        }
    }

    /// Whether the defence changes nothing (an empty chain).
    pub fn is_none(&self) -> bool {
        self.chain.is_empty()
    }

    /// Checks the settings and that the chain fits `[C, H, W]` images.
    pub fn check(&self, input: [usize; 3]) -> Result<(), DefenseError> {
        if self.eot == 0 || self.eot > MAX_EOT {
            return Err(DefenseError::Parameter {
                transform: "eot".into(),
                message: format!("{} draws; use 1 to {MAX_EOT}", self.eot),
            });
        }
        self.chain.check(input)
    }

    /// The number of draws a gradient averages over: `eot` for a random chain, else 1.
    pub fn draws_per_gradient(&self) -> usize {
        if self.chain.is_random() { self.eot } else { 1 }
    }

    /// A one-line description, e.g. `jpeg:75,bits:5 (bpda, EOT 10, seed 0)`.
    pub fn describe(&self) -> String {
        if self.is_none() {
            return "none".into();
        }
        let mut s = format!("{} ({}", self.chain, self.gradient);
        if self.chain.is_random() {
            s.push_str(&format!(", EOT {}, seed {}", self.eot, self.seed));
        }
        s.push(')');
        s
    }
}
