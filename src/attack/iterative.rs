//! The loop shared by the iterative gradient attacks (BIM, PGD, MI-FGSM): optional random start,
//! `steps` updates of size α along the (momentum-accumulated) gradient, projection onto the ε ball
//! ∩ [0, 1] after every step.

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::project::{l1, l2, project, step};
use super::{AttackError, Context, Norm, Progress, StepRecord, record, record_with};
use crate::array::Array;
use crate::engine::{Engine, FusedLoop, FusedOutcome};
use crate::model::normal;

/// Settings of one run of the loop.
#[derive(Clone, Copy, Debug)]
pub struct IterParams {
    /// Budget.
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// Number of updates.
    pub steps: usize,
    /// Norm.
    pub norm: Norm,
    /// Start from a uniform point in the ball.
    pub random_start: bool,
    /// MI-FGSM decay μ (gradients L1-normalised per example and accumulated).
    pub momentum: Option<f32>,
    /// Which run of the attack this is and how many it makes (PGD's restarts), so the progress
    /// reported after each step covers the whole attack.
    pub run: (usize, usize),
}

/// What one run produced.
pub struct IterOutcome {
    /// Adversarial images.
    pub x_adv: Array,
    /// Per-example history.
    pub history: Vec<Vec<StepRecord>>,
    /// Final loss per example.
    pub loss: Vec<f32>,
    /// Final logits.
    pub logits: Array,
}

/// Draws a random start inside the ball around `x`, clipped to [0, 1].
pub fn random_start(x: &[f32], eps: f32, norm: Norm, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut out: Vec<f32> = match norm {
        Norm::Linf => x
            .iter()
            .map(|&v| v + rng.random_range(-1.0f32..=1.0) * eps)
            .collect(),
        Norm::L2 => {
            let dir: Vec<f32> = x.iter().map(|_| normal(rng)).collect();
            let n = l2(&dir).max(f32::MIN_POSITIVE);
            // Uniform in the ball: radius ε·u^(1/d).
            let r = eps * rng.random::<f32>().powf(1.0 / x.len() as f32);
            x.iter().zip(&dir).map(|(&v, &d)| v + r * d / n).collect()
        }
    };
    project(&mut out, x, eps, norm);
    out
}

/// Runs the loop once.
pub fn run_once(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
    p: &IterParams,
    rngs: &mut [ChaCha8Rng],
) -> Result<IterOutcome, AttackError> {
    let x = ctx.x;
    let n = x.batch();
    let (loss, dir) = ctx.ce_loss();
    let mut x_adv = x.clone();
    if p.random_start {
        for (i, rng) in rngs.iter_mut().enumerate().take(n) {
            let start = random_start(x.example(i), p.eps, p.norm, rng);
            x_adv.example_mut(i).copy_from_slice(&start);
        }
    }
    let spec = FusedLoop {
        eps: p.eps,
        alpha: p.alpha,
        steps: p.steps,
        l2: p.norm == Norm::L2,
        momentum: p.momentum,
        direction: dir,
    };
    let classes = ctx.targets.unwrap_or(ctx.labels);
    ctx.cancel.check()?;
    let cancelled = || ctx.cancel.is_cancelled();
    if let Some(fused) = engine.iterate(x, &x_adv, classes, &spec, ctx.opts, &cancelled) {
        return match fused {
            Err(crate::engine::EngineError::Cancelled) => Err(AttackError::Cancelled),
            other => from_fused(ctx, other?),
        };
    }
    let mut acc = Array::zeros(x.shape().to_vec());
    let mut history: Vec<Vec<StepRecord>> = vec![Vec::with_capacity(p.steps + 1); n];
    for s in 0..p.steps {
        ctx.cancel.check()?;
        let g = engine.input_grad(&x_adv, &loss, ctx.opts)?;
        for (i, h) in history.iter_mut().enumerate() {
            h.push(record(
                s,
                g.loss[i],
                g.logits.example(i),
                ctx.labels[i],
                ctx.target(i),
                x_adv.example(i),
                x.example(i),
            ));
            let gi = g.grad.example(i);
            let direction: &[f32] = match p.momentum {
                Some(mu) => {
                    let norm1 = l1(gi);
                    let a = acc.example_mut(i);
                    for (av, &gv) in a.iter_mut().zip(gi) {
                        *av = mu * *av + if norm1 > 0.0 { gv / norm1 } else { 0.0 };
                    }
                    acc.example(i)
                }
                None => gi,
            };
            let xi = x_adv.example_mut(i);
            step(xi, direction, dir * p.alpha, p.norm);
            project(xi, x.example(i), p.eps, p.norm);
        }
        (ctx.progress)(Progress {
            stage: ctx.cfg.kind.id(),
            done: fraction_done(p, s + 1),
        });
    }
    ctx.cancel.check()?;
    let fwd = engine.forward(&x_adv, ctx.opts)?;
    let (final_loss, _) = loss.evaluate(&fwd.logits)?;
    for (i, h) in history.iter_mut().enumerate() {
        h.push(record(
            p.steps,
            final_loss[i],
            fwd.logits.example(i),
            ctx.labels[i],
            ctx.target(i),
            x_adv.example(i),
            x.example(i),
        ));
    }
    Ok(IterOutcome {
        x_adv,
        history,
        loss: final_loss,
        logits: fwd.logits,
    })
}

/// The fraction of the whole attack done after `steps` steps of run `p.run`.
fn fraction_done(p: &IterParams, steps: usize) -> f32 {
    let (run, runs) = p.run;
    let total = runs.max(1) * p.steps.max(1);
    ((run * p.steps + steps) as f32 / total as f32).min(1.0)
}

/// The outcome of a loop the engine ran on its device.
fn from_fused(ctx: &Context<'_>, out: FusedOutcome) -> Result<IterOutcome, AttackError> {
    ctx.cancel.check()?;
    let n = ctx.x.batch();
    let last = out
        .steps
        .last()
        .ok_or_else(|| AttackError::Config("the device returned no steps".into()))?;
    let k = last.first().map_or(0, |s| s.logits.len());
    let mut history: Vec<Vec<StepRecord>> = vec![Vec::with_capacity(out.steps.len()); n];
    for (s, row) in out.steps.iter().enumerate() {
        for (i, (h, st)) in history.iter_mut().zip(row).enumerate() {
            h.push(record_with(
                s,
                st.loss,
                &st.logits,
                ctx.labels[i],
                ctx.target(i),
                st.linf,
                st.l2,
            ));
        }
    }
    let logits: Vec<f32> = last.iter().flat_map(|s| s.logits.iter().copied()).collect();
    let logits = Array::new(vec![n, k], logits)
        .map_err(|e| AttackError::Config(format!("device logits: {e}")))?;
    Ok(IterOutcome {
        x_adv: out.x_adv,
        history,
        loss: last.iter().map(|s| s.loss).collect(),
        logits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_covers_every_restart_and_ends_at_one() {
        let p = |run| IterParams {
            eps: 0.1,
            alpha: 0.01,
            steps: 4,
            norm: Norm::Linf,
            random_start: true,
            momentum: None,
            run,
        };
        let all: Vec<f32> = (0..3)
            .flat_map(|r| (1..=4).map(move |s| fraction_done(&p((r, 3)), s)))
            .collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
        assert_eq!(all[3], 4.0 / 12.0);
        assert_eq!(*all.last().unwrap(), 1.0);
    }
}
