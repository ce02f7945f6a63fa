//! Carlini–Wagner L2 (2017): `x' = ½(tanh w + 1)`, minimise `‖x' − x‖₂² + c·f(x')` with Adam,
//! binary search over `c` per example, keeping the smallest successful perturbation found.

use super::{AttackError, Context, StepRecord, record};
use crate::array::Array;
use crate::engine::{Engine, Loss};

/// Runs C&W L2.
pub fn run(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
) -> Result<(Array, Vec<Vec<StepRecord>>), AttackError> {
    let cw = &ctx.cfg.cw;
    let x = ctx.x;
    let n = x.batch();
    let d = x.example_len();
    let loss = Loss::Margin {
        classes: ctx.targets.unwrap_or(ctx.labels).to_vec(),
        targeted: ctx.targets.is_some(),
        kappa: cw.kappa,
    };
    let w0: Vec<f32> = x
        .data()
        .iter()
        .map(|&v| (2.0 * v - 1.0).clamp(-1.0 + 1e-6, 1.0 - 1e-6).atanh())
        .collect();
    let mut c = vec![cw.initial_const; n];
    let mut lower = vec![0f32; n];
    let mut upper = vec![f32::INFINITY; n];
    let mut best = x.clone();
    let mut best_l2 = vec![f32::INFINITY; n];
    let mut history: Vec<Vec<StepRecord>> = vec![Vec::new(); n];
    let (b1, b2, adam_eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut global = 0usize;
    for _round in 0..cw.search_steps {
        let mut w = w0.clone();
        let mut m = vec![0f32; w.len()];
        let mut v = vec![0f32; w.len()];
        let mut found = vec![false; n];
        for t in 1..=cw.steps {
            ctx.cancel.check()?;
            let xa_data: Vec<f32> = w.iter().map(|&wi| 0.5 * (wi.tanh() + 1.0)).collect();
            let x_adv = Array::new(x.shape().to_vec(), xa_data)
                .map_err(|e| AttackError::Config(e.to_string()))?;
            let g = engine.input_grad(&x_adv, &loss, ctx.opts)?;
            let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
            for i in 0..n {
                let xa = x_adv.example(i);
                let xo = x.example(i);
                let l2sq: f32 = xa.iter().zip(xo).map(|(a, b)| (a - b) * (a - b)).sum();
                let logits = g.logits.example(i);
                history[i].push(record(
                    global,
                    l2sq + c[i] * g.loss[i],
                    logits,
                    ctx.labels[i],
                    ctx.target(i),
                    xa,
                    xo,
                ));
                if ctx.succeeded(i, logits) {
                    found[i] = true;
                    if l2sq.sqrt() < best_l2[i] {
                        best_l2[i] = l2sq.sqrt();
                        best.example_mut(i).copy_from_slice(xa);
                    }
                }
                let gi = g.grad.example(i);
                for j in 0..d {
                    let k = i * d + j;
                    let th = w[k].tanh();
                    let gx = 2.0 * (xa[j] - xo[j]) + c[i] * gi[j];
                    let gw = gx * 0.5 * (1.0 - th * th);
                    m[k] = b1 * m[k] + (1.0 - b1) * gw;
                    v[k] = b2 * v[k] + (1.0 - b2) * gw * gw;
                    w[k] -= cw.learning_rate * (m[k] / bc1) / ((v[k] / bc2).sqrt() + adam_eps);
                }
            }
            global += 1;
        }
        for i in 0..n {
            if found[i] {
                upper[i] = upper[i].min(c[i]);
                c[i] = 0.5 * (lower[i] + upper[i]);
            } else {
                lower[i] = lower[i].max(c[i]);
                c[i] = if upper[i].is_finite() {
                    0.5 * (lower[i] + upper[i])
                } else {
                    c[i] * 10.0
                };
            }
        }
    }
    Ok((best, history))
}
