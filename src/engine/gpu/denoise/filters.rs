//! The local 3×3 filters: mean and median (one kernel each way) and the bilateral filter, whose
//! weights come from embedded similarities to the 8 neighbours.

use super::{Site, embed};
use crate::engine::EngineError;
use crate::engine::gpu::dispatch::{Dispatch, grid};
use crate::engine::gpu::error::gpu_err;
use crate::engine::gpu::kernels::Entry;
use crate::engine::gpu::recorder::{Recorder, need};
use crate::engine::gpu::uniforms::{DenoiseParams, MatmulParams};
use crate::model::DenoiseVariant;

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

/// The 3×3 mean or median filter.
pub(super) fn filter_forward(
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
pub(super) fn bilateral_forward(
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

/// Gradient of [`filter_forward`].
pub(super) fn filter_backward(
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
pub(super) fn bilateral_backward(
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
