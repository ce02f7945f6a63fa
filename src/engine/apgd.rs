//! Where the vectors of one Auto-PGD run live. The schedule (step sizes, checkpoints, which
//! images improved, were fooled or go back to their best point) is decided on the host, once,
//! in `attack::apgd`; it drives an [`ApgdSession`] that holds the current, previous, best and
//! fooling points and the gradients, on the host or on a device, and hands back only per-image
//! values between steps.

use super::EngineError;
use crate::array::Array;

/// The threat model of an APGD session's step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApgdSpec {
    /// Budget.
    pub eps: f32,
    /// L2 threat model (else L∞).
    pub l2: bool,
}

/// What evaluating the current points gives, per image.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Logits `[N, K]` at the current points.
    pub logits: Array,
    /// The loss APGD maximises (the engine's loss times the run's sign).
    pub loss: Vec<f32>,
    /// ‖x_cur − x‖∞.
    pub linf: Vec<f32>,
    /// ‖x_cur − x‖₂.
    pub l2: Vec<f32>,
}

/// The points and gradients of one APGD run. A session starts with the current, previous, best
/// and fooling points all at the start point; the run calls [`ApgdSession::evaluate`], then
/// [`ApgdSession::keep`] with every image marked improved, then alternates steps, evaluations,
/// keeps and (at checkpoints) restores, and ends with [`ApgdSession::finish`].
pub trait ApgdSession {
    /// The forward pass and the gradient of the signed loss at the current points; the gradient
    /// stays in the session for the next step.
    fn evaluate(&mut self) -> Result<Probe, EngineError>;

    /// ‖g‖₁ of each image's current gradient.
    fn grad_l1(&mut self) -> Result<Vec<f32>, EngineError>;

    /// One momentum step with step size `eta[i]` for image `i`: `z = P(x + η·dir(g))`, then
    /// `x ← P(x + a·(z − x) + (1 − a)·(x − x_prev))` and `x_prev ← x` (old value).
    fn step(&mut self, eta: &[f32], a: f32) -> Result<(), EngineError>;

    /// Best point and gradient ← current where `improved`; fooling point ← current where
    /// `fooled`.
    fn keep(&mut self, improved: &[bool], fooled: &[bool]) -> Result<(), EngineError>;

    /// Current point and gradient ← best where `halve`.
    fn restore(&mut self, halve: &[bool]) -> Result<(), EngineError>;

    /// The result: the fooling point where `fooled`, else the best point.
    fn finish(&mut self, fooled: &[bool]) -> Result<Array, EngineError>;
}
