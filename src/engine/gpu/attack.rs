//! The iterative attack loop on the device: every step's forward, loss, backward and update
//! recorded into a few submissions, with the per-step record (loss, distances, logits) read back
//! once at the end. Larger batches run in chunks like every other call.

use super::buffers::upload;
use super::context::GpuContext;
use super::dispatch::{Dispatch, grid};
use super::error::gpu_err;
use super::kernels::Entry;
use super::uniforms::AttackParams;
use super::{GpuEngine, R, concat};
use crate::array::Array;
use crate::engine::{EngineError, ForwardOptions, FusedLoop, FusedOutcome, FusedStep, check_input};

/// Attack steps recorded into one submission; cancellation is checked between submissions.
const STEPS_PER_SUBMIT: usize = 8;

impl GpuEngine {
    /// [`Self::fused`] on each chunk of the batch the device takes at once.
    pub(super) fn fused_chunked(
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
        let mut steps: Vec<Vec<FusedStep>> = vec![Vec::new(); spec.steps + 1];
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
        let out = self.net.graph.output;
        self.prepare(n)?;
        let Self {
            ctx,
            plan,
            readback,
            ..
        } = self;
        let device = &ctx.device;
        let x0 = upload(device, "clean images", x.data());
        let acc = upload(device, "momentum", &vec![0.0; x.len()]);
        let cls: Vec<f32> = classes.iter().map(|&c| c as f32).collect();
        let cls = upload(device, "classes", &cls);
        let row = n * (k + 3);
        let scratch = (spec.steps + 1) * row;
        let record = upload(device, "record", &vec![0.0; scratch + 3 * n]);
        let plan = plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
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
        let params = |step: usize, mode: u32| AttackParams {
            n: n as u32,
            k: k as u32,
            dim: dim as u32,
            step: step as u32,
            eps: spec.eps,
            alpha: spec.alpha,
            mu: spec.momentum.unwrap_or(0.0),
            dir: spec.direction,
            l2: spec.l2 as u32,
            momentum: spec.momentum.is_some() as u32,
            scratch: scratch as u32,
            mode,
        };
        let launch = |entry: Entry, step: usize, mode: u32, groups: [u32; 3]| {
            Dispatch::new(ctx, entry, &params(step, mode), &bufs, groups)
        };
        let per_example = [n as u32, 1, 1];
        let elements = grid(n * dim);
        ctx.queue
            .write_buffer(x_adv, 0, bytemuck::cast_slice(start.data()));
        let mut encoder = new_encoder(device);
        let mut in_flight = None;
        for s in 0..=spec.steps {
            let head = vec![
                launch(Entry::CrossEntropy, s, 0, [n.div_ceil(64) as u32, 1, 1])?,
                launch(Entry::Norms, s, 0, per_example)?,
            ];
            if s == spec.steps {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for d in plan.forward(bypass).iter().chain(&head) {
                    d.encode(&mut pass);
                }
                break;
            }
            if s > 0 && s % STEPS_PER_SUBMIT == 0 {
                submit(ctx, &mut encoder, &mut in_flight)?;
                if cancelled() {
                    return Err(EngineError::Cancelled);
                }
            }
            plan.clear_grads(&mut encoder, out, bypass);
            let tail = update(&launch, spec, s, n, elements)?;
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in plan.forward(bypass).iter().chain(&head) {
                d.encode(&mut pass);
            }
            for d in plan.backward(bypass).iter().chain(&tail) {
                d.encode(&mut pass);
            }
        }
        let mut data =
            readback.submit_and_read(ctx, encoder, &[(x_adv, x.len()), (&record, scratch)])?;
        let rec = data.pop().ok_or_else(|| gpu_err("record missing"))?;
        let adv = data.pop().ok_or_else(|| gpu_err("images missing"))?;
        let x_adv = Array::new(x.shape().to_vec(), adv).map_err(|e| gpu_err(e.to_string()))?;
        Ok(FusedOutcome {
            x_adv,
            steps: history(&rec, spec.steps, n, k),
        })
    }
}

fn new_encoder(device: &wgpu::Device) -> wgpu::CommandEncoder {
    device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("attack"),
    })
}

/// Hands the steps recorded in `encoder` to the GPU and starts a new encoder, keeping one
/// submission in flight: waits for the one before, so the host never runs far ahead.
fn submit(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    in_flight: &mut Option<wgpu::SubmissionIndex>,
) -> R<()> {
    let done = std::mem::replace(encoder, new_encoder(&ctx.device));
    let index = ctx.queue.submit([done.finish()]);
    if let Some(prev) = in_flight.replace(index) {
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(prev),
                timeout: None,
            })
            .map_err(|e| gpu_err(e.to_string()))?;
    }
    Ok(())
}

/// The launches after step `s`'s backward: momentum, the step itself and, for L2, the
/// projection, with the norms each needs first. `launch(entry, step, norms mode, groups)`.
fn update(
    launch: &impl Fn(Entry, usize, u32, [u32; 3]) -> R<Dispatch>,
    spec: &FusedLoop,
    s: usize,
    n: usize,
    elements: [u32; 3],
) -> R<Vec<Dispatch>> {
    let per_example = [n as u32, 1, 1];
    let mut tail = Vec::new();
    if spec.momentum.is_some() {
        tail.push(launch(Entry::Norms, s, 1, per_example)?);
        tail.push(launch(Entry::Momentum, s, 0, elements)?);
    }
    if spec.l2 {
        tail.push(launch(Entry::Norms, s, 2, per_example)?);
    }
    tail.push(launch(Entry::Update, s, 0, elements)?);
    if spec.l2 {
        tail.push(launch(Entry::Norms, s, 3, per_example)?);
        tail.push(launch(Entry::ProjectL2, s, 0, elements)?);
    }
    Ok(tail)
}

/// Every step's loss, distances and logits per example, from the record rows
/// `[loss, linf, l2, logits…]` at `(s·n + i)·(k + 3)`.
fn history(rec: &[f32], steps: usize, n: usize, k: usize) -> Vec<Vec<FusedStep>> {
    (0..=steps)
        .map(|s| {
            (0..n)
                .map(|i| {
                    let r = &rec[(s * n + i) * (k + 3)..][..k + 3];
                    FusedStep {
                        loss: r[0],
                        linf: r[1],
                        l2: r[2],
                        logits: r[3..].to_vec(),
                    }
                })
                .collect()
        })
        .collect()
}
