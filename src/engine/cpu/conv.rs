//! Convolution for the cpu engine as a candle custom op, so that its backward pass computes the
//! input gradient as a GEMM (`Wᵀ·dY`) plus col2im, and the kernel gradient only when the weights
//! are being trained. Candle's built-in conv always computes both.

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::model::graph::Pads;

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

/// Copies a contiguous CPU storage into a tensor.
pub(super) fn storage_tensor(s: &CpuStorage, l: &Layout) -> candle_core::Result<Tensor> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("advlens cpu ops take f32 tensors")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("advlens cpu ops take contiguous tensors")
    };
    Tensor::from_slice(&v[a..b], l.shape(), &Device::Cpu)
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
    /// Forward with plain candle ops (no autograd graph is recorded for these inputs).
    pub fn forward_plain(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let xp = pad_nchw(x, self.pads)?;
        xp.conv2d(w, 0, self.stride, 1, self.groups)
    }

    fn input_grad(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, wd) = x.dims4()?;
        let (o, ig, kh, kw) = w.dims4()?;
        let (_, _, oh, ow) = dy.dims4()?;
        let g = self.groups;
        let og = o / g;
        let ohw = oh * ow;
        let rows = ig * kh * kw;
        // cols_g = W_gᵀ · dY_g, one GEMM per group: [N, ig*kh*kw, oh*ow].
        let mut cols = Vec::with_capacity(g);
        for gi in 0..g {
            let wg = w
                .narrow(0, gi * og, og)?
                .reshape((og, rows))?
                .t()?
                .contiguous()?;
            let dyg = dy
                .narrow(1, gi * og, og)?
                .contiguous()?
                .reshape((n, og, ohw))?;
            let cg = wg.broadcast_matmul(&dyg)?;
            cols.push(cg.flatten_all()?.to_vec1::<f32>()?);
        }
        let [pt, _, pl, _] = self.pads;
        let s = self.stride;
        let mut dx = vec![0f32; n * c * h * wd];
        dx.par_chunks_mut(h * wd)
            .enumerate()
            .for_each(|(nc, plane)| {
                let (ni, ci) = (nc / c, nc % c);
                let (gi, cl) = (ci / ig, ci % ig);
                let base = ni * rows * ohw;
                for ki in 0..kh {
                    for kj in 0..kw {
                        let row = &cols[gi][base + ((cl * kh + ki) * kw + kj) * ohw..][..ohw];
                        for oy in 0..oh {
                            let y = (oy * s + ki) as isize - pt as isize;
                            if y < 0 || y >= h as isize {
                                continue;
                            }
                            let dst = &mut plane[y as usize * wd..][..wd];
                            let src = &row[oy * ow..][..ow];
                            for (ox, &v) in src.iter().enumerate() {
                                let xx = (ox * s + kj) as isize - pl as isize;
                                if xx >= 0 && (xx as usize) < wd {
                                    dst[xx as usize] += v;
                                }
                            }
                        }
                    }
                }
            });
        Tensor::from_vec(dx, (n, c, h, wd), &Device::Cpu)
    }

    fn kernel_grad(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
        let (o, ig, kh, kw) = w.dims4()?;
        let og = o / self.groups;
        let xp = pad_nchw(x, self.pads)?;
        let mut parts = Vec::with_capacity(self.groups);
        for gi in 0..self.groups {
            let xg = xp.narrow(1, gi * ig, ig)?.contiguous()?;
            let dyg = dy.narrow(1, gi * og, og)?.contiguous()?;
            // dW[o, i, a, b] = Σ_n,y,x dY[n, o, y, x] · Xpad[n, i, y·s + a, x·s + b]: a conv of
            // Xpad (batch as channels) with dY as the kernel, dilated by the stride.
            let gw = xg
                .transpose(0, 1)?
                .contiguous()?
                .conv2d(&dyg.transpose(0, 1)?.contiguous()?, 0, 1, self.stride, 1)?
                .transpose(0, 1)?;
            parts.push(gw.narrow(2, 0, kh)?.narrow(3, 0, kw)?);
        }
        Tensor::cat(&parts, 0)
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
        let x = storage_tensor(s1, l1)?;
        let w = storage_tensor(s2, l2)?;
        let y = self.forward_plain(&x, &w)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = self.input_grad(x, w, &dy)?;
        let dw = if self.kernel_grad {
            Some(self.kernel_grad(x, w, &dy)?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}
