//! FGSM (Goodfellow et al. 2015): `x' = clip01(x + ε·sign(∇ₓL(x, y)))`; with the L2 norm, the
//! fast gradient method `x + ε·∇/‖∇‖₂`. Targeted: descend the loss of the target.

use super::iterative::{IterParams, run_once};
use super::{AttackError, Context, StepRecord};
use crate::array::Array;
use crate::engine::Engine;

/// Runs FGSM.
pub fn run(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
) -> Result<(Array, Vec<Vec<StepRecord>>), AttackError> {
    let p = IterParams {
        eps: ctx.cfg.eps,
        alpha: ctx.cfg.eps,
        steps: 1,
        norm: ctx.cfg.norm,
        random_start: false,
        momentum: None,
        run: (0, 1),
    };
    let out = run_once(engine, ctx, &p, &mut [])?;
    Ok((out.x_adv, out.history))
}
