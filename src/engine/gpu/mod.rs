//! The gpu engine: runs the architecture description as WGSL compute kernels on a wgpu device
//! (Vulkan, Metal, DX12), forward with taps and the input gradient (backward-data only), plus the
//! whole iterative attack loop on the device ([`GpuEngine::iterate`]). Every kernel is checked
//! against the cpu engine (`tests/gpu.rs`).

pub mod context;
pub mod kernels;
pub mod plan;

use std::sync::Arc;

pub use context::{AdapterPolicy, GpuContext};
use kernels::{Kernels, Shader, encode_all, f, grid};
use plan::{DeviceParams, Plan, upload};

use super::{
    Engine, EngineError, Forward, ForwardOptions, FusedLoop, FusedOutcome, Gradient, Loss,
    check_input, resolve_taps,
};
use crate::array::Array;
use crate::model::Network;

type R<T> = Result<T, EngineError>;

/// Attack steps recorded into one submission; cancellation is checked between submissions.
const STEPS_PER_SUBMIT: usize = 8;

fn gpu_err(message: impl Into<String>) -> EngineError {
    EngineError::Backend {
        engine: "gpu",
        message: message.into(),
    }
}

/// Joins per-chunk results along the batch.
fn concat(parts: Vec<Array>) -> R<Array> {
    Array::concat(&parts).map_err(|e| gpu_err(e.to_string()))
}

/// The wgpu-based engine.
pub struct GpuEngine {
    net: Arc<Network>,
    kernels: Kernels,
    params: DeviceParams,
    plan: Option<Plan>,
}

impl GpuEngine {
    /// Uploads `net` to the device of `ctx`.
    pub fn new(net: Arc<Network>, ctx: GpuContext) -> R<Self> {
        let params = DeviceParams::upload(&ctx.device, &net)?;
        ctx.take_error()?;
        Ok(Self {
            net,
            kernels: Kernels::new(ctx),
            params,
            plan: None,
        })
    }

    /// The most examples one pass takes: every buffer must fit the device's binding limit.
    /// Larger batches run in chunks of this size.
    pub fn max_batch(&self) -> usize {
        let limits = &self.kernels.context().limits;
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size) as usize;
        (limit / 4 / plan::largest_per_example(&self.net)).max(1)
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
        self.kernels.context()
    }

    fn ctx(&self) -> GpuContext {
        self.kernels.context().clone()
    }

    fn plan(&mut self, n: usize) -> R<&Plan> {
        if self.plan.as_ref().map(|p| p.batch) != Some(n) {
            self.plan = None;
            let plan = Plan::new(&mut self.kernels, &self.net, &self.params, n)?;
            self.plan = Some(plan);
        }
        self.plan
            .as_ref()
            .ok_or_else(|| gpu_err("plan missing after creation"))
    }

    /// Copies `sources` (buffer, float count) back to the host after `encoder`'s work.
    fn submit_and_read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        sources: &[(&wgpu::Buffer, usize)],
    ) -> R<Vec<Vec<f32>>> {
        let ctx = self.kernels.context();
        let staging: Vec<wgpu::Buffer> = sources
            .iter()
            .map(|&(src, len)| {
                let b = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: (len.max(1) * 4) as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(src, 0, &b, 0, (len * 4) as u64);
                b
            })
            .collect();
        ctx.queue.submit([encoder.finish()]);
        for b in &staging {
            b.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        }
        ctx.wait()?;
        let mut out = Vec::with_capacity(staging.len());
        for (b, &(_, len)) in staging.iter().zip(sources) {
            let data = {
                let view = b
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| gpu_err(format!("reading results back: {e}")))?;
                bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec()
            };
            b.unmap();
            out.push(data);
        }
        Ok(out)
    }

    fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.kernels
            .context()
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    fn array(&self, shape_tail: &[usize], n: usize, data: Vec<f32>) -> R<Array> {
        let mut shape = vec![n];
        shape.extend(shape_tail);
        Array::new(shape, data).map_err(|e| gpu_err(e.to_string()))
    }

    /// Runs the forward pass on `x` (already checked) and returns the logits and the requested
    /// taps.
    fn run_forward(&mut self, x: &Array, opts: &ForwardOptions) -> R<Forward> {
        let taps = resolve_taps(&self.net, &opts.taps)?;
        let n = x.batch();
        let net = self.net.clone();
        let graph = &net.graph;
        let bypass = opts.bypass_denoise;
        let ctx = self.ctx();
        self.plan(n)?;
        let plan = self.plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        ctx.queue
            .write_buffer(&plan.values[0], 0, bytemuck::cast_slice(x.data()));
        let mut encoder = self.encoder("forward");
        encode_all(&mut encoder, plan.forward(bypass), "forward");
        let numel = |id: usize| n * graph.nodes[id].shape.iter().product::<usize>();
        let mut sources = vec![(plan.value(graph.output, bypass), numel(graph.output))];
        for (_, node) in &taps {
            sources.push((plan.value(*node, bypass), numel(*node)));
        }
        let mut data = self.submit_and_read(encoder, &sources)?.into_iter();
        let logits = data.next().ok_or_else(|| gpu_err("logits missing"))?;
        let logits = self.array(&graph.nodes[graph.output].shape, n, logits)?;
        let mut out_taps = Vec::with_capacity(taps.len());
        for ((name, node), values) in taps.into_iter().zip(data) {
            out_taps.push((name, self.array(&graph.nodes[node].shape, n, values)?));
        }
        Ok(Forward {
            logits,
            taps: out_taps,
        })
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        format!("gpu: {}", self.kernels.context().adapter_name())
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
        Ok(Forward { logits, taps })
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
}

impl GpuEngine {
    fn fused_chunked(
        &mut self,
        x: &Array,
        start: &Array,
        classes: &[usize],
        spec: &FusedLoop,
        opts: &ForwardOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> R<FusedOutcome> {
        check_input(&self.net, x)?;
        check_input(&self.net, start)?;
        let chunks = self.chunks(x.batch());
        if chunks.len() == 1 {
            return self.fused(x, start, classes, spec, opts, cancelled);
        }
        let mut advs = Vec::new();
        let mut steps: Vec<Vec<super::FusedStep>> = vec![Vec::new(); spec.steps + 1];
        for r in chunks {
            let idx: Vec<usize> = r.clone().collect();
            let cls = classes.get(r).unwrap_or_default();
            let out = self.fused(
                &x.select(&idx),
                &start.select(&idx),
                cls,
                spec,
                opts,
                cancelled,
            )?;
            advs.push(out.x_adv);
            for (all, part) in steps.iter_mut().zip(out.steps) {
                all.extend(part);
            }
        }
        Ok(FusedOutcome {
            x_adv: concat(advs)?,
            steps,
        })
    }

    fn run_input_grad(&mut self, x: &Array, loss: &Loss, opts: &ForwardOptions) -> R<Gradient> {
        let plain = ForwardOptions {
            taps: super::TapSelection::None,
            bypass_denoise: opts.bypass_denoise,
        };
        let fwd = self.run_forward(x, &plain)?;
        let (values, dz) = loss.evaluate(&fwd.logits)?;
        let n = x.batch();
        let net = self.net.clone();
        let out = net.graph.output;
        let bypass = opts.bypass_denoise;
        let ctx = self.ctx();
        self.plan(n)?;
        let plan = self.plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        ctx.queue
            .write_buffer(plan.grad(out, bypass), 0, bytemuck::cast_slice(dz.data()));
        let mut encoder = self.encoder("input gradient");
        plan.clear_grads(&mut encoder, out, bypass);
        encode_all(&mut encoder, plan.backward(bypass), "backward");
        let grad_buf = plan.grad(0, bypass);
        let mut data = self.submit_and_read(encoder, &[(grad_buf, x.len())])?;
        let grad =
            Array::new(x.shape().to_vec(), data.remove(0)).map_err(|e| gpu_err(e.to_string()))?;
        Ok(Gradient {
            logits: fwd.logits,
            loss: values,
            grad,
        })
    }

    /// The iterative attack loop on the device: `spec.steps` updates from `start`, recording the
    /// loss, logits and distances at every step, reading back only at the end. `x` and `start`
    /// are checked by the caller.
    fn fused(
        &mut self,
        x: &Array,
        start: &Array,
        classes: &[usize],
        spec: &FusedLoop,
        opts: &ForwardOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> R<FusedOutcome> {
        let n = x.batch();
        let k = self.net.num_classes();
        if start.shape() != x.shape() || classes.len() != n {
            return Err(gpu_err("start, classes and images do not match"));
        }
        if let Some(&c) = classes.iter().find(|&&c| c >= k) {
            return Err(EngineError::Loss(format!(
                "class {c} is out of range for {k} logits"
            )));
        }
        let dim = x.example_len();
        let bypass = opts.bypass_denoise;
        let net = self.net.clone();
        let out = net.graph.output;
        let ctx = self.ctx();
        self.plan(n)?;
        let device = ctx.device.clone();
        let x0 = upload(&device, "clean images", x.data());
        let acc = upload(&device, "momentum", &vec![0.0; x.len()]);
        let cls: Vec<f32> = classes.iter().map(|&c| c as f32).collect();
        let cls = upload(&device, "classes", &cls);
        let row = n * (k + 3);
        let scratch = (spec.steps + 1) * row;
        let record = upload(&device, "record", &vec![0.0; scratch + 3 * n]);
        let plan = self.plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        let x_adv = plan.value(0, bypass);
        let grad = plan.grad(0, bypass);
        let logits = plan.value(out, bypass);
        let dz = plan.grad(out, bypass);
        let bufs = [
            Some(x_adv),
            Some(&x0),
            Some(grad),
            Some(&acc),
            Some(logits),
            Some(dz),
            Some(&cls),
            Some(&record),
        ];
        let words = |step: usize, mode: u32| -> Vec<u32> {
            vec![
                n as u32,
                k as u32,
                dim as u32,
                step as u32,
                f(spec.eps),
                f(spec.alpha),
                f(spec.momentum.unwrap_or(0.0)),
                f(spec.direction),
                spec.l2 as u32,
                spec.momentum.is_some() as u32,
                scratch as u32,
                mode,
            ]
        };
        let kernels = &mut self.kernels;
        let mut launch = |entry: &'static str, step: usize, mode: u32, groups: [u32; 3]| {
            kernels.dispatch(Shader::Attack, entry, &words(step, mode), &bufs, groups)
        };
        let per_example = [n as u32, 1, 1];
        let elements = grid(n * dim);
        ctx.queue
            .write_buffer(x_adv, 0, bytemuck::cast_slice(start.data()));
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("attack"),
        });
        let mut in_flight = None;
        for s in 0..=spec.steps {
            let head = vec![
                launch("cross_entropy", s, 0, [n.div_ceil(64) as u32, 1, 1])?,
                launch("norms", s, 0, per_example)?,
            ];
            if s == spec.steps {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for d in plan.forward(bypass).iter().chain(&head) {
                    d.encode(&mut pass);
                }
                break;
            }
            if s > 0 && s % STEPS_PER_SUBMIT == 0 {
                // Hand the recorded steps to the GPU and check for cancellation meanwhile.
                let done = std::mem::replace(
                    &mut encoder,
                    device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("attack"),
                    }),
                );
                let index = ctx.queue.submit([done.finish()]);
                // Keep one submission in flight: wait for the one before it.
                if let Some(prev) = in_flight.replace(index) {
                    ctx.device
                        .poll(wgpu::PollType::Wait {
                            submission_index: Some(prev),
                            timeout: None,
                        })
                        .map_err(|e| gpu_err(e.to_string()))?;
                }
                if cancelled() {
                    return Err(EngineError::Cancelled);
                }
            }
            plan.clear_grads(&mut encoder, out, bypass);
            let mut tail = Vec::new();
            if spec.momentum.is_some() {
                tail.push(launch("norms", s, 1, per_example)?);
                tail.push(launch("momentum", s, 0, elements)?);
            }
            if spec.l2 {
                tail.push(launch("norms", s, 2, per_example)?);
            }
            tail.push(launch("update", s, 0, elements)?);
            if spec.l2 {
                tail.push(launch("norms", s, 3, per_example)?);
                tail.push(launch("project_l2", s, 0, elements)?);
            }
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in plan.forward(bypass).iter().chain(&head) {
                d.encode(&mut pass);
            }
            for d in plan.backward(bypass).iter().chain(&tail) {
                d.encode(&mut pass);
            }
        }
        let mut data = self.submit_and_read(encoder, &[(x_adv, x.len()), (&record, scratch)])?;
        let rec = data.pop().ok_or_else(|| gpu_err("record missing"))?;
        let adv = data.pop().ok_or_else(|| gpu_err("images missing"))?;
        let x_adv = Array::new(x.shape().to_vec(), adv).map_err(|e| gpu_err(e.to_string()))?;
        let steps = (0..=spec.steps)
            .map(|s| {
                (0..n)
                    .map(|i| {
                        let r = &rec[(s * n + i) * (k + 3)..][..k + 3];
                        super::FusedStep {
                            loss: r[0],
                            linf: r[1],
                            l2: r[2],
                            logits: r[3..].to_vec(),
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(FusedOutcome { x_adv, steps })
    }
}
