//! MI-FGSM (Dong et al. 2018): `g ← μ·g + ∇/‖∇‖₁` per example, `x ← Clip(x + α·sign(g))`, with
//! μ = 1 and α = ε/steps by default.

use rand_chacha::ChaCha8Rng;

use super::iterative::{IterParams, run_once};
use super::{AttackError, Context, StepRecord};
use crate::array::Array;
use crate::engine::Engine;

/// Runs MI-FGSM.
pub fn run(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
    rngs: &mut [ChaCha8Rng],
) -> Result<(Array, Vec<Vec<StepRecord>>), AttackError> {
    let cfg = ctx.cfg;
    let steps = cfg.steps.unwrap_or(10);
    let p = IterParams {
        eps: cfg.eps,
        alpha: cfg.alpha.unwrap_or(cfg.eps / steps as f32),
        steps,
        norm: cfg.norm,
        random_start: cfg.random_start.unwrap_or(false),
        momentum: Some(cfg.momentum),
        run: (0, 1),
    };
    let out = run_once(engine, ctx, &p, rngs)?;
    Ok((out.x_adv, out.history))
}
