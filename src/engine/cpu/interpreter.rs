//! The candle graph interpreter: evaluates a network's graph node by node as candle tensor
//! expressions, so candle's autograd records it. The cpu engine's autograd executor runs on it
//! (the only executor on candle's CUDA and Metal devices), and so does the trainer, which needs
//! gradients on the weights.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::batchnorm;
use super::conv::Conv2dOp;
use super::custom_op::on_cpu;
use super::denoise;
use super::pool::PoolOp;
use super::relu;
use super::tensor::backend;
use crate::array::Array;
use crate::engine::EngineError;
use crate::model::{Graph, NodeId, Op};

type R<T> = candle_core::Result<T>;

/// Which implementation runs the convolutions and the training-mode batch norms, the two ops
/// candle has kernels of its own for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// advlens's host kernels (a convolution whose backward skips the kernel gradient when the
    /// weights are frozen, a fused batch norm): the CPU's. Needs tensors on the CPU.
    Advlens,
    /// Candle's own convolution and batch norm composed of candle ops: the only ones on CUDA and
    /// Metal. On the CPU they are the "stock candle" baseline `advlens bench` times.
    Candle,
}

impl Kernels {
    /// The kernels for tensors on `device`.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            Self::Advlens
        } else {
            Self::Candle
        }
    }
}

/// How a graph evaluation treats parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamMode {
    /// Constant weights: convolution backward computes the input gradient only.
    Frozen,
    /// Trained weights: convolution backward also computes the kernel gradient.
    Trained,
}

/// How [`run_graph`] evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Skip every denoise block.
    pub bypass_denoise: bool,
    /// Frozen or trained weights.
    pub mode: ParamMode,
    /// Whose convolution and batch norm to run.
    pub kernels: Kernels,
    /// Batch norm normalises with the statistics of the batch (training) instead of its running
    /// averages (inference).
    pub bn_batch_stats: bool,
}

/// The statistics one batch-norm node saw in a training pass, for updating its running averages.
#[derive(Clone, Debug)]
pub struct BnBatchStats {
    /// The node's four tensor names (gamma, beta, running mean, running variance).
    pub names: [String; 4],
    /// Per-channel mean over batch and positions (detached from autograd).
    pub mean: Tensor,
    /// Per-channel biased variance over batch and positions (detached).
    pub var: Tensor,
    /// Values per channel the statistics were taken over (`N·H·W`).
    pub count: usize,
}

/// Runs `graph` through candle and returns the logits tensor (attached to the autograd graph when
/// `x` or a parameter is a variable).
pub fn run_logits(
    graph: &Graph,
    params: &HashMap<String, Tensor>,
    x: &Tensor,
    opts: RunOptions,
) -> Result<Tensor, EngineError> {
    let mut values = run_graph(graph, params, x, &[graph.output], opts).map_err(backend)?;
    values[graph.output]
        .take()
        .ok_or_else(|| EngineError::Backend {
            engine: "cpu",
            message: "logits missing".into(),
        })
}

/// Back-propagates `dz = ∂L/∂logits` through candle's autograd.
pub fn backward_from(
    logits: &Tensor,
    dz: &Array,
) -> Result<candle_core::backprop::GradStore, EngineError> {
    let seed = Tensor::from_slice(dz.data(), dz.shape(), logits.device()).map_err(backend)?;
    (logits * seed)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .map_err(backend)
}

/// Evaluates `graph` on `x` with `params` through candle tensors (autograd records the graph when
/// `x` or a parameter is a variable), returning the value of every node listed in `keep` (others
/// are dropped as soon as their last reader has run).
pub fn run_graph(
    graph: &Graph,
    params: &HashMap<String, Tensor>,
    x: &Tensor,
    keep: &[NodeId],
    opts: RunOptions,
) -> R<Vec<Option<Tensor>>> {
    run_graph_with_stats(graph, params, x, keep, opts, &mut Vec::new())
}

/// [`run_graph`], also recording the batch statistics of every batch-norm node into `stats` when
/// `opts.bn_batch_stats` is set (the trainer updates the running averages from them).
pub fn run_graph_with_stats(
    graph: &Graph,
    params: &HashMap<String, Tensor>,
    x: &Tensor,
    keep: &[NodeId],
    opts: RunOptions,
    stats: &mut Vec<BnBatchStats>,
) -> R<Vec<Option<Tensor>>> {
    let RunOptions {
        bypass_denoise,
        mode,
        kernels,
        bn_batch_stats,
    } = opts;
    let n_nodes = graph.nodes.len();
    let mut last_use = vec![0usize; n_nodes];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &j in &node.inputs {
            last_use[j] = i;
        }
    }
    for &k in keep {
        last_use[k] = usize::MAX;
    }
    let p = |name: &str| -> R<&Tensor> {
        params
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("weight {name:?} not loaded")))
    };
    let mut values: Vec<Option<Tensor>> = vec![None; n_nodes];
    for (i, node) in graph.nodes.iter().enumerate() {
        let value = match (node.denoise_block, bypass_denoise) {
            (Some(b), true) => values[graph.denoise_blocks[b].input]
                .clone()
                .ok_or_else(|| candle_core::Error::Msg("denoise input missing".into()))?,
            _ => {
                let args = node
                    .inputs
                    .iter()
                    .map(|&j| {
                        values[j].clone().ok_or_else(|| {
                            candle_core::Error::Msg(format!("{}: input missing", node.name))
                        })
                    })
                    .collect::<R<Vec<Tensor>>>()?;
                match (&node.op, bn_batch_stats) {
                    (
                        Op::BatchNorm {
                            prefix,
                            eps,
                            naming,
                            ..
                        },
                        true,
                    ) => {
                        let names = naming.batch_norm(prefix);
                        let (y, st) = batch_norm_train(&args[0], names, *eps, &p, kernels)?;
                        stats.push(st);
                        y
                    }
                    _ => eval_node(&node.op, &args, &p, x, mode, kernels)?,
                }
            }
        };
        values[i] = Some(value);
        for &j in &node.inputs {
            if last_use[j] == i {
                values[j] = None;
            }
        }
    }
    Ok(values)
}

/// Batch norm with the batch's own statistics (differentiable through them, as in training):
/// advlens's fused op, or composed candle ops.
fn batch_norm_train<'a>(
    a: &Tensor,
    names: [String; 4],
    eps: f32,
    p: &dyn Fn(&str) -> R<&'a Tensor>,
    kernels: Kernels,
) -> R<(Tensor, BnBatchStats)> {
    let [g, b, _, _] = names.clone();
    let (n, c, h, w) = a.dims4()?;
    let count = n * h * w;
    if kernels == Kernels::Advlens {
        let moments = batchnorm::Moments::default();
        let op = batchnorm::BatchNormTrainOp {
            eps,
            moments: moments.clone(),
        };
        let y = a
            .contiguous()?
            .apply_op3(&p(&g)?.contiguous()?, &p(&b)?.contiguous()?, op)?;
        let (mean, var) = moments
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .ok_or_else(|| candle_core::Error::Msg("batch norm moments missing".into()))?;
        let st = BnBatchStats {
            names,
            mean: Tensor::from_vec(mean, c, a.device())?,
            var: Tensor::from_vec(var, c, a.device())?,
            count,
        };
        return Ok((y, st));
    }
    let mean = a.mean_keepdim(3)?.mean_keepdim(2)?.mean_keepdim(0)?;
    let centred = a.broadcast_sub(&mean)?;
    let var = centred
        .sqr()?
        .mean_keepdim(3)?
        .mean_keepdim(2)?
        .mean_keepdim(0)?;
    let scale = p(&g)?
        .reshape((1, c, 1, 1))?
        .broadcast_div(&(&var + eps as f64)?.sqrt()?)?;
    let y = centred
        .broadcast_mul(&scale)?
        .broadcast_add(&p(&b)?.reshape((1, c, 1, 1))?)?;
    let st = BnBatchStats {
        names,
        mean: mean.detach().flatten_all()?,
        var: var.detach().flatten_all()?,
        count,
    };
    Ok((y, st))
}

fn eval_node<'a>(
    op: &Op,
    args: &[Tensor],
    p: &dyn Fn(&str) -> R<&'a Tensor>,
    x: &Tensor,
    mode: ParamMode,
    kernels: Kernels,
) -> R<Tensor> {
    let arg = |k: usize| -> R<&Tensor> {
        args.get(k)
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: input {k} missing", op.kind())))
    };
    Ok(match op {
        Op::Input => x.clone(),
        Op::Normalize {
            channel_order,
            mean,
            std,
        } => {
            let a = arg(0)?;
            let dev = a.device();
            let c = mean.len();
            let identity = channel_order.iter().enumerate().all(|(i, &o)| i == o);
            let a = if identity {
                a.clone()
            } else {
                let idx: Vec<u32> = channel_order.iter().map(|&o| o as u32).collect();
                a.index_select(&Tensor::new(idx.as_slice(), dev)?, 1)?
            };
            let m = Tensor::from_slice(mean, (1, c, 1, 1), dev)?;
            let s = Tensor::from_slice(std, (1, c, 1, 1), dev)?;
            a.broadcast_sub(&m)?.broadcast_div(&s)?
        }
        Op::Conv2d {
            weight,
            bias,
            kernel,
            stride,
            padding,
            groups,
            ..
        } => {
            let a = arg(0)?;
            let (_, _, h, w) = a.dims4()?;
            let op = Conv2dOp {
                stride: *stride,
                pads: padding.resolve(h, w, *kernel, *stride),
                groups: *groups,
                kernel_grad: mode == ParamMode::Trained,
            };
            let k = p(weight)?;
            let y = match kernels {
                Kernels::Advlens => a.contiguous()?.apply_op2(&k.contiguous()?, op)?,
                Kernels::Candle => op.forward_plain(a, k)?,
            };
            match bias {
                Some(b) => y.broadcast_add(&p(b)?.reshape((1, (), 1, 1))?)?,
                None => y,
            }
        }
        Op::BatchNorm {
            prefix,
            eps,
            naming,
            ..
        } => {
            let [g, b, m, v] = naming.batch_norm(prefix);
            let scale = p(&g)?.broadcast_div(&(p(&v)? + *eps as f64)?.sqrt()?)?;
            let shift = (p(&b)? - (p(&m)? * &scale)?)?;
            arg(0)?
                .broadcast_mul(&scale.reshape((1, (), 1, 1))?)?
                .broadcast_add(&shift.reshape((1, (), 1, 1))?)?
        }
        Op::Relu => relu::relu(arg(0)?)?,
        Op::Relu6 => arg(0)?.clamp(0f32, 6f32)?,
        Op::Add => (arg(0)? + arg(1)?)?,
        Op::MaxPool { .. } | Op::AvgPool { .. } => {
            let a = arg(0)?;
            let (_, _, h, w) = a.dims4()?;
            let op = PoolOp::from_op(op, h, w)
                .ok_or_else(|| candle_core::Error::Msg("not a pooling op".into()))?;
            on_cpu(a, |t| t.apply_op1(op.clone()))?
        }
        Op::GlobalAvgPool => arg(0)?.mean(3)?.mean(2)?,
        Op::Linear { weight, bias, .. } => {
            let y = arg(0)?.matmul(&p(weight)?.t()?)?;
            match bias {
                Some(b) => y.broadcast_add(p(b)?)?,
                None => y,
            }
        }
        Op::DenoiseOp {
            variant,
            theta,
            phi,
            ..
        } => {
            let squeeze = |name: &Option<String>| -> R<Option<Tensor>> {
                name.as_ref()
                    .map(|n| {
                        let t = p(n)?;
                        let (o, i, _, _) = t.dims4()?;
                        t.reshape((o, i))
                    })
                    .transpose()
            };
            let th = squeeze(theta)?;
            let ph = squeeze(phi)?;
            denoise::apply(*variant, arg(0)?, th.as_ref(), ph.as_ref())?
        }
    })
}
