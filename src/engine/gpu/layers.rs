//! The launches each graph op records: its forward (into its value buffer) and its share of the
//! input gradient (added into its inputs' gradient buffers). Convolutions and linear layers are
//! matrix products; the denoise blocks are in `denoise/`.

use super::buffers::chw;
use super::denoise;
use super::dispatch::{Dispatch, grid};
use super::error::gpu_err;
use super::kernels::Entry;
use super::params::NodeParams;
use super::recorder::Recorder;
use super::uniforms::{DepthwiseParams, MatmulParams, PoolParams};
use crate::engine::EngineError;
use crate::model::{NodeId, Op};

type R<T> = Result<T, EngineError>;

/// Launches that compute node `i`'s value from its inputs' values.
pub fn forward(rec: &Recorder<'_>, i: NodeId) -> R<Vec<Dispatch>> {
    let node = rec.node(i);
    let out = rec.value(i);
    let n = rec.n;
    let count = n * node.shape.iter().product::<usize>();
    let x = || rec.input(i, 0).map(|j| rec.value(j));
    if let (Some(mut p), NodeParams::Conv { w, bias }) = (depthwise(rec, i)?, rec.node_params(i)) {
        p.bias = bias.is_some() as u32;
        let bufs = [Some(x()?), Some(w), bias.as_ref(), Some(out)];
        return Ok(vec![rec.launch(
            Entry::DepthwiseForward,
            &p,
            &bufs,
            grid(count),
        )?]);
    }
    let d = match (&node.op, rec.node_params(i)) {
        (Op::Input, _) => return Ok(vec![]),
        (Op::Normalize { .. }, NodeParams::Aux(aux)) => {
            let [ci, h, w] = chw(rec.in_shape(i)?)?;
            rec.ew(
                Entry::NormalizeForward,
                count,
                [node.shape[0], h * w, ci],
                [Some(x()?), Some(out), None, Some(aux)],
            )?
        }
        (Op::Conv2d { .. }, NodeParams::Conv { w, bias }) => {
            let (mut p, z) = conv_params(rec, i, false)?;
            p.bias_mode = bias.is_some() as u32;
            rec.mm(p, z, w, x()?, out, bias.as_ref())?
        }
        (Op::BatchNorm { .. }, NodeParams::Aux(aux)) => {
            let [c, h, w] = chw(&node.shape)?;
            rec.ew(
                Entry::AffineForward,
                count,
                [c, h * w, 0],
                [Some(x()?), Some(out), None, Some(aux)],
            )?
        }
        (Op::Relu | Op::Relu6, _) => {
            let entry = if node.op == Op::Relu {
                Entry::ReluForward
            } else {
                Entry::Relu6Forward
            };
            rec.ew(entry, count, [1, 1, 0], [Some(x()?), Some(out), None, None])?
        }
        (Op::Add, _) => {
            let b = rec.value(rec.input(i, 1)?);
            rec.ew(
                Entry::AddForward,
                count,
                [1, 1, 0],
                [Some(x()?), Some(out), Some(b), None],
            )?
        }
        (Op::MaxPool { .. } | Op::AvgPool { .. }, _) => {
            let p = pool_params(rec, i)?;
            rec.launch(
                Entry::PoolForward,
                &p,
                &[Some(x()?), Some(out), None, None],
                grid(count),
            )?
        }
        (Op::GlobalAvgPool, _) => {
            let [c, h, w] = chw(rec.in_shape(i)?)?;
            rec.ew(
                Entry::GlobalPoolForward,
                n * c,
                [c, h * w, 0],
                [Some(x()?), Some(out), None, None],
            )?
        }
        (
            Op::Linear {
                in_features,
                out_features,
                ..
            },
            NodeParams::Linear { w, bias },
        ) => {
            let (inf, outf) = (*in_features, *out_features);
            // Y[n, out] = X[n, in] · Wᵀ + b.
            let mut p = MatmulParams::plain(
                n,
                outf,
                inf,
                [0, 0, inf, 1],
                [0, 0, 1, inf],
                [0, 0, outf, 1],
            );
            p.bias_mode = if bias.is_some() { 2 } else { 0 };
            rec.mm(p, 1, x()?, w, out, bias.as_ref())?
        }
        (Op::DenoiseOp { variant, .. }, NodeParams::Denoise { theta, phi }) => {
            return denoise::forward(rec, i, *variant, theta.as_ref(), phi.as_ref());
        }
        (op, _) => return Err(gpu_err(format!("{}: no gpu kernel", op.kind()))),
    };
    Ok(vec![d])
}

/// Launches that add node `i`'s contribution to its inputs' gradients, in execution order.
pub fn backward(rec: &Recorder<'_>, i: NodeId) -> R<Vec<Dispatch>> {
    let node = rec.node(i);
    if node.op == Op::Input {
        return Ok(vec![]);
    }
    let n = rec.n;
    let g = rec.grad(i);
    let j = rec.input(i, 0)?;
    let gx = rec.grad(j);
    let in_count = n * rec.in_shape(i)?.iter().product::<usize>();
    if let (Some(p), NodeParams::Conv { w, .. }) = (depthwise(rec, i)?, rec.node_params(i)) {
        let bufs = [Some(g), Some(w), None, Some(gx)];
        return Ok(vec![rec.launch(
            Entry::DepthwiseBackward,
            &p,
            &bufs,
            grid(in_count),
        )?]);
    }
    let d = match (&node.op, rec.node_params(i)) {
        (Op::Normalize { .. }, NodeParams::Aux(aux)) => {
            let [ci, h, w] = chw(rec.in_shape(i)?)?;
            rec.ew(
                Entry::NormalizeBackward,
                in_count,
                [node.shape[0], h * w, ci],
                [Some(g), Some(gx), None, Some(aux)],
            )?
        }
        (Op::Conv2d { .. }, NodeParams::Conv { w, .. }) => {
            let (p, z) = conv_params(rec, i, true)?;
            rec.mm(p, z, w, g, gx, None)?
        }
        (Op::BatchNorm { .. }, NodeParams::Aux(aux)) => {
            let [c, h, w] = chw(&node.shape)?;
            rec.ew(
                Entry::AffineBackward,
                in_count,
                [c, h * w, 0],
                [Some(g), Some(gx), None, Some(aux)],
            )?
        }
        (Op::Relu, _) => rec.ew(
            Entry::ReluBackward,
            in_count,
            [1, 1, 0],
            [Some(g), Some(gx), Some(rec.value(i)), None],
        )?,
        (Op::Relu6, _) => rec.ew(
            Entry::Relu6Backward,
            in_count,
            [1, 1, 0],
            [Some(g), Some(gx), Some(rec.value(j)), None],
        )?,
        (Op::Add, _) => {
            let gk = rec.grad(rec.input(i, 1)?);
            let add_into = |dst| {
                rec.ew(
                    Entry::Accumulate,
                    in_count,
                    [1, 1, 0],
                    [Some(g), Some(dst), None, None],
                )
            };
            return Ok(vec![add_into(gx)?, add_into(gk)?]);
        }
        (Op::MaxPool { .. } | Op::AvgPool { .. }, _) => {
            let p = pool_params(rec, i)?;
            let total = (p.planes * p.h * p.w) as usize;
            rec.launch(
                Entry::PoolBackward,
                &p,
                &[Some(rec.value(j)), None, Some(g), Some(gx)],
                grid(total),
            )?
        }
        (Op::GlobalAvgPool, _) => {
            let [c, h, w] = chw(rec.in_shape(i)?)?;
            rec.ew(
                Entry::GlobalPoolBackward,
                in_count,
                [c, h * w, 0],
                [Some(g), Some(gx), None, None],
            )?
        }
        (
            Op::Linear {
                in_features,
                out_features,
                ..
            },
            NodeParams::Linear { w, .. },
        ) => {
            let (inf, outf) = (*in_features, *out_features);
            // dX[n, in] += dY[n, out] · W[out, in].
            let mut p = MatmulParams::plain(
                n,
                inf,
                outf,
                [0, 0, outf, 1],
                [0, 0, inf, 1],
                [0, 0, inf, 1],
            );
            p.beta = 1.0;
            rec.mm(p, 1, g, w, gx, None)?
        }
        (Op::DenoiseOp { variant, .. }, NodeParams::Denoise { theta, phi }) => {
            return denoise::backward(rec, i, *variant, theta.as_ref(), phi.as_ref());
        }
        (op, _) => return Err(gpu_err(format!("{}: no gpu backward", op.kind()))),
    };
    Ok(vec![d])
}

/// The parameter block of convolution node `i` when it is depthwise (one filter per channel:
/// groups = input channels = output channels, more than one), which gets its own kernel
/// instead of one matrix product per channel; `None` for any other convolution.
fn depthwise(rec: &Recorder<'_>, i: NodeId) -> R<Option<DepthwiseParams>> {
    let node = rec.node(i);
    let Op::Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        groups,
        ..
    } = &node.op
    else {
        return Ok(None);
    };
    if *groups <= 1 || groups != in_channels || groups != out_channels {
        return Ok(None);
    }
    let [c, _, _] = chw(rec.in_shape(i)?)?;
    let [o, _, _] = chw(&node.shape)?;
    if c != *in_channels || o != *out_channels {
        return Err(gpu_err(format!("{}: inconsistent convolution", node.name)));
    }
    let [planes, h, w, oh, ow, kh, kw, stride, pad_t, pad_l] =
        window(rec, i, *kernel, *stride, padding)?;
    Ok(Some(DepthwiseParams {
        planes,
        c: c as u32,
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        stride,
        pad_t,
        pad_l,
        bias: 0,
    }))
}

/// The matrix product of convolution node `i` (forward, or its input gradient when `backward`)
/// and how many products it runs (images × groups).
fn conv_params(rec: &Recorder<'_>, i: NodeId, backward: bool) -> R<(MatmulParams, usize)> {
    let node = rec.node(i);
    let Op::Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        groups,
        ..
    } = &node.op
    else {
        return Err(gpu_err("not a convolution"));
    };
    let [c, h, w] = chw(rec.in_shape(i)?)?;
    let [o, oh, ow] = chw(&node.shape)?;
    if c != *in_channels || o != *out_channels || *groups == 0 || c % groups != 0 {
        return Err(gpu_err(format!("{}: inconsistent convolution", node.name)));
    }
    let g = *groups;
    let (cg, og) = (c / g, o / g);
    let [kh, kw] = *kernel;
    let kk = kh * kw;
    let [pt, _, pl, _] = padding.resolve(h, w, *kernel, *stride);
    let pointwise = kk == 1 && *stride == 1 && pt == 0 && pl == 0;
    let mut p = if !backward {
        // Y[og, OH·OW] = W[og, cg·kk] · im2col(X)[cg·kk, OH·OW] per (image, group).
        let mut p = MatmulParams::plain(
            og,
            oh * ow,
            cg * kk,
            [0, og * cg * kk, cg * kk, 1],
            [c * h * w, cg * h * w, h * w, 1],
            [o * oh * ow, og * oh * ow, oh * ow, 1],
        );
        if !pointwise {
            p.b_mode = 1;
        }
        p
    } else {
        // dX[cg, H·W] += Wᵀ[cg, og·kk] · dY gathered [og·kk, H·W].
        let mut p = MatmulParams::plain(
            cg,
            h * w,
            og * kk,
            [0, og * cg * kk, 1, cg],
            [o * oh * ow, og * oh * ow, oh * ow, 1],
            [c * h * w, cg * h * w, h * w, 1],
        );
        p.beta = 1.0;
        if !pointwise {
            p.a_mode = 1;
            p.b_mode = 2;
        }
        p
    };
    p.zdiv = g as u32;
    p.set_geometry([h, w, oh, ow, kh, kw, *stride, pt, pl]);
    p.chan = cg as u32;
    p.bias_z2 = og as u32;
    Ok((p, rec.n * g))
}

/// The parameter block of pooling node `i`.
fn pool_params(rec: &Recorder<'_>, i: NodeId) -> R<PoolParams> {
    let node = rec.node(i);
    let (kind, kernel, stride, padding) = match &node.op {
        Op::MaxPool {
            kernel,
            stride,
            padding,
        } => (0, kernel, stride, padding),
        Op::AvgPool {
            kernel,
            stride,
            padding,
        } => (1, kernel, stride, padding),
        _ => return Err(gpu_err("not a pooling node")),
    };
    let [planes, h, w, oh, ow, kh, kw, stride, pad_t, pad_l] =
        window(rec, i, *kernel, *stride, padding)?;
    Ok(PoolParams {
        planes,
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        stride,
        pad_t,
        pad_l,
        kind,
        unused: 0,
    })
}

/// The geometry a windowed op over node `i`'s input planes shares (pooling, depthwise
/// convolution) for a `kernel` window at `stride` with `padding`: `[planes (images × channels),
/// h, w, oh, ow, kh, kw, stride, pad_t, pad_l]`, as its parameter block holds them.
fn window(
    rec: &Recorder<'_>,
    i: NodeId,
    kernel: [usize; 2],
    stride: usize,
    padding: &crate::model::Padding,
) -> R<[u32; 10]> {
    let [c, h, w] = chw(rec.in_shape(i)?)?;
    let [_, oh, ow] = chw(&rec.node(i).shape)?;
    let [pad_t, _, pad_l, _] = padding.resolve(h, w, kernel, stride);
    Ok([
        rec.n * c,
        h,
        w,
        oh,
        ow,
        kernel[0],
        kernel[1],
        stride,
        pad_t,
        pad_l,
    ]
    .map(|v| v as u32))
}
