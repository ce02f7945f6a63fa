//! Convolution kernels on NCHW slices: forward as im2col + GEMM, input gradient as GEMM
//! (`Wᵀ·dY`) + col2im, or for stride 1 as the forward of the transposed convolution, kernel
//! gradient as GEMM (`dY·colᵀ`) summed over the batch. Work is split over (image, group) with
//! rayon, each task's im2col formed in tiles of output rows that stay in cache; when there are
//! fewer tasks than threads, the tiles (or blocks of input channels) become the rayon tasks. The
//! im2col/col2im workspace and the flipped kernel are per-thread buffers reused across calls, so
//! the hot loop allocates nothing beyond the op's output.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::{MatMut, MatRef, Threads, gemm};
use super::workspace::{with_buffer, with_workspace};
use crate::model::Pads;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride.
    pub stride: usize,
    /// `[top, bottom, left, right]` zero padding.
    pub pads: Pads,
    /// Channel groups.
    pub groups: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeom {
    /// Checks and derives the geometry from input `[n, c, h, w]` and kernel `[o, c/groups, kh, kw]`.
    pub fn new(
        x: [usize; 4],
        k: [usize; 4],
        stride: usize,
        pads: Pads,
        groups: usize,
    ) -> Result<Self, String> {
        let [n, c, h, w] = x;
        let [o, ig, kh, kw] = k;
        if groups == 0 || stride == 0 || c != ig * groups || o % groups != 0 {
            return Err(format!(
                "conv: input {x:?}, kernel {k:?}, groups {groups}, stride {stride} do not fit"
            ));
        }
        let (hp, wp) = (h + pads[0] + pads[1], w + pads[2] + pads[3]);
        if hp < kh || wp < kw {
            return Err(format!(
                "conv: kernel {kh}x{kw} larger than padded input {hp}x{wp}"
            ));
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pads,
            groups,
            oh: (hp - kh) / stride + 1,
            ow: (wp - kw) / stride + 1,
        })
    }

    /// Input channels per group.
    pub fn ig(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of the im2col matrix: `ig·kh·kw`.
    pub fn k(&self) -> usize {
        self.ig() * self.kh * self.kw
    }

    /// Output pixels per channel.
    pub fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// Input pixels per channel.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Output shape.
    pub fn out_dims(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }

    /// A 1×1, stride-1, unpadded conv is a plain matrix product: no im2col needed.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pads == [0; 4]
    }

    fn threads(&self) -> Threads {
        if self.n * self.groups >= rayon::current_num_threads() {
            Threads::One
        } else {
            Threads::All
        }
    }

    /// For a stride-1 convolution whose padding is smaller than its kernel, the geometry of one
    /// group's input gradient written as a forward convolution: the output gradient
    /// (`og × oh × ow`) convolved with the flipped, transposed kernel and padding `k − 1 − pad`
    /// gives the input gradient (`ig × h × w`). Lets the input gradient use the row-tiled forward,
    /// whose im2col tiles stay in cache, instead of a full-size column matrix and col2im.
    fn transposed(&self) -> Option<Self> {
        let [t, b, l, r] = self.pads;
        if self.stride != 1 || t >= self.kh || b >= self.kh || l >= self.kw || r >= self.kw {
            return None;
        }
        let pads = [
            self.kh - 1 - t,
            self.kh - 1 - b,
            self.kw - 1 - l,
            self.kw - 1 - r,
        ];
        let geom = Self::new(
            [1, self.og(), self.oh, self.ow],
            [self.ig(), self.og(), self.kh, self.kw],
            1,
            pads,
            1,
        )
        .ok()?;
        (geom.oh == self.h && geom.ow == self.w).then_some(geom)
    }

    fn in_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pads[0])
            .filter(|&y| y < self.h)
    }

    /// The range of output columns whose input column for `kx` lies inside the image:
    /// `0 ≤ ox·stride + kx − pad_left < w`, solved for `ox` (called for every channel and
    /// kernel tap, so in closed form rather than by search).
    fn valid_cols(&self, kx: usize) -> (usize, usize) {
        let (s, pl) = (self.stride, self.pads[2]);
        let lo = pl.saturating_sub(kx).div_ceil(s);
        let hi = (self.w + pl).saturating_sub(kx).div_ceil(s).min(self.ow);
        if lo < hi { (lo, hi) } else { (0, 0) }
    }
}

thread_local! {
    // The flipped kernel of a stride-1 input gradient: a buffer of its own, because the
    // convolution it feeds borrows the workspace while the kernel is in use.
    static FLIPPED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Fills `col` (`k × ohw`) with the patches of one image-group `x` (`ig × h × w`).
fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let (rows, hw) = (g.kh * g.kw * g.ohw(), g.hw());
    col.chunks_mut(rows)
        .zip(x.chunks(hw))
        .for_each(|(c, plane)| im2col_channel(g, plane, c));
}

/// The `kh·kw` im2col rows of one input channel, for all output rows.
fn im2col_channel(g: &ConvGeom, plane: &[f32], rows: &mut [f32]) {
    im2col_channel_rows(g, plane, rows, 0, g.oh);
}

/// The `kh·kw` im2col rows of one input channel restricted to output rows `oy0..oy1`; each row
/// of `rows` holds `(oy1 − oy0)·ow` values.
fn im2col_channel_rows(g: &ConvGeom, plane: &[f32], rows: &mut [f32], oy0: usize, oy1: usize) {
    let ow = g.ow;
    let len = (oy1 - oy0) * ow;
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let row = &mut rows[(ky * g.kw + kx) * len..][..len];
            let (lo, hi) = g.valid_cols(kx);
            for oy in oy0..oy1 {
                let dst = &mut row[(oy - oy0) * ow..][..ow];
                let Some(iy) = g.in_row(oy, ky) else {
                    dst.fill(0.0);
                    continue;
                };
                let src = &plane[iy * g.w..][..g.w];
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo == hi {
                    // This kernel column sees only padding (a wide kernel on a narrow map).
                    continue;
                }
                if g.stride == 1 {
                    let x0 = lo + kx - g.pads[2];
                    dst[lo..hi].copy_from_slice(&src[x0..x0 + (hi - lo)]);
                } else {
                    for (ox, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                        *d = src[ox * g.stride + kx - g.pads[2]];
                    }
                }
            }
        }
    }
}

/// The output rows `oy0..oy1` of one image-group: their im2col tile into `col`, then one
/// single-threaded GEMM into `dst` (`og` rows of `(oy1 − oy0)·ow` values), or added to it when
/// `accumulate`.
fn row_tile(
    g: &ConvGeom,
    xg: &[f32],
    wg: &[f32],
    col: &mut [f32],
    (oy0, oy1): (usize, usize),
    dst: MatMut<'_>,
    accumulate: bool,
) {
    let (k, hw, taps) = (g.k(), g.hw(), g.kh * g.kw);
    let len = (oy1 - oy0) * g.ow;
    let col = &mut col[..k * len];
    for ci in 0..g.ig() {
        let rows = &mut col[ci * taps * len..][..taps * len];
        im2col_channel_rows(g, &xg[ci * hw..][..hw], rows, oy0, oy1);
    }
    gemm(
        g.og(),
        len,
        k,
        dst,
        MatRef::new(wg, k, 1),
        MatRef::new(col, len, 1),
        accumulate,
        Threads::One,
    );
}

/// Forward of one image-group split into tiles of output rows, one rayon task per tile, each
/// with its own im2col tile and single-threaded GEMM (better than one multi-threaded GEMM when
/// there are fewer images than threads). Adds into `yc` instead of overwriting it when
/// `accumulate`.
fn forward_tiled(g: &ConvGeom, xg: &[f32], wg: &[f32], yc: &mut [f32], accumulate: bool) {
    let (og, k, ow, ohw) = (g.og(), g.k(), g.ow, g.ohw());
    let tiles = (rayon::current_num_threads() * 2).min(g.oh).max(1);
    let per = g.oh.div_ceil(tiles);
    // Each tile's rows of every output channel: disjoint slices, so the tasks write `yc` directly.
    let mut parts: Vec<Vec<&mut [f32]>> = (0..g.oh.div_ceil(per))
        .map(|_| Vec::with_capacity(og))
        .collect();
    for channel in yc.chunks_mut(ohw) {
        for (part, rows) in parts.iter_mut().zip(channel.chunks_mut(per * ow)) {
            part.push(rows);
        }
    }
    parts.into_par_iter().enumerate().for_each(|(t, mut part)| {
        let (oy0, oy1) = (t * per, ((t + 1) * per).min(g.oh));
        let len = (oy1 - oy0) * ow;
        with_workspace((k + og) * len, |buf| {
            let (col, out) = buf.split_at_mut(k * len);
            row_tile(g, xg, wg, col, (oy0, oy1), MatMut::new(out, len, 1), false);
            for (dst, src) in part.iter_mut().zip(out.chunks(len)) {
                if accumulate {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        });
    });
}

/// Values in one im2col tile of the per-image path: about 1 MiB, so a tile stays in a core's
/// L2 cache between im2col and the GEMM that reads it.
const COL_TILE: usize = 1 << 18;

/// Forward of one image-group on the calling thread, in tiles of output rows whose im2col
/// matrix fits [`COL_TILE`], each tile's GEMM written straight into its rows of `yc` (or added
/// to them when `accumulate`).
fn forward_rows(g: &ConvGeom, xg: &[f32], wg: &[f32], yc: &mut [f32], accumulate: bool) {
    let (k, ow, ohw) = (g.k(), g.ow, g.ohw());
    let per = (COL_TILE / (k * ow).max(1)).clamp(1, g.oh.max(1));
    with_workspace(k * per * ow, |col| {
        for oy0 in (0..g.oh).step_by(per) {
            let rows = (oy0, (oy0 + per).min(g.oh));
            let dst = MatMut::new(&mut yc[oy0 * ow..], ohw, 1);
            row_tile(g, xg, wg, col, rows, dst, accumulate);
        }
    });
}

/// Adds the columns `col` (`k × ohw`) back into one image-group gradient `dx` (`ig × h × w`).
fn col2im(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
    let (rows, hw) = (g.kh * g.kw * g.ohw(), g.hw());
    dx.chunks_mut(hw)
        .zip(col.chunks(rows))
        .for_each(|(plane, c)| col2im_channel(g, c, plane));
}

/// Adds the `kh·kw` column rows of one input channel into its gradient plane.
fn col2im_channel(g: &ConvGeom, rows: &[f32], plane: &mut [f32]) {
    let (ohw, ow) = (g.ohw(), g.ow);
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let row = &rows[(ky * g.kw + kx) * ohw..][..ohw];
            let (lo, hi) = g.valid_cols(kx);
            if lo == hi {
                continue;
            }
            for oy in 0..g.oh {
                let Some(iy) = g.in_row(oy, ky) else {
                    continue;
                };
                let src = &row[oy * ow..][..ow];
                let dst = &mut plane[iy * g.w..][..g.w];
                if g.stride == 1 {
                    let x0 = lo + kx - g.pads[2];
                    for (d, s) in dst[x0..x0 + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                        *d += s;
                    }
                } else {
                    for (ox, s) in src.iter().enumerate().take(hi).skip(lo) {
                        dst[ox * g.stride + kx - g.pads[2]] += s;
                    }
                }
            }
        }
    }
}

/// `y = conv(x, w)`; `y` has `n·o·oh·ow` values and is overwritten.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (ig, og, k, ohw, hw) = (g.ig(), g.og(), g.k(), g.ohw(), g.hw());
    let threads = g.threads();
    y.par_chunks_mut(og * ohw).enumerate().for_each(|(t, yc)| {
        let (b, gi) = (t / g.groups, t % g.groups);
        let xg = &x[(b * g.c + gi * ig) * hw..][..ig * hw];
        let wg = MatRef::new(&w[gi * og * k..][..og * k], k, 1);
        let dst = MatMut::new(yc, ohw, 1);
        if g.pointwise() {
            let rhs = MatRef::new(xg, hw, 1);
            gemm(og, ohw, ig, dst, wg, rhs, false, threads);
        } else if threads == Threads::All {
            forward_tiled(g, xg, wg.data, dst.data, false);
        } else {
            forward_rows(g, xg, wg.data, dst.data, false);
        }
    });
}

/// `dx = ∂⟨dy, conv(x, w)⟩/∂x`; `dx` has `n·c·h·w` values and is overwritten, or added to when
/// `accumulate`.
pub fn input_grad(g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32], accumulate: bool) {
    // Stride 1: the input gradient is a forward convolution of dy (see `ConvGeom::transposed`),
    // with the flipped kernel in a buffer reused across calls.
    match g.transposed().filter(|_| !g.pointwise()) {
        Some(tg) => with_buffer(&FLIPPED, w.len(), |wf| {
            flip_transpose(g, w, wf);
            input_grad_with(g, dy, w, dx, accumulate, Some((&tg, wf)));
        }),
        None => input_grad_with(g, dy, w, dx, accumulate, None),
    }
}

/// [`input_grad`], given the transposed geometry and flipped kernel when it runs as a forward
/// convolution.
fn input_grad_with(
    g: &ConvGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    transposed: Option<(&ConvGeom, &[f32])>,
) {
    let (ig, og, k, ohw, hw) = (g.ig(), g.og(), g.k(), g.ohw(), g.hw());
    let threads = g.threads();
    dx.par_chunks_mut(ig * hw).enumerate().for_each(|(t, dxc)| {
        let (b, gi) = (t / g.groups, t % g.groups);
        let dyg = MatRef::new(&dy[(b * g.o + gi * og) * ohw..][..og * ohw], ohw, 1);
        // W_gᵀ as a strided view: element (r, o) = w[(gi·og + o)·k + r].
        let wt = MatRef::new(&w[gi * og * k..][..og * k], 1, k);
        let wg = &w[gi * og * k..][..og * k];
        if g.pointwise() {
            let dst = MatMut::new(dxc, hw, 1);
            gemm(ig, ohw, og, dst, wt, dyg, accumulate, threads);
        } else if let Some((tg, wf)) = transposed {
            let wf = &wf[gi * og * k..][..og * k];
            if threads == Threads::All {
                forward_tiled(tg, dyg.data, wf, dxc, accumulate);
            } else {
                forward_rows(tg, dyg.data, wf, dxc, accumulate);
            }
        } else if threads == Threads::All {
            input_grad_blocked(g, dyg, wg, dxc, accumulate);
        } else {
            with_workspace(k * ohw, |col| {
                let dst = MatMut::new(col, ohw, 1);
                gemm(k, ohw, og, dst, wt, dyg, false, threads);
                if !accumulate {
                    dxc.fill(0.0);
                }
                col2im(g, col, dxc);
            });
        }
    });
}

/// Writes each group's kernel `[og, ig, kh, kw]` into `out` as the kernel of its transposed
/// convolution: `[ig, og, kh, kw]` with both spatial axes reversed, groups one after the other.
fn flip_transpose(g: &ConvGeom, w: &[f32], out: &mut [f32]) {
    let (ig, og, taps) = (g.ig(), g.og(), g.kh * g.kw);
    for (wg, fg) in w.chunks(og * ig * taps).zip(out.chunks_mut(og * ig * taps)) {
        for o in 0..og {
            for c in 0..ig {
                let src = &wg[(o * ig + c) * taps..][..taps];
                let dst = &mut fg[(c * og + o) * taps..][..taps];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
}

/// Input gradient of one image-group split into blocks of input channels, one rayon task per
/// block, each with its own single-threaded GEMM and col2im into its own (disjoint) planes.
fn input_grad_blocked(
    g: &ConvGeom,
    dyg: MatRef<'_>,
    wg: &[f32],
    dxc: &mut [f32],
    accumulate: bool,
) {
    let (ig, og, k, ohw, hw) = (g.ig(), g.og(), g.k(), g.ohw(), g.hw());
    let taps = g.kh * g.kw;
    let blocks = (rayon::current_num_threads() * 2).min(ig).max(1);
    let per = ig.div_ceil(blocks);
    dxc.par_chunks_mut(per * hw)
        .enumerate()
        .for_each(|(bi, dxb)| {
            let (c0, cb) = (bi * per, dxb.len() / hw);
            let rows = cb * taps;
            // Rows c0·taps .. of W_gᵀ: element (r, o) = wg[o·k + c0·taps + r].
            let wt = MatRef::new(&wg[c0 * taps..], 1, k);
            with_workspace(rows * ohw, |col| {
                gemm(
                    rows,
                    ohw,
                    og,
                    MatMut::new(col, ohw, 1),
                    wt,
                    dyg,
                    false,
                    Threads::One,
                );
                if !accumulate {
                    dxb.fill(0.0);
                }
                col2im(g, col, dxb);
            });
        });
}

/// `dw = ∂⟨dy, conv(x, w)⟩/∂w`, summed over the batch; returns `o·ig·kh·kw` values.
pub fn kernel_grad(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (ig, og, k, ohw, hw) = (g.ig(), g.og(), g.k(), g.ohw(), g.hw());
    let len = g.o * k;
    (0..g.n)
        .into_par_iter()
        .fold(
            || vec![0f32; len],
            |mut acc, b| {
                for gi in 0..g.groups {
                    let xg = &x[(b * g.c + gi * ig) * hw..][..ig * hw];
                    let dyg = MatRef::new(&dy[(b * g.o + gi * og) * ohw..][..og * ohw], ohw, 1);
                    let dst = MatMut::new(&mut acc[gi * og * k..][..og * k], k, 1);
                    if g.pointwise() {
                        let rhs = MatRef::new(xg, 1, hw);
                        gemm(og, k, ohw, dst, dyg, rhs, true, Threads::One);
                    } else {
                        with_workspace(k * ohw, |col| {
                            im2col(g, xg, col);
                            // colᵀ as a strided view: element (p, r) = col[r·ohw + p].
                            let rhs = MatRef::new(col, 1, ohw);
                            gemm(og, k, ohw, dst, dyg, rhs, true, Threads::One);
                        });
                    }
                }
                acc
            },
        )
        .reduce(
            || vec![0f32; len],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                a
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_cols_match_their_definition() {
        for (w, k, stride, pl, pr) in [
            (8, 3, 1, 1, 1),
            (8, 3, 2, 0, 1),
            (7, 7, 2, 3, 3),
            (2, 5, 1, 2, 2),
            (1, 5, 1, 2, 2),
            (2, 7, 2, 3, 2),
            (9, 1, 2, 0, 0),
            (5, 4, 3, 1, 2),
        ] {
            let g = ConvGeom::new([1, 1, 3, w], [1, 1, 1, k], stride, [0, 0, pl, pr], 1).unwrap();
            for kx in 0..k {
                // Output columns whose input column lies inside the image.
                let inside: Vec<usize> = (0..g.ow)
                    .filter(|&ox| (ox * stride + kx).checked_sub(pl).is_some_and(|x| x < w))
                    .collect();
                let want = match (inside.first(), inside.last()) {
                    (Some(&a), Some(&b)) => (a, b + 1),
                    _ => (0, 0),
                };
                // The inside columns are one run.
                assert_eq!(inside.len(), want.1 - want.0);
                assert_eq!(g.valid_cols(kx), want, "w {w} k {k} s {stride} kx {kx}");
            }
        }
    }
}
