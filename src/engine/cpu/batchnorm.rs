//! Batch norm on batch statistics (training) as one candle custom op with a hand-written
//! backward, instead of a dozen broadcast and reduction ops whose strided reductions dominated a
//! training step.
//!
//! Forward, per channel `c` over the `M = N·H·W` values: `μ = mean x`, `σ² = mean (x − μ)²`,
//! `x̂ = (x − μ)/√(σ² + ε)`, `y = γ·x̂ + β`. Backward: `dβ = Σ dy`, `dγ = Σ dy·x̂`,
//! `dx = γ/√(σ² + ε) · (dy − dβ/M − x̂·dγ/M)`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::f32_slice;

/// Per-channel mean and biased variance of the last forward pass.
pub type Moments = Arc<Mutex<Option<(Vec<f32>, Vec<f32>)>>>;

/// `(x, γ, β) → y` with batch statistics; the moments it used are left in `moments`.
#[derive(Clone, Debug)]
pub struct BatchNormTrainOp {
    /// Variance epsilon.
    pub eps: f32,
    /// Where the forward pass leaves the batch mean and variance.
    pub moments: Moments,
}

fn dims4(l: &Layout) -> candle_core::Result<[usize; 4]> {
    match *l.dims() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref d => candle_core::bail!("batch norm takes NCHW tensors, got {d:?}"),
    }
}

/// Per-channel mean and biased variance of an NCHW buffer (two passes, in f64).
fn moments(x: &[f32], [n, c, h, w]: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let hw = h * w;
    let m = (n * hw).max(1) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |b| &x[(b * c + ch) * hw..(b * c + ch + 1) * hw]);
            let mean = planes()
                .map(|p| p.iter().map(|&v| v as f64).sum::<f64>())
                .sum::<f64>()
                / m;
            let var = planes()
                .map(|p| p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                .sum::<f64>()
                / m;
            (mean as f32, var as f32)
        })
        .unzip()
}

impl CustomOp3 for BatchNormTrainOp {
    fn name(&self) -> &'static str {
        "advlens-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d @ [_, c, h, w] = dims4(l1)?;
        let (x, gamma, beta) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch norm: γ and β need {c} values");
        }
        let (mean, var) = moments(x, d);
        let scale: Vec<f32> = (0..c)
            .map(|k| gamma[k] / (var[k] + self.eps).sqrt())
            .collect();
        let hw = h * w;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw.max(1))
            .zip(x.par_chunks(hw.max(1)))
            .enumerate()
            .for_each(|(i, (yp, xp))| {
                let k = i % c;
                let (m, s, b) = (mean[k], scale[k], beta[k]);
                for (o, &v) in yp.iter_mut().zip(xp) {
                    *o = (v - m) * s + b;
                }
            });
        if let Ok(mut slot) = self.moments.lock() {
            *slot = Some((mean, var));
        }
        Ok((CpuStorage::F32(y), Shape::from(l1.dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (len, c) = (x.elem_count(), gamma.elem_count());
        // The forward pass left its moments here; the backward reuses them.
        let moments = self.moments.lock().ok().and_then(|m| m.clone());
        let all = x.contiguous()?.apply_op3_no_bwd(
            &gamma.contiguous()?,
            &dy.contiguous()?,
            &BatchNormBackward {
                eps: self.eps,
                moments,
            },
        )?;
        let dx = all.narrow(0, 0, len)?.reshape(x.dims())?;
        let dgamma = all.narrow(0, len, c)?;
        let dbeta = all.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `(x, γ, dy) → [dx…, dγ…, dβ…]` (one flat tensor), with the forward pass's moments when it
/// left them (recomputed otherwise).
struct BatchNormBackward {
    eps: f32,
    moments: Option<(Vec<f32>, Vec<f32>)>,
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "advlens-batch-norm-train-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d @ [n, c, h, w] = dims4(l1)?;
        let (x, gamma, dy) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        if dy.len() != x.len() || gamma.len() != c {
            candle_core::bail!("batch norm backward: mismatched shapes");
        }
        let hw = h * w;
        let (mean, var) = match &self.moments {
            Some((m, v)) if m.len() == c && v.len() == c => (m.clone(), v.clone()),
            _ => moments(x, d),
        };
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..c)
            .into_par_iter()
            .map(|k| {
                let (mut dg, mut db) = (0f64, 0f64);
                for b in 0..n {
                    let r = (b * c + k) * hw..(b * c + k + 1) * hw;
                    for (&g, &v) in dy[r.clone()].iter().zip(&x[r]) {
                        db += g as f64;
                        dg += g as f64 * ((v - mean[k]) * inv[k]) as f64;
                    }
                }
                (dg as f32, db as f32)
            })
            .unzip();
        let m = (n * hw).max(1) as f32;
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, rest) = out.split_at_mut(x.len());
        dx.par_chunks_mut(hw.max(1))
            .zip(x.par_chunks(hw.max(1)).zip(dy.par_chunks(hw.max(1))))
            .enumerate()
            .for_each(|(i, (o, (xp, gp)))| {
                let k = i % c;
                let (mu, iv, s) = (mean[k], inv[k], gamma[k] * inv[k]);
                let (db, dg) = (dbeta[k] / m, dgamma[k] / m);
                for ((o, &v), &g) in o.iter_mut().zip(xp).zip(gp) {
                    *o = s * (g - db - (v - mu) * iv * dg);
                }
            });
        rest[..c].copy_from_slice(&dgamma);
        rest[c..].copy_from_slice(&dbeta);
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}
