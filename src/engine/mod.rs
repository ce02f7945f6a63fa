//! Engines run a [`Network`] forward (logits and taps) and compute the gradient of a loss with
//! respect to the **input only**: attacks never need weight gradients.
//!
//! Every engine walks the same architecture description ([`crate::model::Graph`]); the loss and
//! its gradient with respect to the logits are computed on the host by [`Loss`], so all engines
//! agree on the definitions.

mod apgd;
pub mod cpu;
mod defended;
pub mod gpu;
mod loss;
mod select;

use crate::array::Array;
use crate::model::Network;
pub use apgd::{ApgdSession, ApgdSpec, Probe};
pub use defended::Defended;
pub use loss::{Loss, best_other};
pub use select::{EngineChoice, Opened, open_auto, open_engine};

/// Errors raised by engines.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input batch does not match the network.
    #[error("input has shape {actual:?}, the network expects [N, {}, {}, {}]", expected[0], expected[1], expected[2])]
    InputShape {
        /// `[C, H, W]` the network takes.
        expected: [usize; 3],
        /// Shape given.
        actual: Vec<usize>,
    },
    /// The caller cancelled the work.
    #[error("cancelled")]
    Cancelled,
    /// The input holds NaN or infinity.
    #[error("input contains NaN or infinite values")]
    NonFiniteInput,
    /// A loss was given labels or weights that do not fit the batch.
    #[error("invalid loss: {0}")]
    Loss(String),
    /// A tap name that the network does not have.
    #[error("the network has no tap named {0:?}")]
    UnknownTap(String),
    /// No device of the kind asked for.
    #[error("{0}")]
    NoAdapter(String),
    /// A defence in front of the network could not be applied.
    #[error("defence: {0}")]
    Defense(String),
    /// The backend failed.
    #[error("{engine} engine: {message}")]
    Backend {
        /// Which engine.
        engine: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Which taps a forward pass returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum TapSelection {
    /// None (fastest).
    #[default]
    None,
    /// Every tap of the network.
    All,
    /// These taps, by name.
    Names(Vec<String>),
}

/// Options shared by forward and gradient passes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardOptions {
    /// Taps to return.
    pub taps: TapSelection,
    /// Skip every denoise block (its output equals its input), to compare the same weights with
    /// and without denoising.
    pub bypass_denoise: bool,
}

/// The result of a forward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Logits `[N, K]`.
    pub logits: Array,
    /// Requested taps in network order, each NCHW (or `[N, F]`).
    pub taps: Vec<(String, Array)>,
    /// The batch as the network saw it, when a defence transformed the input (see
    /// [`Defended`]); `None` when the network saw the input itself.
    pub seen: Option<Array>,
}

/// The result of a gradient pass.
#[derive(Clone, Debug)]
pub struct Gradient {
    /// Logits `[N, K]` at the input.
    pub logits: Array,
    /// The loss of each example.
    pub loss: Vec<f32>,
    /// `∂(Σ_n loss_n) / ∂x`, shaped like the input. Examples never mix, so row `n` is the gradient
    /// of `loss_n` alone.
    pub grad: Array,
}

/// A network loaded onto a compute device.
pub trait Engine: Send {
    /// A short description for logs, records and the status bar (engine and device).
    fn describe(&self) -> String;

    /// The network being run.
    fn network(&self) -> &Network;

    /// Runs the network on a batch `x` in [0, 1], NCHW.
    fn forward(&mut self, x: &Array, opts: &ForwardOptions) -> Result<Forward, EngineError>;

    /// Runs the network and returns the gradient of `loss` with respect to `x` only.
    fn input_grad(
        &mut self,
        x: &Array,
        loss: &Loss,
        opts: &ForwardOptions,
    ) -> Result<Gradient, EngineError>;

    /// Runs a whole iterative gradient attack (softmax cross-entropy on `classes`) on the device,
    /// starting at `start`, when the engine can; `None` means the caller runs the loop on the
    /// host with [`Engine::input_grad`]. `cancelled` is polled every few steps; when it returns
    /// true the run ends with [`EngineError::Cancelled`].
    fn iterate(
        &mut self,
        _x: &Array,
        _start: &Array,
        _classes: &[usize],
        _spec: &FusedLoop,
        _opts: &ForwardOptions,
        _cancelled: &dyn Fn() -> bool,
    ) -> Option<Result<FusedOutcome, EngineError>> {
        None
    }

    /// An Auto-PGD session whose points and gradients stay on the device, when the engine can
    /// hold one for this batch; `None` means the caller keeps them on the host and uses
    /// [`Engine::input_grad`]. The session starts at `start` (checked like any input) and ascends
    /// `sign · loss`.
    fn apgd_session<'a>(
        &'a mut self,
        _x: &Array,
        _start: &Array,
        _loss: &Loss,
        _sign: f32,
        _spec: ApgdSpec,
        _opts: &ForwardOptions,
    ) -> Option<Result<Box<dyn ApgdSession + 'a>, EngineError>> {
        None
    }

    /// The input-transformation defence in front of the network, when there is one (see
    /// [`Defended`]); `None` for a bare network or an empty chain.
    fn active_defense(&self) -> Option<&crate::defense::Defense> {
        None
    }
}

/// The settings of an iterative attack run on the device by [`Engine::iterate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedLoop {
    /// Budget.
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// Number of updates.
    pub steps: usize,
    /// L2 threat model (else L∞).
    pub l2: bool,
    /// MI-FGSM decay μ.
    pub momentum: Option<f32>,
    /// +1 to ascend the loss (untargeted), −1 to descend it (toward a target).
    pub direction: f32,
}

/// One example at one step of a device-side attack.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedStep {
    /// Cross-entropy loss.
    pub loss: f32,
    /// ‖δ‖∞.
    pub linf: f32,
    /// ‖δ‖₂.
    pub l2: f32,
    /// Logits.
    pub logits: Vec<f32>,
}

/// What [`Engine::iterate`] returns.
#[derive(Clone, Debug)]
pub struct FusedOutcome {
    /// Adversarial images after the last update.
    pub x_adv: Array,
    /// `steps[s][i]`: example `i` before update `s` (the last entry is after the last update).
    pub steps: Vec<Vec<FusedStep>>,
}

/// Checks that `x` is a finite batch shaped for `net`.
pub fn check_input(net: &Network, x: &Array) -> Result<(), EngineError> {
    let expected = net.input_shape();
    let ok = x.shape().len() == 4 && x.shape()[1..] == expected[..] && x.shape()[0] > 0;
    if !ok {
        return Err(EngineError::InputShape {
            expected,
            actual: x.shape().to_vec(),
        });
    }
    if !x.all_finite() {
        return Err(EngineError::NonFiniteInput);
    }
    Ok(())
}

/// Resolves a tap selection to `(name, node)` pairs in network order.
pub fn resolve_taps(
    net: &Network,
    sel: &TapSelection,
) -> Result<Vec<(String, usize)>, EngineError> {
    match sel {
        TapSelection::None => Ok(vec![]),
        TapSelection::All => Ok(net
            .graph
            .taps
            .iter()
            .map(|t| (t.name.clone(), t.node))
            .collect()),
        TapSelection::Names(names) => names
            .iter()
            .map(|n| {
                net.graph
                    .tap(n)
                    .map(|t| (t.name.clone(), t.node))
                    .ok_or_else(|| EngineError::UnknownTap(n.clone()))
            })
            .collect(),
    }
}

/// The predicted class of each example.
pub fn predictions(logits: &Array) -> Vec<usize> {
    (0..logits.batch())
        .map(|i| crate::array::argmax(logits.example(i)).unwrap_or(0))
        .collect()
}
