//! Convolution for the cpu engine as a candle custom op over the kernels of [`conv_kernel`]: its
//! backward pass computes the input gradient as a GEMM (`Wᵀ·dY`) plus col2im, and the kernel
//! gradient only when the weights are being trained. Candle's built-in conv always computes both,
//! the input gradient without a GEMM.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::conv_kernel::{self, ConvGeom};
use super::custom_op::f32_slice;

use crate::model::Pads;

/// A 2-D convolution with asymmetric padding and groups.
#[derive(Clone, Debug)]
pub struct Conv2dOp {
    /// Stride on both axes.
    pub stride: usize,
    /// `[top, bottom, left, right]` zero padding.
    pub pads: Pads,
    /// Channel groups.
    pub groups: usize,
    /// Whether the backward pass also computes the kernel gradient (training).
    pub kernel_grad: bool,
}

/// Zero-pads an NCHW tensor by `[top, bottom, left, right]`.
pub fn pad_nchw(x: &Tensor, pads: Pads) -> candle_core::Result<Tensor> {
    let [t, b, l, r] = pads;
    let x = if t + b > 0 {
        x.pad_with_zeros(2, t, b)?
    } else {
        x.clone()
    };
    if l + r > 0 {
        x.pad_with_zeros(3, l, r)
    } else {
        Ok(x)
    }
}

impl Conv2dOp {
    /// Forward with plain candle ops (candle's own convolution; used on non-CPU devices and as
    /// the reference in benchmarks and tests).
    pub fn forward_plain(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let xp = pad_nchw(x, self.pads)?;
        xp.conv2d(w, 0, self.stride, 1, self.groups)
    }

    fn geom(&self, x: &[usize], w: &[usize]) -> candle_core::Result<ConvGeom> {
        let (&[n, c, h, wd], &[o, ig, kh, kw]) = (x, w) else {
            candle_core::bail!("conv: expected 4-d input and kernel, got {x:?} and {w:?}")
        };
        ConvGeom::new(
            [n, c, h, wd],
            [o, ig, kh, kw],
            self.stride,
            self.pads,
            self.groups,
        )
        .map_err(candle_core::Error::Msg)
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "advlens-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(l1.dims(), l2.dims())?;
        let mut y = vec![0f32; g.out_dims().iter().product()];
        conv_kernel::forward(&g, f32_slice(s1, l1)?, f32_slice(s2, l2)?, &mut y);
        Ok((CpuStorage::F32(y), Shape::from(g.out_dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let g = self.geom(x.dims(), w.dims())?;
        let dx = dy.apply_op2_no_bwd(&w.contiguous()?, &InputGradOp(g))?;
        let dw = if self.kernel_grad {
            Some(x.contiguous()?.apply_op2_no_bwd(&dy, &KernelGradOp(g))?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

/// `(dY, W) → dX` for a fixed geometry.
struct InputGradOp(ConvGeom);

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "advlens-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let mut dx = vec![0f32; g.n * g.c * g.hw()];
        conv_kernel::input_grad(g, f32_slice(s1, l1)?, f32_slice(s2, l2)?, &mut dx, false);
        Ok((CpuStorage::F32(dx), Shape::from((g.n, g.c, g.h, g.w))))
    }
}

/// `(X, dY) → dW` for a fixed geometry.
struct KernelGradOp(ConvGeom);

impl CustomOp2 for KernelGradOp {
    fn name(&self) -> &'static str {
        "advlens-conv2d-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let dw = conv_kernel::kernel_grad(g, f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        Ok((CpuStorage::F32(dw), Shape::from((g.o, g.ig(), g.kh, g.kw))))
    }
}
