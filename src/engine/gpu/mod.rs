//! The gpu engine: runs the architecture description as WGSL compute kernels on a wgpu device
//! (Vulkan, Metal, DX12), forward with taps and the input gradient (backward-data only), plus the
//! whole iterative attack loop on the device ([`GpuEngine::iterate`](Engine::iterate)). Every
//! kernel is checked against the cpu engine (`tests/gpu.rs`).
//!
//! Data flows one way: [`kernels`] names the WGSL entry points and [`uniforms`] mirrors their
//! parameter blocks; the [`GpuContext`] compiles them once per device (`pipelines.rs`); `params.rs`
//! uploads a network's weights, `buffers.rs` allocates a batch's memory, and `plan.rs` records
//! every launch (`layers.rs`, `denoise/`, through `recorder.rs` and `dispatch.rs`) once per
//! batch size; this file and `attack.rs` replay the recorded launches and read the results back
//! (`readback.rs`).

mod apgd;
mod attack;
mod buffers;
pub mod context;
mod denoise;
mod dispatch;
mod error;
pub mod kernels;
mod layers;
mod params;
mod pipelines;
mod plan;
mod profile;
mod readback;
mod recorder;
pub mod uniforms;

use std::sync::Arc;

pub use context::{AdapterPolicy, GpuContext};
use dispatch::encode_all;
use error::gpu_err;
pub use kernels::{Entry, Shader};
use params::DeviceParams;
use plan::Plan;
pub use profile::{KernelTime, Phase, Profile, ProfileRow, StepLaunches};
use readback::Readback;

use super::{
    ApgdSession, ApgdSpec, Engine, EngineError, Forward, ForwardOptions, FusedLoop, FusedOutcome,
    Gradient, Loss, TapSelection, check_input, resolve_taps,
};
use crate::array::Array;
use crate::model::Network;

type R<T> = Result<T, EngineError>;

/// Joins per-chunk results along the batch.
fn concat(parts: Vec<Array>) -> R<Array> {
    Array::concat(&parts).map_err(|e| gpu_err(e.to_string()))
}

/// An array of `n` examples of shape `shape_tail`.
fn array(shape_tail: &[usize], n: usize, data: Vec<f32>) -> R<Array> {
    let mut shape = vec![n];
    shape.extend(shape_tail);
    Array::new(shape, data).map_err(|e| gpu_err(e.to_string()))
}

/// The wgpu-based engine.
pub struct GpuEngine {
    net: Arc<Network>,
    ctx: GpuContext,
    params: DeviceParams,
    /// Buffers and launches for the last batch size used.
    plan: Option<Plan>,
    readback: Readback,
}

impl GpuEngine {
    /// Uploads `net` to the device of `ctx`.
    pub fn new(net: Arc<Network>, ctx: GpuContext) -> R<Self> {
        let params = DeviceParams::upload(&ctx.device, &net)?;
        ctx.take_error()?;
        Ok(Self {
            net,
            ctx,
            params,
            plan: None,
            readback: Readback::default(),
        })
    }

    /// The most examples one pass takes: every buffer must fit the device's binding limit.
    /// Larger batches run in chunks of this size.
    pub fn max_batch(&self) -> usize {
        let limits = &self.ctx.limits;
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size) as usize;
        (limit / 4 / buffers::largest_per_example(&self.net)).max(1)
    }

    /// The example ranges a batch of `n` runs in.
    fn chunks(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        let m = self.max_batch();
        (0..n.div_ceil(m))
            .map(|c| c * m..((c + 1) * m).min(n))
            .collect()
    }

    /// The device context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Makes sure the plan is for a batch of `n` (building it when the size changed).
    fn prepare(&mut self, n: usize) -> R<()> {
        if self.plan.as_ref().map(Plan::batch) != Some(n) {
            // Free the old plan's buffers before allocating the new ones.
            self.plan = None;
            self.plan = Some(Plan::new(&self.ctx, &self.net, &self.params, n)?);
        }
        Ok(())
    }

    fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Runs the forward pass on `x` (already checked) and returns the logits and the requested
    /// taps.
    fn run_forward(&mut self, x: &Array, opts: &ForwardOptions) -> R<Forward> {
        let taps = resolve_taps(&self.net, &opts.taps)?;
        let n = x.batch();
        let bypass = opts.bypass_denoise;
        self.prepare(n)?;
        let mut encoder = self.encoder("forward");
        let Self {
            net,
            ctx,
            plan,
            readback,
            ..
        } = self;
        let plan = plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        let graph = &net.graph;
        ctx.queue
            .write_buffer(plan.value(0, bypass), 0, bytemuck::cast_slice(x.data()));
        encode_all(&mut encoder, plan.forward(bypass), "forward");
        let numel = |id: usize| n * graph.nodes[id].shape.iter().product::<usize>();
        let mut sources = vec![(plan.value(graph.output, bypass), numel(graph.output))];
        for (_, node) in &taps {
            sources.push((plan.value(*node, bypass), numel(*node)));
        }
        let mut data = readback
            .submit_and_read(ctx, encoder, &sources)?
            .into_iter();
        let logits = data.next().ok_or_else(|| gpu_err("logits missing"))?;
        let logits = array(&graph.nodes[graph.output].shape, n, logits)?;
        let mut out_taps = Vec::with_capacity(taps.len());
        for ((name, node), values) in taps.into_iter().zip(data) {
            out_taps.push((name, array(&graph.nodes[node].shape, n, values)?));
        }
        Ok(Forward {
            logits,
            taps: out_taps,
            seen: None,
        })
    }

    /// The forward pass and the input gradient of `loss` on `x` (already checked).
    fn run_input_grad(&mut self, x: &Array, loss: &Loss, opts: &ForwardOptions) -> R<Gradient> {
        let plain = ForwardOptions {
            taps: TapSelection::None,
            bypass_denoise: opts.bypass_denoise,
        };
        let fwd = self.run_forward(x, &plain)?;
        let (values, dz) = loss.evaluate(&fwd.logits)?;
        let bypass = opts.bypass_denoise;
        let out = self.net.graph.output;
        let mut encoder = self.encoder("input gradient");
        let Self {
            ctx,
            plan,
            readback,
            ..
        } = self;
        let plan = plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        ctx.queue
            .write_buffer(plan.grad(out, bypass), 0, bytemuck::cast_slice(dz.data()));
        plan.clear_grads(&mut encoder, out, bypass);
        encode_all(&mut encoder, plan.backward(bypass), "backward");
        let grad_buf = plan.grad(0, bypass);
        let mut data = readback.submit_and_read(ctx, encoder, &[(grad_buf, x.len())])?;
        let grad = data.pop().ok_or_else(|| gpu_err("gradient missing"))?;
        let grad = Array::new(x.shape().to_vec(), grad).map_err(|e| gpu_err(e.to_string()))?;
        Ok(Gradient {
            logits: fwd.logits,
            loss: values,
            grad,
        })
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        format!("gpu: {}", self.ctx.adapter_name())
    }

    fn network(&self) -> &Network {
        &self.net
    }

    fn forward(&mut self, x: &Array, opts: &ForwardOptions) -> R<Forward> {
        check_input(&self.net, x)?;
        let chunks = self.chunks(x.batch());
        if chunks.len() == 1 {
            return self.run_forward(x, opts);
        }
        let mut parts = Vec::with_capacity(chunks.len());
        for r in chunks {
            let idx: Vec<usize> = r.collect();
            parts.push(self.run_forward(&x.select(&idx), opts)?);
        }
        let logits = concat(parts.iter().map(|p| p.logits.clone()).collect())?;
        let mut taps = Vec::new();
        for (t, (name, _)) in parts[0].taps.iter().enumerate() {
            taps.push((
                name.clone(),
                concat(parts.iter().map(|p| p.taps[t].1.clone()).collect())?,
            ));
        }
        Ok(Forward {
            logits,
            taps,
            seen: None,
        })
    }

    fn input_grad(&mut self, x: &Array, loss: &Loss, opts: &ForwardOptions) -> R<Gradient> {
        check_input(&self.net, x)?;
        let chunks = self.chunks(x.batch());
        if chunks.len() == 1 {
            return self.run_input_grad(x, loss, opts);
        }
        let k = self.net.num_classes();
        let (mut logits, mut losses, mut grads) = (vec![], vec![], vec![]);
        for r in chunks {
            let idx: Vec<usize> = r.clone().collect();
            let g = self.run_input_grad(&x.select(&idx), &loss.slice(r, k), opts)?;
            logits.push(g.logits);
            losses.extend(g.loss);
            grads.push(g.grad);
        }
        Ok(Gradient {
            logits: concat(logits)?,
            loss: losses,
            grad: concat(grads)?,
        })
    }

    fn iterate(
        &mut self,
        x: &Array,
        start: &Array,
        classes: &[usize],
        spec: &FusedLoop,
        opts: &ForwardOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<R<FusedOutcome>> {
        Some(self.fused_chunked(x, start, classes, spec, opts, cancelled))
    }

    fn apgd_session<'a>(
        &'a mut self,
        x: &Array,
        start: &Array,
        loss: &Loss,
        sign: f32,
        spec: ApgdSpec,
        opts: &ForwardOptions,
    ) -> Option<R<Box<dyn ApgdSession + 'a>>> {
        let session = self.apgd_device(x, start, loss, sign, spec, opts)?;
        Some(session.map(|s| Box::new(s) as Box<dyn ApgdSession + 'a>))
    }
}
