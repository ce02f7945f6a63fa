//! Square attack (Andriushchenko et al., ECCV 2020), L∞ and L2: random search over square
//! windows with forward passes only. Not yet implemented.

use rand_chacha::ChaCha8Rng;

use super::{AttackError, Context, StepRecord};
use crate::array::Array;
use crate::engine::Engine;

/// Runs Square on every image of `ctx`.
pub fn run(
    _engine: &mut dyn Engine,
    _ctx: &Context<'_>,
    _rngs: &mut [ChaCha8Rng],
) -> Result<(Array, Vec<Vec<StepRecord>>), AttackError> {
    Err(AttackError::Config("Square is not implemented yet".into()))
}
