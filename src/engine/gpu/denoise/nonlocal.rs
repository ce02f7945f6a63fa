//! Non-local means (embedded Gaussian, or Gaussian on the features themselves) and the dot
//! product variant: every step a batched matrix product, around a row softmax for the former.

use super::{Site, embed};
use crate::engine::EngineError;
use crate::engine::gpu::dispatch::Dispatch;
use crate::engine::gpu::kernels::Entry;
use crate::engine::gpu::recorder::{Recorder, need};
use crate::engine::gpu::uniforms::MatmulParams;

type R<T> = Result<T, EngineError>;

/// Non-local means: embeddings, scores `θᵀφ`, their row softmax `A`, then `y = x·Aᵀ`.
pub(super) fn nonlocal_forward(
    rec: &Recorder<'_>,
    site: &Site<'_>,
    theta: Option<&wgpu::Buffer>,
    phi: Option<&wgpu::Buffer>,
) -> R<Vec<Dispatch>> {
    let Site {
        c,
        pp,
        n,
        x,
        out,
        s,
        ..
    } = *site;
    let mut v = Vec::new();
    let d = s.dim;
    let (th, ph) = match (theta, phi) {
        (Some(wt), Some(wp)) => {
            let (tb, pb) = (need(&s.theta, "theta")?, need(&s.phi, "phi")?);
            v.push(embed(rec, wt, x, tb, c, d, pp)?);
            v.push(embed(rec, wp, x, pb, c, d, pp)?);
            (tb, pb)
        }
        _ => (x, x),
    };
    let scores = need(&s.work, "scores")?;
    let prob = need(&s.saved, "attention")?;
    // S = θᵀφ: [P, P] per image.
    let p = MatmulParams::plain(
        pp,
        pp,
        d,
        [d * pp, 0, 1, pp],
        [d * pp, 0, pp, 1],
        [pp * pp, 0, pp, 1],
    );
    v.push(rec.mm(p, n, th, ph, scores, None)?);
    v.push(rec.softmax(Entry::SoftmaxForward, n * pp, pp, d, scores, prob)?);
    // y = x·Aᵀ: [C, P] per image.
    let p = MatmulParams::plain(
        c,
        pp,
        pp,
        [c * pp, 0, pp, 1],
        [pp * pp, 0, 1, pp],
        [c * pp, 0, pp, 1],
    );
    v.push(rec.mm(p, n, x, prob, out, None)?);
    Ok(v)
}

/// Dot product: the Gram matrix `G = x·xᵀ`, then `y = G·x / P`.
pub(super) fn dot_product_forward(rec: &Recorder<'_>, site: &Site<'_>) -> R<Vec<Dispatch>> {
    let Site {
        c,
        pp,
        n,
        x,
        out,
        s,
        ..
    } = *site;
    let mut v = Vec::new();
    let gram = need(&s.saved, "gram")?;
    // G = x·xᵀ ([C, C]); y = G·x / P.
    let p = MatmulParams::plain(
        c,
        c,
        pp,
        [c * pp, 0, pp, 1],
        [c * pp, 0, 1, pp],
        [c * c, 0, c, 1],
    );
    v.push(rec.mm(p, n, x, x, gram, None)?);
    let mut p = MatmulParams::plain(
        c,
        pp,
        c,
        [c * c, 0, c, 1],
        [c * pp, 0, pp, 1],
        [c * pp, 0, pp, 1],
    );
    p.alpha = 1.0 / pp as f32;
    v.push(rec.mm(p, n, gram, x, out, None)?);
    Ok(v)
}

/// Gradient of [`nonlocal_forward`] through `A`, the softmax and the embeddings.
pub(super) fn nonlocal_backward(
    rec: &Recorder<'_>,
    site: &Site<'_>,
    theta: Option<&wgpu::Buffer>,
    phi: Option<&wgpu::Buffer>,
) -> R<Vec<Dispatch>> {
    let Site {
        c,
        pp,
        n,
        x,
        gx,
        dy,
        s,
        ..
    } = *site;
    let mut v = Vec::new();
    let d = s.dim;
    let prob = need(&s.saved, "attention")?;
    let ds = need(&s.work, "scores")?;
    // dX += dY·A.
    let mut p = MatmulParams::plain(
        c,
        pp,
        pp,
        [c * pp, 0, pp, 1],
        [pp * pp, 0, pp, 1],
        [c * pp, 0, pp, 1],
    );
    p.beta = 1.0;
    v.push(rec.mm(p, n, dy, prob, gx, None)?);
    // dA = dYᵀ·X, then dS = A ⊙ (dA − rowsum(dA ⊙ A)) / √d.
    let p = MatmulParams::plain(
        pp,
        pp,
        c,
        [c * pp, 0, 1, pp],
        [c * pp, 0, pp, 1],
        [pp * pp, 0, pp, 1],
    );
    v.push(rec.mm(p, n, dy, x, ds, None)?);
    v.push(rec.softmax(Entry::SoftmaxBackward, n * pp, pp, d, ds, prob)?);
    // dθ = φ·dSᵀ and dφ = θ·dS ([d, P] each).
    let dt_p = MatmulParams::plain(
        d,
        pp,
        pp,
        [d * pp, 0, pp, 1],
        [pp * pp, 0, 1, pp],
        [d * pp, 0, pp, 1],
    );
    let dp_p = MatmulParams::plain(
        d,
        pp,
        pp,
        [d * pp, 0, pp, 1],
        [pp * pp, 0, pp, 1],
        [d * pp, 0, pp, 1],
    );
    match (theta, phi) {
        (Some(wt), Some(wp)) => {
            let (tb, pb) = (need(&s.theta, "theta")?, need(&s.phi, "phi")?);
            let (dtb, dpb) = (need(&s.dtheta, "dtheta")?, need(&s.dphi, "dphi")?);
            v.push(rec.mm(dt_p, n, pb, ds, dtb, None)?);
            v.push(rec.mm(dp_p, n, tb, ds, dpb, None)?);
            // dX += Wθᵀ·dθ + Wφᵀ·dφ.
            let mut p = MatmulParams::plain(
                c,
                pp,
                d,
                [0, 0, 1, c],
                [d * pp, 0, pp, 1],
                [c * pp, 0, pp, 1],
            );
            p.beta = 1.0;
            v.push(rec.mm(p, n, wt, dtb, gx, None)?);
            v.push(rec.mm(p, n, wp, dpb, gx, None)?);
        }
        _ => {
            let (mut a, mut b) = (dt_p, dp_p);
            a.beta = 1.0;
            b.beta = 1.0;
            v.push(rec.mm(a, n, x, ds, gx, None)?);
            v.push(rec.mm(b, n, x, ds, gx, None)?);
        }
    }
    Ok(v)
}

/// Gradient of [`dot_product_forward`].
pub(super) fn dot_product_backward(rec: &Recorder<'_>, site: &Site<'_>) -> R<Vec<Dispatch>> {
    let Site {
        c,
        pp,
        n,
        x,
        gx,
        dy,
        s,
        ..
    } = *site;
    let mut v = Vec::new();
    let gram = need(&s.saved, "gram")?;
    let e = need(&s.work, "dgram")?;
    let inv = 1.0 / pp as f32;
    // dX += (G·dY + (E + Eᵀ)·X) / P with E = dY·Xᵀ.
    let mut p = MatmulParams::plain(
        c,
        pp,
        c,
        [c * c, 0, c, 1],
        [c * pp, 0, pp, 1],
        [c * pp, 0, pp, 1],
    );
    p.alpha = inv;
    p.beta = 1.0;
    v.push(rec.mm(p, n, gram, dy, gx, None)?);
    let p = MatmulParams::plain(
        c,
        c,
        pp,
        [c * pp, 0, pp, 1],
        [c * pp, 0, 1, pp],
        [c * c, 0, c, 1],
    );
    v.push(rec.mm(p, n, dy, x, e, None)?);
    let mut p = MatmulParams::plain(
        c,
        pp,
        c,
        [c * c, 0, c, 1],
        [c * pp, 0, pp, 1],
        [c * pp, 0, pp, 1],
    );
    p.alpha = inv;
    p.beta = 1.0;
    v.push(rec.mm(p, n, e, x, gx, None)?);
    p.set_a([c * c, 0, 1, c]);
    v.push(rec.mm(p, n, e, x, gx, None)?);
    Ok(v)
}
