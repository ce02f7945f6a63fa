//! DeepFool (Moosavi-Dezfooli et al. 2016), multi-class. At each iteration, for the candidate
//! classes `k ≠ k̂`: `w_k = ∇(Z_k − Z_k̂)`, `f_k = Z_k − Z_k̂`; step to the nearest linearised
//! boundary `l = argmin |f_k| / ‖w_k‖`; stop when the label flips. The output is
//! `clip01(x + (1 + η)·Σr)`. L2 by default; with the L∞ norm the step is `|f_l|/‖w_l‖₁·sign(w_l)`.

use super::project::{l1, l2, sign};
use super::{AttackError, Context, Norm, StepRecord, record};
use crate::array::{Array, top_k};
use crate::engine::{Engine, Loss};

/// The nearest linearised boundary found so far for one example.
#[derive(Clone)]
struct Closest {
    /// `|f| / ‖w‖`, the distance to the boundary.
    ratio: f32,
    /// Gradient of the logit difference.
    w: Vec<f32>,
    /// `|f|`, the logit difference.
    f: f32,
    /// `‖w‖` in the dual norm.
    norm: f32,
}

/// Runs DeepFool.
pub fn run(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
) -> Result<(Array, Vec<Vec<StepRecord>>), AttackError> {
    let df = &ctx.cfg.deepfool;
    let x = ctx.x;
    let n = x.batch();
    let d = x.example_len();
    let clean = engine.forward(x, ctx.opts)?;
    let k_total = clean.logits.example_len();
    // The original class and the candidates come from the clean logits.
    let orig: Vec<usize> = (0..n)
        .map(|i| top_k(clean.logits.example(i), 1)[0].0)
        .collect();
    let cands: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            top_k(clean.logits.example(i), df.candidates.min(k_total))
                .into_iter()
                .map(|(k, _)| k)
                .filter(|&k| k != orig[i])
                .collect()
        })
        .collect();
    let mut r_tot = vec![0f32; n * d];
    let mut active: Vec<usize> = (0..n).collect();
    let mut history: Vec<Vec<StepRecord>> = vec![Vec::new(); n];
    let current = |r_tot: &[f32], i: usize| -> Vec<f32> {
        x.example(i)
            .iter()
            .zip(&r_tot[i * d..(i + 1) * d])
            .map(|(&xv, &r)| (xv + (1.0 + df.overshoot) * r).clamp(0.0, 1.0))
            .collect()
    };
    for it in 0..=df.max_iter {
        ctx.cancel.check()?;
        if active.is_empty() {
            break;
        }
        let mut xa = Vec::with_capacity(active.len() * d);
        for &i in &active {
            xa.extend(current(&r_tot, i));
        }
        let mut shape = x.shape().to_vec();
        shape[0] = active.len();
        let xa = Array::new(shape, xa).map_err(|e| AttackError::Config(e.to_string()))?;
        let fwd = engine.forward(&xa, ctx.opts)?;
        let mut still = Vec::new();
        for (a, &i) in active.iter().enumerate() {
            let z = fwd.logits.example(a);
            history[i].push(record(
                it,
                z[orig[i]] - z[cands[i].first().copied().unwrap_or(orig[i])],
                z,
                ctx.labels[i],
                None,
                xa.example(a),
                x.example(i),
            ));
            let pred = crate::array::argmax(z).unwrap_or(0);
            if pred == orig[i] && it < df.max_iter {
                still.push(a);
            }
        }
        if still.is_empty() {
            break;
        }
        let xs = xa.select(&still);
        let ids: Vec<usize> = still.iter().map(|&a| active[a]).collect();
        let mut best: Vec<Option<Closest>> = vec![None; ids.len()];
        let rounds = ids.iter().map(|&i| cands[i].len()).max().unwrap_or(0);
        for r in 0..rounds {
            let mut weights = vec![0f32; ids.len() * k_total];
            for (b, &i) in ids.iter().enumerate() {
                if let Some(&k) = cands[i].get(r) {
                    weights[b * k_total + k] = 1.0;
                    weights[b * k_total + orig[i]] = -1.0;
                }
            }
            let g = engine.input_grad(&xs, &Loss::LogitWeights { weights }, ctx.opts)?;
            for (b, &i) in ids.iter().enumerate() {
                if r >= cands[i].len() {
                    continue;
                }
                let f = g.loss[b].abs();
                let wk = g.grad.example(b);
                let nrm = match ctx.cfg.norm {
                    Norm::L2 => l2(wk),
                    Norm::Linf => l1(wk),
                };
                if nrm <= 0.0 {
                    continue;
                }
                let ratio = f / nrm;
                if best[b].as_ref().is_none_or(|c| ratio < c.ratio) {
                    best[b] = Some(Closest {
                        ratio,
                        w: wk.to_vec(),
                        f,
                        norm: nrm,
                    });
                }
            }
        }
        for (b, &i) in ids.iter().enumerate() {
            let Some(c) = &best[b] else {
                continue;
            };
            let r = &mut r_tot[i * d..(i + 1) * d];
            for (rv, &wv) in r.iter_mut().zip(&c.w) {
                *rv += match ctx.cfg.norm {
                    Norm::L2 => (c.f + 1e-4) / (c.norm * c.norm) * wv,
                    Norm::Linf => (c.f + 1e-4) / c.norm * sign(wv),
                };
            }
        }
        active = ids;
    }
    let mut out = x.clone();
    for i in 0..n {
        let c = current(&r_tot, i);
        out.example_mut(i).copy_from_slice(&c);
    }
    Ok((out, history))
}
