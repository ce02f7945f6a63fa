//! Signs that an attack failed rather than the model having won: AutoAttack's checks and Pintor
//! et al.'s indicators of attack failure (NeurIPS 2022), each with the numbers behind it.

use serde::{Deserialize, Serialize};

/// One kind of warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The loss gradient is exactly zero for some images at the start point.
    ZeroGradient,
    /// The gradient or the logits contain NaN or infinity.
    NonFinite,
    /// The attack's loss was still improving over its last steps.
    NotConverged,
    /// Repeated forward passes on the same input give different outputs.
    Randomised,
    /// The model's outputs look like probabilities, not logits.
    SoftmaxOutput,
    /// Square (black-box) fooled images that the gradient attacks before it did not.
    SquareBeatsWhiteBox,
    /// An iterate on the attack's path was adversarial but the returned point is not.
    SilentSuccess,
    /// Images survive even without a budget, which a working attack should not allow.
    UnboundedFailure,
}

impl Flag {
    /// Identifier used in records.
    pub fn id(self) -> &'static str {
        match self {
            Flag::ZeroGradient => "zero_gradient",
            Flag::NonFinite => "non_finite",
            Flag::NotConverged => "not_converged",
            Flag::Randomised => "randomised",
            Flag::SoftmaxOutput => "softmax_output",
            Flag::SquareBeatsWhiteBox => "square_beats_white_box",
            Flag::SilentSuccess => "silent_success",
            Flag::UnboundedFailure => "unbounded_failure",
        }
    }

    /// What the flag means and what to try, for tooltips and CLI warnings.
    pub fn explanation(self) -> &'static str {
        match self {
            Flag::ZeroGradient => {
                "the loss gradient is exactly zero at the start point for some images: gradients \
                 are masked (quantisation, a saturated or non-differentiable layer), so gradient \
                 attacks cannot move. Try Square (black-box) or BPDA."
            }
            Flag::NonFinite => {
                "NaN or infinite values in the logits or gradient: the numbers the attack follows \
                 are meaningless. Check the model's inputs and its numerical stability."
            }
            Flag::NotConverged => {
                "the attack's loss was still rising over its last steps: more steps (or a larger \
                 step size) would likely fool more images."
            }
            Flag::Randomised => {
                "the model gives different outputs for the same input: it is randomised, so one \
                 gradient is noise. Use EOT (autoattack-rand) and report accuracy over repeated \
                 draws."
            }
            Flag::SoftmaxOutput => {
                "the outputs look like probabilities (in [0, 1], rows summing to 1), not logits: \
                 cross-entropy on them has vanishing gradients. Remove the final softmax."
            }
            Flag::SquareBeatsWhiteBox => {
                "the black-box Square attack fooled images the white-box attacks could not: a \
                 sign of gradient masking. Try more Square queries and adaptive attacks."
            }
            Flag::SilentSuccess => {
                "the attack passed through an adversarial point but returned one that is not: \
                 the attack should keep the best adversarial iterate."
            }
            Flag::UnboundedFailure => {
                "images stay correctly classified even with an unlimited budget: the attack, not \
                 the model, is failing (masked gradients, a bug, a broken loss)."
            }
        }
    }
}

/// A raised flag with the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Which check.
    pub flag: Flag,
    /// Images the check found affected.
    pub images: usize,
    /// Images the check looked at.
    pub of: usize,
    /// The measurement, in words and numbers.
    pub detail: String,
}
