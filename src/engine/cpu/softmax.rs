//! Softmax over the last dimension as one fused pass per row, with its backward
//! `dx = y ⊙ (dy − Σ dy⊙y)`. Candle's composed softmax makes five passes over the (large)
//! non-local attention matrix and its fused one has no backward.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::{f32_slice, on_cpu};
use super::exp_approx::exp_approx;

/// Replaces `row` by `softmax(scale · row)` (`scale > 0`), with the vectorisable exp.
pub fn softmax_in_place(row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for v in row.iter_mut() {
        *v = exp_approx((*v - max) * scale);
    }
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Softmax over the last dimension.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxLastDim;

fn rows(t: &Tensor) -> candle_core::Result<(Vec<f32>, usize)> {
    let n = t.dims().last().copied().unwrap_or(1).max(1);
    Ok((t.flatten_all()?.to_vec1::<f32>()?, n))
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "advlens-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut v = f32_slice(s, l)?.to_vec();
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        v.par_chunks_mut(n)
            .for_each(|row| softmax_in_place(row, 1.0));
        Ok((CpuStorage::F32(v), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (y, n) = rows(res)?;
        let (mut g, _) = rows(dy)?;
        g.par_chunks_mut(n)
            .zip(y.par_chunks(n))
            .for_each(|(gr, yr)| {
                let dot: f32 = gr.iter().zip(yr).map(|(a, b)| a * b).sum();
                for (gv, &yv) in gr.iter_mut().zip(yr) {
                    *gv = yv * (*gv - dot);
                }
            });
        Ok(Some(Tensor::from_vec(g, res.shape(), &Device::Cpu)?))
    }
}

/// Softmax over the last dimension, differentiable; runs on the CPU (moving the tensor there and
/// back on other candle devices).
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    on_cpu(x, |t| t.apply_op1(SoftmaxLastDim))
}
