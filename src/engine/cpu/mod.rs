//! The cpu engine: runs the architecture description on candle (the reference engine). With the
//! `cuda` or `metal` cargo features, candle's GPU devices can be selected too.
//!
//! Weights are constants: they are plain tensors, never variables, and the convolution's custom
//! backward skips the kernel gradient, so an input gradient costs one forward and one
//! backward-data pass.

pub mod batchnorm;
pub mod conv;
pub mod conv_kernel;
pub mod denoise;
pub mod gemm;
pub mod nonlocal;
pub mod plan;
pub mod pool;
pub mod relu;
pub mod softmax;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use super::{
    Engine, EngineError, Forward, ForwardOptions, Gradient, Loss, check_input, resolve_taps,
};
use crate::array::Array;
use crate::model::Network;
use crate::model::graph::{Graph, NodeId, Op};
use conv::Conv2dOp;
use pool::PoolOp;

type R<T> = candle_core::Result<T>;

/// Wraps a candle error as an engine error.
pub(crate) fn backend(e: candle_core::Error) -> EngineError {
    EngineError::Backend {
        engine: "cpu",
        message: e.to_string(),
    }
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

/// How the cpu engine executes the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Executor {
    /// Host buffers reused across calls and a hand-written backward-data pass per node (the
    /// default on the CPU).
    #[default]
    Planned,
    /// Candle tensors and candle's autograd (used on candle's GPU devices, and as the reference
    /// the planned executor is tested and benchmarked against).
    Autograd,
    /// Candle's autograd with candle's own convolution: stock candle, the baseline in
    /// benchmarks.
    Stock,
}

/// The candle-based engine.
pub struct CpuEngine {
    net: Arc<Network>,
    device: Device,
    params: HashMap<String, Tensor>,
    executor: Executor,
    planned: Option<plan::Planned>,
}

impl CpuEngine {
    /// Loads `net` onto the CPU.
    pub fn new(net: Arc<Network>) -> Result<Self, EngineError> {
        Self::with_device(net, Device::Cpu)
    }

    /// Loads `net` onto a candle device (CPU, or CUDA/Metal when built with those features).
    pub fn with_device(net: Arc<Network>, device: Device) -> Result<Self, EngineError> {
        let mut params = HashMap::new();
        for (name, a) in &net.weights {
            let t = Tensor::from_slice(a.data(), a.shape(), &device).map_err(backend)?;
            params.insert(name.clone(), t);
        }
        let executor = if device.is_cpu() {
            Executor::Planned
        } else {
            Executor::Autograd
        };
        Ok(Self {
            net,
            device,
            params,
            executor,
            planned: None,
        })
    }

    /// Chooses the executor (the planned one needs the CPU device).
    pub fn with_executor(mut self, executor: Executor) -> Self {
        if self.device.is_cpu() {
            self.executor = executor;
        }
        self
    }

    fn run_options(&self, opts: &ForwardOptions) -> RunOptions {
        RunOptions {
            bypass_denoise: opts.bypass_denoise,
            mode: ParamMode::Frozen,
            stock_conv: self.executor == Executor::Stock,
            bn_batch_stats: false,
        }
    }

    /// The executor in use.
    pub fn executor(&self) -> Executor {
        self.executor
    }

    fn planned(&mut self) -> Result<&mut plan::Planned, EngineError> {
        if self.planned.is_none() {
            self.planned = Some(plan::Planned::new(&self.net).map_err(backend)?);
        }
        self.planned.as_mut().ok_or_else(|| EngineError::Backend {
            engine: "cpu",
            message: "planned executor missing".into(),
        })
    }

    fn planned_forward(&mut self, x: &Array, bypass: bool) -> Result<(), EngineError> {
        check_input(&self.net, x)?;
        let net = self.net.clone();
        self.planned()?
            .forward(&net.graph, x.data(), x.batch(), bypass)
            .map_err(backend)
    }

    fn planned_array(&mut self, node: NodeId, n: usize) -> Result<Array, EngineError> {
        let mut shape = vec![n];
        shape.extend(&self.net.graph.nodes[node].shape);
        let data = self.planned()?.value(node).to_vec();
        Array::new(shape, data).map_err(|e| EngineError::Backend {
            engine: "cpu",
            message: e.to_string(),
        })
    }

    /// The candle device in use.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn input_tensor(&self, x: &Array) -> Result<Tensor, EngineError> {
        check_input(&self.net, x)?;
        Tensor::from_slice(x.data(), x.shape(), &self.device).map_err(backend)
    }
}

/// Copies a candle tensor to a host array.
pub fn to_array(t: &Tensor) -> Result<Array, EngineError> {
    let shape = t.dims().to_vec();
    let data = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(backend)?;
    Array::new(shape, data).map_err(|e| EngineError::Backend {
        engine: "cpu",
        message: e.to_string(),
    })
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
    /// Use candle's own convolution (whose backward always forms the kernel gradient) instead of
    /// advlens's; the "before" path in benchmarks.
    pub stock_conv: bool,
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
        stock_conv,
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
                        let (y, st) = batch_norm_train(&args[0], names, *eps, &p, stock_conv)?;
                        stats.push(st);
                        y
                    }
                    _ => eval_node(&node.op, &args, &p, x, mode, stock_conv)?,
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
/// advlens's fused op on the CPU, composed candle ops elsewhere or when `composed` is set (the
/// stock-candle baseline).
fn batch_norm_train<'a>(
    a: &Tensor,
    names: [String; 4],
    eps: f32,
    p: &dyn Fn(&str) -> R<&'a Tensor>,
    composed: bool,
) -> R<(Tensor, BnBatchStats)> {
    let [g, b, _, _] = names.clone();
    let (n, c, h, w) = a.dims4()?;
    let count = n * h * w;
    if a.device().is_cpu() && !composed {
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
    stock_conv: bool,
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
            let y = if a.device().is_cpu() && !stock_conv {
                a.contiguous()?.apply_op2(&k.contiguous()?, op)?
            } else {
                op.forward_plain(a, k)?
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
            denoise::on_cpu(a, |t| t.apply_op1(op.clone()))?
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

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        match &self.device {
            Device::Cpu => format!(
                "cpu ({:?} executor, {} threads)",
                self.executor,
                rayon::current_num_threads()
            ),
            other => format!("cpu engine on candle {:?}", other.location()),
        }
    }

    fn network(&self) -> &Network {
        &self.net
    }

    fn forward(&mut self, x: &Array, opts: &ForwardOptions) -> Result<Forward, EngineError> {
        let taps = resolve_taps(&self.net, &opts.taps)?;
        if self.executor == Executor::Planned {
            self.planned_forward(x, opts.bypass_denoise)?;
            let logits = self.planned_array(self.net.graph.output, x.batch())?;
            let mut out = Vec::with_capacity(taps.len());
            for (name, node) in taps {
                out.push((name, self.planned_array(node, x.batch())?));
            }
            return Ok(Forward { logits, taps: out });
        }
        let xt = self.input_tensor(x)?;
        let graph = &self.net.graph;
        let mut keep: Vec<NodeId> = taps.iter().map(|(_, n)| *n).collect();
        keep.push(graph.output);
        let values =
            run_graph(graph, &self.params, &xt, &keep, self.run_options(opts)).map_err(backend)?;
        let get = |n: NodeId| {
            values[n].as_ref().ok_or_else(|| EngineError::Backend {
                engine: "cpu",
                message: format!("node {n} was not kept"),
            })
        };
        let logits = to_array(get(graph.output)?)?;
        let mut out = Vec::with_capacity(taps.len());
        for (name, node) in taps {
            out.push((name, to_array(get(node)?)?));
        }
        Ok(Forward { logits, taps: out })
    }

    fn input_grad(
        &mut self,
        x: &Array,
        loss: &Loss,
        opts: &ForwardOptions,
    ) -> Result<Gradient, EngineError> {
        if self.executor == Executor::Planned {
            self.planned_forward(x, opts.bypass_denoise)?;
            let output = self.net.graph.output;
            let logits = self.planned_array(output, x.batch())?;
            let (values, dz) = loss.evaluate(&logits)?;
            let net = self.net.clone();
            let planned = self.planned()?;
            planned
                .input_grad(&net.graph, output, dz.data())
                .map_err(backend)?;
            let grad =
                Array::new(x.shape().to_vec(), planned.input_gradient().to_vec()).map_err(|e| {
                    EngineError::Backend {
                        engine: "cpu",
                        message: e.to_string(),
                    }
                })?;
            return Ok(Gradient {
                logits,
                loss: values,
                grad,
            });
        }
        let xt = self.input_tensor(x)?;
        let xv = Var::from_tensor(&xt).map_err(backend)?;
        let graph = &self.net.graph;
        let logits_t = run_logits(graph, &self.params, xv.as_tensor(), self.run_options(opts))?;
        let logits = to_array(&logits_t)?;
        let (values, dz) = loss.evaluate(&logits)?;
        let grads = backward_from(&logits_t, &dz)?;
        let grad = match grads.get(xv.as_tensor()) {
            Some(g) => to_array(g)?,
            // The loss does not depend on the input (e.g. a clamped margin everywhere).
            None => Array::zeros(x.shape().to_vec()),
        };
        Ok(Gradient {
            logits,
            loss: values,
            grad,
        })
    }
}
