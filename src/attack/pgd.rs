//! I-FGSM/BIM (Kurakin et al. 2016) and PGD (Madry et al. 2018), L∞ or L2.
//!
//! Defaults: BIM starts at x with α = 1/255 and `min(255ε + 4, 1.25·255ε)` steps; PGD starts at a
//! uniform point in the ball with 10 steps of α = 2.5ε/steps. With restarts, each example keeps
//! its best run: a successful one first, then the one with the highest loss (lowest for targeted).

use rand_chacha::ChaCha8Rng;

use super::iterative::{IterParams, run_once};
use super::{AttackError, AttackKind, Context, StepRecord};
use crate::array::Array;
use crate::engine::Engine;

/// Madry et al.'s PGD step size for `steps` steps in a budget `eps`: 2.5·ε/steps, so the
/// iterate can cross the ball from a random start.
pub fn madry_step_size(eps: f32, steps: usize) -> f32 {
    2.5 * eps / steps.max(1) as f32
}

/// The step count and size an attack uses when the user gives none.
pub fn defaults(kind: AttackKind, eps: f32) -> (usize, f32) {
    match kind {
        AttackKind::Bim => {
            let e = eps * 255.0;
            let steps = (e + 4.0).min(1.25 * e).floor().max(1.0) as usize;
            (steps, 1.0 / 255.0)
        }
        _ => (10, madry_step_size(eps, 10)),
    }
}

/// Runs BIM or PGD.
pub fn run(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
    rngs: &mut [ChaCha8Rng],
) -> Result<(Array, Vec<Vec<StepRecord>>), AttackError> {
    let cfg = ctx.cfg;
    let (default_steps, default_alpha) = defaults(cfg.kind, cfg.eps);
    let steps = cfg.steps.unwrap_or(default_steps);
    let alpha = cfg
        .alpha
        .unwrap_or(if cfg.steps.is_some() && cfg.kind == AttackKind::Pgd {
            madry_step_size(cfg.eps, steps)
        } else {
            default_alpha
        });
    let p = IterParams {
        eps: cfg.eps,
        alpha,
        steps,
        norm: cfg.norm,
        random_start: cfg.random_start.unwrap_or(cfg.kind == AttackKind::Pgd),
        momentum: None,
        run: (0, cfg.restarts),
    };
    let (_, dir) = ctx.ce_loss();
    let mut best = run_once(engine, ctx, &p, rngs)?;
    for r in 1..cfg.restarts {
        let p = IterParams {
            run: (r, cfg.restarts),
            ..p
        };
        let next = run_once(engine, ctx, &p, rngs)?;
        for i in 0..ctx.x.batch() {
            let score = |o: &super::iterative::IterOutcome| {
                (ctx.succeeded(i, o.logits.example(i)), dir * o.loss[i])
            };
            let (s_new, l_new) = score(&next);
            let (s_old, l_old) = score(&best);
            if (s_new && !s_old) || (s_new == s_old && l_new > l_old) {
                best.x_adv
                    .example_mut(i)
                    .copy_from_slice(next.x_adv.example(i));
                best.history[i] = next.history[i].clone();
                best.loss[i] = next.loss[i];
                best.logits
                    .example_mut(i)
                    .copy_from_slice(next.logits.example(i));
            }
        }
    }
    Ok((best.x_adv, best.history))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bim_defaults_follow_kurakin() {
        let (steps, alpha) = defaults(AttackKind::Bim, 8.0 / 255.0);
        assert_eq!(steps, 10);
        assert!((alpha - 1.0 / 255.0).abs() < 1e-9);
        let (steps, _) = defaults(AttackKind::Bim, 16.0 / 255.0);
        assert_eq!(steps, 20);
    }
}
