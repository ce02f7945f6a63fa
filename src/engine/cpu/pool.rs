//! Pooling and the median filter for the cpu engine as candle custom ops with host loops, so they
//! support padding, any stride, and exact gradients (candle's own pooling backward needs
//! kernel == stride).

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::f32_slice;
use crate::model::Pads;

/// Which reduction a window computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum over the cells inside the map (padding never wins).
    Max,
    /// Mean over the cells inside the map (padding excluded from the count).
    Avg,
    /// Lower median over the cells inside the map.
    Median,
}

/// A windowed reduction over each channel.
#[derive(Clone, Debug)]
pub struct PoolOp {
    /// Reduction.
    pub kind: PoolKind,
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: usize,
    /// Padding `[top, bottom, left, right]`.
    pub pads: Pads,
}

/// Input and output sizes of a pooling window.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl PoolOp {
    /// The pooling of a graph `MaxPool`/`AvgPool` node for an `h`×`w` input; `None` for other ops.
    pub fn from_op(op: &crate::model::Op, h: usize, w: usize) -> Option<Self> {
        use crate::model::Op;
        let (kind, kernel, stride, padding) = match op {
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => (PoolKind::Max, kernel, stride, padding),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => (PoolKind::Avg, kernel, stride, padding),
            _ => return None,
        };
        Some(Self {
            kind,
            kernel: *kernel,
            stride: *stride,
            pads: padding.resolve(h, w, *kernel, *stride),
        })
    }

    /// The geometry for an `h`×`w` input.
    pub fn geometry(&self, h: usize, w: usize) -> candle_core::Result<Geometry> {
        let [t, b, l, r] = self.pads;
        let (hp, wp) = (h + t + b, w + l + r);
        if hp < self.kernel[0] || wp < self.kernel[1] || self.stride == 0 {
            candle_core::bail!("pooling window larger than the padded input")
        }
        Ok(Geometry {
            h,
            w,
            oh: (hp - self.kernel[0]) / self.stride + 1,
            ow: (wp - self.kernel[1]) / self.stride + 1,
        })
    }

    /// The in-map cells of output position (oy, ox), as flat indices into the plane.
    fn window(&self, g: &Geometry, oy: usize, ox: usize, cells: &mut Vec<usize>) {
        cells.clear();
        let [t, _, l, _] = self.pads;
        for a in 0..self.kernel[0] {
            let y = (oy * self.stride + a) as isize - t as isize;
            if y < 0 || y >= g.h as isize {
                continue;
            }
            for b in 0..self.kernel[1] {
                let x = (ox * self.stride + b) as isize - l as isize;
                if x >= 0 && (x as usize) < g.w {
                    cells.push(y as usize * g.w + x as usize);
                }
            }
        }
    }

    /// For max and median: the index of the selected cell.
    fn select(&self, plane: &[f32], cells: &mut [usize]) -> usize {
        match self.kind {
            PoolKind::Max => {
                let mut best = cells[0];
                for &c in cells.iter() {
                    if plane[c] > plane[best] {
                        best = c;
                    }
                }
                best
            }
            _ => {
                cells.sort_by(|&a, &b| plane[a].total_cmp(&plane[b]).then(a.cmp(&b)));
                cells[(cells.len() - 1) / 2]
            }
        }
    }

    fn run_forward(&self, x: &[f32], nc: usize, g: &Geometry) -> Vec<f32> {
        let mut out = vec![0f32; nc * g.oh * g.ow];
        self.forward_into(x, g, &mut out);
        out
    }

    /// Pools `x` (`nc` planes of `h×w`) into `out` (`nc` planes of `oh×ow`), overwriting it.
    pub fn forward_into(&self, x: &[f32], g: &Geometry, out: &mut [f32]) {
        out.par_chunks_mut(g.oh * g.ow)
            .enumerate()
            .for_each(|(p, o)| {
                let plane = &x[p * g.h * g.w..][..g.h * g.w];
                let mut cells = Vec::with_capacity(self.kernel[0] * self.kernel[1]);
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        self.window(g, oy, ox, &mut cells);
                        o[oy * g.ow + ox] = if cells.is_empty() {
                            0.0
                        } else if self.kind == PoolKind::Avg {
                            cells.iter().map(|&c| plane[c]).sum::<f32>() / cells.len() as f32
                        } else {
                            plane[self.select(plane, &mut cells)]
                        };
                    }
                }
            });
    }

    fn run_backward(&self, x: &[f32], dy: &[f32], nc: usize, g: &Geometry) -> Vec<f32> {
        let mut dx = vec![0f32; nc * g.h * g.w];
        self.backward_add(x, dy, g, &mut dx);
        dx
    }

    /// Adds the gradient of the pooling with respect to `x` for output gradient `dy` into `dx`.
    pub fn backward_add(&self, x: &[f32], dy: &[f32], g: &Geometry, dx: &mut [f32]) {
        dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(p, d)| {
            let plane = &x[p * g.h * g.w..][..g.h * g.w];
            let grad = &dy[p * g.oh * g.ow..][..g.oh * g.ow];
            let mut cells = Vec::with_capacity(self.kernel[0] * self.kernel[1]);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    self.window(g, oy, ox, &mut cells);
                    if cells.is_empty() {
                        continue;
                    }
                    let gv = grad[oy * g.ow + ox];
                    if self.kind == PoolKind::Avg {
                        let share = gv / cells.len() as f32;
                        for &c in &cells {
                            d[c] += share;
                        }
                    } else {
                        d[self.select(plane, &mut cells)] += gv;
                    }
                }
            }
        });
    }
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "advlens-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let g = self.geometry(h, w)?;
        let out = self.run_forward(f32_slice(s, l)?, n * c, &g);
        Ok((CpuStorage::F32(out), Shape::from((n, c, g.oh, g.ow))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = x.dims4()?;
        let g = self.geometry(h, w)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let dys = dy.flatten_all()?.to_vec1::<f32>()?;
        let dx = self.run_backward(&xs, &dys, n * c, &g);
        Ok(Some(Tensor::from_vec(dx, (n, c, h, w), &Device::Cpu)?))
    }
}
