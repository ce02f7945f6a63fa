//! ReLU for the candle (autograd) path with PyTorch's derivative convention: the gradient is
//! zero where the output is zero. Candle's own `relu` passes the gradient where the input is
//! exactly 0 (`x ≥ 0`), which is harmless for random weights but not for a fresh network: a
//! residual block whose last batch norm starts at γ = β = 0 adds an exact zero to a post-ReLU
//! input, so about half of `relu(0 + x)` sits exactly at the kink and its first training steps
//! got the gradient of a unit that is off (the planned executor and PyTorch give it none).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::f32_slice;

/// `max(x, 0)` with `∂/∂x = [x > 0]`.
#[derive(Clone, Copy, Debug)]
pub struct ReluOp;

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "advlens-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let y: Vec<f32> = x
            .par_iter()
            .map(|&v| if v > 0.0 { v } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let mask = y.gt(0f64)?.to_dtype(dy.dtype())?;
        Ok(Some(dy.mul(&mask)?))
    }
}

/// ReLU with a zero gradient at 0: [`ReluOp`] on f32 CPU tensors, a mask product elsewhere.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(ReluOp)
    } else {
        let mask = x.gt(0f64)?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}
