//! Native kernels for the softmax non-local blocks (Gaussian, with or without θ/φ embedding),
//! forward and backward-data, per image on GEMMs. Per image, with `x` as `[C, P]`:
//! `θ = Wθ·x`, `φ = Wφ·x` (`[d, P]`, or `x` itself without embedding), `S = θᵀφ/√d`,
//! `A = softmax_rows(S)`, `y = x·Aᵀ`. The forward keeps `A`, `θ` and `φ` for the backward.

use rayon::prelude::*;

use super::gemm::{MatMut, MatRef, Threads, gemm};
use super::softmax::softmax_in_place;
use super::workspace::with_workspace;

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
