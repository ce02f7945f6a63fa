//! The launches of the feature-denoising blocks (Xie et al.): the non-local means variants as
//! matrix products around a row softmax, the dot product as two Gram products, and the local
//! filters (mean, median, bilateral) as their own kernels, each forward and input gradient. What
//! the forward keeps for the backward lives in the node's scratch buffers.

use super::buffers::{Scratch, chw};
use super::dispatch::{Dispatch, grid};
use super::error::gpu_err;
use super::kernels::Entry;
use super::recorder::{Recorder, need};
use super::uniforms::{DenoiseParams, MatmulParams};
use crate::engine::EngineError;
use crate::model::DenoiseVariant;
use crate::model::graph::NodeId;

type R<T> = Result<T, EngineError>;

/// The parameter block of a local filter over `n` images of `c` channels of `h × w` cells, with
/// `d`-wide embeddings whose dot products are scaled by `scale`.
fn denoise_params(n: usize, c: usize, h: usize, w: usize, d: usize, scale: f32) -> DenoiseParams {
    DenoiseParams {
        planes: (n * c) as u32,
        h: h as u32,
        w: w as u32,
        c: c as u32,
        d: d as u32,
        images: n as u32,
        scale,
        unused: 0,
    }
}

/// `emb = W·x` for a `[d, C]` 1×1 embedding, per image.
fn embed(
    rec: &Recorder<'_>,
    w: &wgpu::Buffer,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
    c: usize,
    d: usize,
    pp: usize,
) -> R<Dispatch> {
    let p = MatmulParams::plain(
        d,
        pp,
        c,
        [0, 0, c, 1],
        [c * pp, 0, pp, 1],
        [d * pp, 0, pp, 1],
    );
    rec.mm(p, rec.n, w, x, out, None)
}

/// The sizes and buffers one denoise node's launches use.
#[derive(Clone, Copy)]
struct Site<'a> {
    /// Channels.
    c: usize,
    /// Height.
    h: usize,
    /// Width.
    w: usize,
    /// Cells per channel.
    pp: usize,
    /// Images.
    n: usize,
    /// The input's value.
    x: &'a wgpu::Buffer,
    /// The node's value.
    out: &'a wgpu::Buffer,
    /// The input's gradient.
    gx: &'a wgpu::Buffer,
    /// The node's gradient.
    dy: &'a wgpu::Buffer,
    /// The node's scratch.
    s: &'a Scratch,
}

impl<'a> Site<'a> {
    fn new(rec: &'a Recorder<'a>, i: NodeId) -> R<Self> {
        let [c, h, w] = chw(&rec.node(i).shape)?;
        let j = rec.input(i, 0)?;
        Ok(Self {
            c,
            h,
            w,
            pp: h * w,
            n: rec.n,
            x: rec.value(j),
            out: rec.value(i),
            gx: rec.grad(j),
            dy: rec.grad(i),
            s: rec.scratch(i),
        })
    }
}

/// Launches of denoise node `i`'s forward: its value, and what its backward reads later.
pub fn forward(
    rec: &Recorder<'_>,
    i: NodeId,
    variant: DenoiseVariant,
    theta: Option<&wgpu::Buffer>,
    phi: Option<&wgpu::Buffer>,
) -> R<Vec<Dispatch>> {
    let site = &Site::new(rec, i)?;
    match variant {
        DenoiseVariant::NonlocalGaussian | DenoiseVariant::GaussianNoEmbed => {
            nonlocal_forward(rec, site, theta, phi)
        }
        DenoiseVariant::DotProduct => dot_product_forward(rec, site),
        DenoiseVariant::Mean | DenoiseVariant::Median => filter_forward(rec, site, variant),
        DenoiseVariant::Bilateral => bilateral_forward(rec, site, theta, phi),
    }
}

/// Launches that add denoise node `i`'s contribution to its input's gradient, in execution
/// order.
pub fn backward(
    rec: &Recorder<'_>,
    i: NodeId,
    variant: DenoiseVariant,
    theta: Option<&wgpu::Buffer>,
    phi: Option<&wgpu::Buffer>,
) -> R<Vec<Dispatch>> {
    let site = &Site::new(rec, i)?;
    match variant {
        DenoiseVariant::NonlocalGaussian | DenoiseVariant::GaussianNoEmbed => {
            nonlocal_backward(rec, site, theta, phi)
        }
        DenoiseVariant::DotProduct => dot_product_backward(rec, site),
        DenoiseVariant::Mean | DenoiseVariant::Median => filter_backward(rec, site, variant),
        DenoiseVariant::Bilateral => bilateral_backward(rec, site, theta, phi),
    }
}

/// Non-local means: embeddings, scores `θᵀφ`, their row softmax `A`, then `y = x·Aᵀ`.
fn nonlocal_forward(
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
fn dot_product_forward(rec: &Recorder<'_>, site: &Site<'_>) -> R<Vec<Dispatch>> {
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

/// The 3×3 mean or median filter.
fn filter_forward(
    rec: &Recorder<'_>,
    site: &Site<'_>,
    variant: DenoiseVariant,
) -> R<Vec<Dispatch>> {
    let Site {
        c,
        h,
        w,
        pp,
        n,
        x,
        out,
        ..
    } = *site;
    let mut v = Vec::new();
    let entry = if variant == DenoiseVariant::Mean {
        Entry::MeanForward
    } else {
        Entry::MedianForward
    };
    let params = denoise_params(rec.n, c, h, w, 0, 0.0);
    v.push(rec.launch(
        entry,
        &params,
        &[Some(x), None, None, Some(out)],
        grid(n * c * pp),
    )?);
    Ok(v)
}

/// The bilateral filter: embeddings, then the weighted 3×3 neighbourhood.
fn bilateral_forward(
    rec: &Recorder<'_>,
    site: &Site<'_>,
    theta: Option<&wgpu::Buffer>,
    phi: Option<&wgpu::Buffer>,
) -> R<Vec<Dispatch>> {
    let Site {
        c,
        h,
        w,
        pp,
        n,
        x,
        out,
        s,
        ..
    } = *site;
    let mut v = Vec::new();
    let (Some(wt), Some(wp)) = (theta, phi) else {
        return Err(gpu_err("bilateral denoise without embeddings"));
    };
    let d = s.dim;
    let (tb, pb) = (need(&s.theta, "theta")?, need(&s.phi, "phi")?);
    let wts = need(&s.saved, "weights")?;
    v.push(embed(rec, wt, x, tb, c, d, pp)?);
    v.push(embed(rec, wp, x, pb, c, d, pp)?);
    let params = denoise_params(rec.n, c, h, w, d, 1.0 / (d as f32).sqrt());
    v.push(rec.launch(
        Entry::BilateralForward,
        &params,
        &[Some(x), Some(tb), Some(pb), Some(out), Some(wts)],
        grid(n * pp),
    )?);
    Ok(v)
}

/// Gradient of [`nonlocal_forward`] through `A`, the softmax and the embeddings.
fn nonlocal_backward(
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
fn dot_product_backward(rec: &Recorder<'_>, site: &Site<'_>) -> R<Vec<Dispatch>> {
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

/// Gradient of [`filter_forward`].
fn filter_backward(
    rec: &Recorder<'_>,
    site: &Site<'_>,
    variant: DenoiseVariant,
) -> R<Vec<Dispatch>> {
    let Site {
        c,
        h,
        w,
        pp,
        n,
        x,
        gx,
        dy,
        ..
    } = *site;
    let mut v = Vec::new();
    let entry = if variant == DenoiseVariant::Mean {
        Entry::MeanBackward
    } else {
        Entry::MedianBackward
    };
    let params = denoise_params(rec.n, c, h, w, 0, 0.0);
    v.push(rec.launch(
        entry,
        &params,
        &[Some(x), None, None, Some(dy), None, None, None, Some(gx)],
        grid(n * c * pp),
    )?);
    Ok(v)
}

/// Gradient of [`bilateral_forward`]: query and key sides, then the embeddings.
fn bilateral_backward(
    rec: &Recorder<'_>,
    site: &Site<'_>,
    theta: Option<&wgpu::Buffer>,
    phi: Option<&wgpu::Buffer>,
) -> R<Vec<Dispatch>> {
    let Site {
        c,
        h,
        w,
        pp,
        n,
        x,
        gx,
        dy,
        s,
        ..
    } = *site;
    let mut v = Vec::new();
    let (Some(wt), Some(wp)) = (theta, phi) else {
        return Err(gpu_err("bilateral denoise without embeddings"));
    };
    let d = s.dim;
    let (tb, pb) = (need(&s.theta, "theta")?, need(&s.phi, "phi")?);
    let (dtb, dpb) = (need(&s.dtheta, "dtheta")?, need(&s.dphi, "dphi")?);
    let wts = need(&s.saved, "weights")?;
    let dl = need(&s.work, "dlogits")?;
    let params = denoise_params(rec.n, c, h, w, d, 1.0 / (d as f32).sqrt());
    v.push(rec.launch(
        Entry::BilateralBackwardQuery,
        &params,
        &[
            Some(x),
            Some(tb),
            Some(pb),
            Some(dy),
            Some(wts),
            Some(dl),
            Some(dtb),
        ],
        grid(n * pp),
    )?);
    v.push(rec.launch(
        Entry::BilateralBackwardKey,
        &params,
        &[
            None,
            Some(tb),
            None,
            Some(dy),
            Some(wts),
            Some(dl),
            Some(dpb),
            Some(gx),
        ],
        grid(n * pp),
    )?);
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
    Ok(v)
}
