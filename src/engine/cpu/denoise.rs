//! The denoise operations ([`DenoiseVariant`]) as candle tensor expressions, so that autograd
//! gives their input gradients.

use candle_core::Tensor;

use super::custom_op::on_cpu;
use super::pool::{PoolKind, PoolOp};
use super::softmax::softmax_last_dim;
use crate::model::DenoiseVariant;

type R<T> = candle_core::Result<T>;

/// Applies `variant` to `x` (`[N, C, H, W]`); `theta`/`phi` are the `[C/2, C]` embeddings for the
/// embedded variants.
pub fn apply(
    variant: DenoiseVariant,
    x: &Tensor,
    theta: Option<&Tensor>,
    phi: Option<&Tensor>,
) -> R<Tensor> {
    match variant {
        DenoiseVariant::NonlocalGaussian => non_local(x, theta, phi, true),
        DenoiseVariant::GaussianNoEmbed => non_local(x, None, None, true),
        DenoiseVariant::DotProduct => non_local(x, None, None, false),
        DenoiseVariant::Mean => mean3x3(x),
        DenoiseVariant::Median => on_cpu(x, |t| {
            t.apply_op1(PoolOp {
                kind: PoolKind::Median,
                kernel: [3, 3],
                stride: 1,
                pads: [1, 1, 1, 1],
            })
        }),
        DenoiseVariant::Bilateral => bilateral(x, theta, phi),
    }
}

/// `emb · x` for a `[D, C]` 1×1 embedding and `x` as `[N, C, P]`.
fn embed(w: &Tensor, x: &Tensor) -> R<Tensor> {
    w.broadcast_matmul(x)
}

fn non_local(x: &Tensor, theta: Option<&Tensor>, phi: Option<&Tensor>, softmax: bool) -> R<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let p = h * w;
    let g = x.reshape((n, c, p))?;
    let (th, ph) = match (theta, phi) {
        (Some(t), Some(f)) => (embed(t, &g)?, embed(f, &g)?),
        _ => (g.clone(), g.clone()),
    };
    let d = th.dim(1)?;
    let y = if softmax {
        // f[i, j] = θ_i·φ_j / √d, softmax over j; y[:, i] = Σ_j f[i, j] x[:, j].
        let f = (th.transpose(1, 2)?.contiguous()?.matmul(&ph)? / (d as f64).sqrt())?;
        let f = softmax_last_dim(&f)?;
        // y = g·fᵀ computed as (f·gᵀ)ᵀ so the large attention matrix is never transposed.
        f.matmul(&g.transpose(1, 2)?.contiguous()?)?
            .transpose(1, 2)?
            .contiguous()?
    } else if c <= p {
        // The cheaper channel form: y = (x φᵀ) θ / HW.
        let a = g.matmul(&ph.transpose(1, 2)?.contiguous()?)?;
        (a.matmul(&th)? / p as f64)?
    } else {
        let f = th.transpose(1, 2)?.contiguous()?.matmul(&ph)?;
        (g.matmul(&f.transpose(1, 2)?.contiguous()?)? / p as f64)?
    };
    y.reshape((n, c, h, w))
}

/// The nine 3×3 neighbours of every cell of a zero-padded map, with a `[1, 1, H, W]` validity
/// mask for each.
fn neighbours(x: &Tensor) -> R<(Vec<Tensor>, Vec<Tensor>)> {
    let (_, _, h, w) = x.dims4()?;
    let xp = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut shifts = Vec::with_capacity(9);
    let mut masks = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            shifts.push(xp.narrow(2, dy, h)?.narrow(3, dx, w)?);
            let mut m = vec![0f32; h * w];
            for y in 0..h {
                for xx in 0..w {
                    let (sy, sx) = (y + dy, xx + dx);
                    if (1..=h).contains(&sy) && (1..=w).contains(&sx) {
                        m[y * w + xx] = 1.0;
                    }
                }
            }
            masks.push(Tensor::from_vec(m, (1, 1, h, w), x.device())?);
        }
    }
    Ok((shifts, masks))
}

fn mean3x3(x: &Tensor) -> R<Tensor> {
    let (shifts, masks) = neighbours(x)?;
    let mut sum = shifts[0].clone();
    let mut count = masks[0].clone();
    for (s, m) in shifts.iter().zip(&masks).skip(1) {
        sum = (sum + s)?;
        count = (count + m)?;
    }
    sum.broadcast_div(&count)
}

fn bilateral(x: &Tensor, theta: Option<&Tensor>, phi: Option<&Tensor>) -> R<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let flat = x.reshape((n, c, h * w))?;
    let (th, ph) = match (theta, phi) {
        (Some(t), Some(f)) => (embed(t, &flat)?, embed(f, &flat)?),
        _ => (flat.clone(), flat),
    };
    let d = th.dim(1)?;
    let th = th.reshape((n, d, h, w))?;
    let ph = ph.reshape((n, d, h, w))?;
    let (ph_shifts, masks) = neighbours(&ph)?;
    let (x_shifts, _) = neighbours(x)?;
    let scale = 1.0 / (d as f64).sqrt();
    let mut logits = Vec::with_capacity(9);
    for (s, m) in ph_shifts.iter().zip(&masks) {
        let dot = ((&th * s)?.sum_keepdim(1)? * scale)?;
        // Cells outside the map get a large negative logit, so zero weight after the softmax.
        let off = ((m - 1.0)? * 1e9)?;
        logits.push(dot.broadcast_add(&off)?);
    }
    let weights = candle_nn::ops::softmax(&Tensor::cat(&logits, 1)?, 1)?;
    let mut y: Option<Tensor> = None;
    for (k, s) in x_shifts.iter().enumerate() {
        let term = s.broadcast_mul(&weights.narrow(1, k, 1)?)?;
        y = Some(match y {
            Some(acc) => (acc + term)?,
            None => term,
        });
    }
    y.ok_or_else(|| candle_core::Error::Msg("empty window".into()))
}
