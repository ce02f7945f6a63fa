//! The launches of the feature-denoising blocks (Xie et al.), forward and input gradient: the
//! non-local means variants and the dot product as matrix products (`nonlocal.rs`), the local
//! filters as kernels of their own (`filters.rs`). What the forward keeps for the backward lives
//! in the node's scratch buffers.

mod filters;
mod nonlocal;

use super::buffers::{Scratch, chw};
use super::dispatch::Dispatch;
use super::recorder::Recorder;
use super::uniforms::MatmulParams;
use crate::engine::EngineError;
use crate::model::DenoiseVariant;
use crate::model::NodeId;
use filters::{bilateral_backward, bilateral_forward, filter_backward, filter_forward};
use nonlocal::{dot_product_backward, dot_product_forward, nonlocal_backward, nonlocal_forward};

type R<T> = Result<T, EngineError>;

/// `emb = W·x` for a `[d, C]` 1×1 embedding, per image.
pub(super) fn embed(
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
