//! Native kernels for the softmax non-local blocks (Gaussian, with or without θ/φ embedding),
//! forward and backward-data, per image on GEMMs. Per image, with `x` as `[C, P]`:
//! `θ = Wθ·x`, `φ = Wφ·x` (`[d, P]`, or `x` itself without embedding), `S = θᵀφ/√d`,
//! `A = softmax_rows(S)`, `y = x·Aᵀ`. The forward keeps `A`, `θ` and `φ` for the backward.

use rayon::prelude::*;

use super::conv_kernel::with_workspace;
use super::gemm::{MatMut, MatRef, Threads, gemm};
use super::softmax::softmax_in_place;

/// `eˣ` for `x ≤ 0` (softmax arguments after subtracting the row maximum), branch-free so that
/// loops over it vectorise: range reduction `x = n·ln2 + r` and a degree-6 polynomial for `eʳ`
/// (relative error below 2e-7 on [-87, 0]; 0 below that).
#[inline]
pub fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer with plain adds (no libm call), and leaves
    // that integer in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.666_666_5e-1
                    + r * (4.166_579_6e-2 + r * (8.333_452e-3 + r * 1.393_998_3e-3)))));
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// Shapes and embeddings of one non-local block.
#[derive(Clone, Copy, Debug)]
pub struct NonLocal<'a> {
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Positions `H·W`.
    pub p: usize,
    /// `[d, C]` θ and φ embeddings, or `None` for the un-embedded variant (`d = C`).
    pub embed: Option<(&'a [f32], &'a [f32])>,
}

impl NonLocal<'_> {
    /// Embedding width `d`.
    pub fn d(&self) -> usize {
        match self.embed {
            Some((t, _)) => t.len() / self.c,
            None => self.c,
        }
    }

    /// Values kept per image between forward and backward: `A` and, when embedded, `θ`, `φ`.
    pub fn saved_len(&self) -> usize {
        self.p * self.p
            + if self.embed.is_some() {
                2 * self.d() * self.p
            } else {
                0
            }
    }

    fn threads(&self) -> Threads {
        if self.n >= rayon::current_num_threads() {
            Threads::One
        } else {
            Threads::All
        }
    }

    /// `y = NL(x)`; `saved` (`n · saved_len()`) receives what the backward needs.
    pub fn forward(&self, x: &[f32], y: &mut [f32], saved: &mut [f32]) {
        let (c, p, d) = (self.c, self.p, self.d());
        let scale = 1.0 / (d as f32).sqrt();
        let th = self.threads();
        y.par_chunks_mut(c * p)
            .zip(saved.par_chunks_mut(self.saved_len()))
            .enumerate()
            .for_each(|(b, (yb, sb))| {
                let xb = &x[b * c * p..][..c * p];
                let (a, emb) = sb.split_at_mut(p * p);
                let (theta, phi): (&[f32], &[f32]) = match self.embed {
                    Some((wt, wp)) => {
                        let (te, pe) = emb.split_at_mut(d * p);
                        for (w, out) in [(wt, &mut *te), (wp, &mut *pe)] {
                            let dst = MatMut::new(out, p, 1);
                            let lhs = MatRef::new(w, c, 1);
                            let rhs = MatRef::new(xb, p, 1);
                            gemm(d, p, c, dst, lhs, rhs, false, th);
                        }
                        (te, pe)
                    }
                    None => (xb, xb),
                };
                // S = θᵀ φ.
                let dst = MatMut::new(&mut *a, p, 1);
                let lhs = MatRef::new(theta, 1, p);
                let rhs = MatRef::new(phi, p, 1);
                gemm(p, p, d, dst, lhs, rhs, false, th);
                for row in a.chunks_mut(p) {
                    softmax_in_place(row, scale);
                }
                // y = x Aᵀ.
                let dst = MatMut::new(yb, p, 1);
                let lhs = MatRef::new(xb, p, 1);
                let rhs = MatRef::new(a, 1, p);
                gemm(c, p, p, dst, lhs, rhs, false, th);
            });
    }

    /// Adds `∂⟨dy, NL(x)⟩/∂x` into `dx`, using what [`NonLocal::forward`] saved.
    pub fn backward_add(&self, x: &[f32], dy: &[f32], saved: &[f32], dx: &mut [f32]) {
        let (c, p, d) = (self.c, self.p, self.d());
        let scale = 1.0 / (d as f32).sqrt();
        let th = self.threads();
        dx.par_chunks_mut(c * p)
            .zip(saved.par_chunks(self.saved_len()))
            .enumerate()
            .for_each(|(b, (dxb, sb))| {
                let xb = &x[b * c * p..][..c * p];
                let dyb = &dy[b * c * p..][..c * p];
                let (a, emb) = sb.split_at(p * p);
                let (theta, phi): (&[f32], &[f32]) = match self.embed {
                    Some(_) => emb.split_at(d * p),
                    None => (xb, xb),
                };
                with_workspace(p * p + 2 * d * p, |ws| {
                    let (ds, rest) = ws.split_at_mut(p * p);
                    let (dtheta, dphi) = rest.split_at_mut(d * p);
                    // Through y = x Aᵀ: dx += dy A, dA = dyᵀ x.
                    let dst = MatMut::new(&mut *dxb, p, 1);
                    let lhs = MatRef::new(dyb, p, 1);
                    let rhs = MatRef::new(a, p, 1);
                    gemm(c, p, p, dst, lhs, rhs, true, th);
                    let dst = MatMut::new(&mut *ds, p, 1);
                    let lhs = MatRef::new(dyb, 1, p);
                    let rhs = MatRef::new(xb, p, 1);
                    gemm(p, p, c, dst, lhs, rhs, false, th);
                    // Through the softmax and the 1/√d scale: dS = scale · A ⊙ (dA − Σ dA⊙A).
                    for (dr, ar) in ds.chunks_mut(p).zip(a.chunks(p)) {
                        let dot: f32 = dr.iter().zip(ar).map(|(u, v)| u * v).sum();
                        for (u, v) in dr.iter_mut().zip(ar) {
                            *u = scale * v * (*u - dot);
                        }
                    }
                    // dθ = φ dSᵀ, dφ = θ dS.
                    let dst = MatMut::new(&mut *dtheta, p, 1);
                    let lhs = MatRef::new(phi, p, 1);
                    let rhs = MatRef::new(&*ds, 1, p);
                    gemm(d, p, p, dst, lhs, rhs, false, th);
                    let dst = MatMut::new(&mut *dphi, p, 1);
                    let lhs = MatRef::new(theta, p, 1);
                    let rhs = MatRef::new(&*ds, p, 1);
                    gemm(d, p, p, dst, lhs, rhs, false, th);
                    match self.embed {
                        Some((wt, wp)) => {
                            for (w, g) in [(wt, &*dtheta), (wp, &*dphi)] {
                                let dst = MatMut::new(&mut *dxb, p, 1);
                                let lhs = MatRef::new(w, 1, c);
                                let rhs = MatRef::new(g, p, 1);
                                gemm(c, p, d, dst, lhs, rhs, true, th);
                            }
                        }
                        None => {
                            for ((o, t), f) in dxb.iter_mut().zip(&*dtheta).zip(&*dphi) {
                                *o += t + f;
                            }
                        }
                    }
                });
            });
    }
}

#[cfg(test)]
mod tests {
    use super::exp_approx;

    #[test]
    fn exp_approx_is_accurate() {
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let (a, b) = (exp_approx(x), x.exp());
            assert!((a - b).abs() <= 3e-7 * b, "x = {x}: {a} vs {b}");
        }
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(-1000.0), exp_approx(-87.0));
    }
}
