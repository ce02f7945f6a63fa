//! [`CpuEngine`]: the [`Engine`] on candle's devices, with the planned executor on the CPU and
//! the graph interpreter under candle's autograd elsewhere (and as the CPU's reference).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};

use super::interpreter::{Kernels, ParamMode, RunOptions, backward_from, run_graph, run_logits};
use super::plan;
use super::tensor::{backend, to_array};
use crate::array::Array;
use crate::engine::{
    Engine, EngineError, Forward, ForwardOptions, Gradient, Loss, check_input, resolve_taps,
};
use crate::model::Network;
use crate::model::NodeId;

/// How the cpu engine executes the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Executor {
    /// Host buffers reused across calls and a hand-written backward-data pass per node (the
    /// default on the CPU).
    #[default]
    Planned,
    /// The graph interpreter under candle's autograd (used on candle's GPU devices, and as the
    /// reference the planned executor is tested and benchmarked against).
    Autograd,
}

/// The candle-based engine.
pub struct CpuEngine {
    net: Arc<Network>,
    device: Device,
    params: HashMap<String, Tensor>,
    executor: Executor,
    kernels: Kernels,
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
            kernels: Kernels::for_device(&device),
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

    /// Chooses the autograd executor's convolution and batch norm on the CPU ([`Kernels::Candle`]
    /// runs what CUDA and Metal run; other devices have only candle's).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        if self.device.is_cpu() {
            self.kernels = kernels;
        }
        self
    }

    fn run_options(&self, opts: &ForwardOptions) -> RunOptions {
        RunOptions {
            bypass_denoise: opts.bypass_denoise,
            mode: ParamMode::Frozen,
            kernels: self.kernels,
            bn_batch_stats: false,
        }
    }

    /// The executor in use.
    pub fn executor(&self) -> Executor {
        self.executor
    }

    /// The kernels the autograd executor runs.
    pub fn kernels(&self) -> Kernels {
        self.kernels
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

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        match &self.device {
            Device::Cpu => {
                let threads = rayon::current_num_threads();
                match self.executor {
                    Executor::Planned => format!("cpu (Planned executor, {threads} threads)"),
                    Executor::Autograd => format!(
                        "cpu (Autograd executor, {:?} kernels, {threads} threads)",
                        self.kernels
                    ),
                }
            }
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
            return Ok(Forward {
                logits,
                taps: out,
                seen: None,
            });
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
        Ok(Forward {
            logits,
            taps: out,
            seen: None,
        })
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
