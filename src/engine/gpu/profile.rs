//! Where the gpu engine's time goes: one forward pass and input gradient with every recorded
//! launch in its own compute pass between two timestamp queries (wgpu's `TIMESTAMP_QUERY`,
//! requested wherever the adapter offers it), so each kernel's device time is known by entry
//! point, shader and graph node; plus how many launches and buffer clears one step of the
//! device-side attack loop records. Comparing the kernels' sum with the wall-clock time of the
//! same pass gives the cost of everything else (submission, synchronisation, per-launch
//! overhead). Separate passes add a little per launch, so the sum is an upper bound on what
//! the kernels cost inside one pass.

use std::collections::BTreeMap;

use super::dispatch::Dispatch;
use super::error::gpu_err;
use super::{GpuEngine, R};
use crate::array::Array;
use crate::engine::{ForwardOptions, Loss, check_input};

/// Timestamp queries one query set holds (wgpu's limit), two per launch.
const MAX_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// Which pass a launch belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The forward pass.
    Forward,
    /// The input gradient (backward-data) pass.
    Backward,
}

/// One launch's device time.
#[derive(Clone, Debug)]
pub struct KernelTime {
    /// Forward or backward.
    pub phase: Phase,
    /// The WGSL file and entry point, `matmul::main`.
    pub entry: String,
    /// The WGSL file it is in.
    pub shader: &'static str,
    /// The graph node it computes (`-` for launches that belong to no node).
    pub node: String,
    /// Device time in milliseconds.
    pub ms: f64,
}

/// The launches one step of the device-side attack loop (PGD, L∞, no momentum) records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepLaunches {
    /// Forward-pass launches.
    pub forward: usize,
    /// Backward-pass launches.
    pub backward: usize,
    /// The loss, the distances and the update.
    pub attack: usize,
    /// Gradient buffers cleared before the backward pass.
    pub clears: usize,
}

impl StepLaunches {
    /// Kernel launches in all.
    pub fn launches(&self) -> usize {
        self.forward + self.backward + self.attack
    }
}

/// A profile of one forward pass and input gradient.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Every launch in execution order.
    pub kernels: Vec<KernelTime>,
    /// What one attack step records.
    pub step: StepLaunches,
}

/// A row of an aggregated profile.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    /// What the row groups by (an entry point, a shader file, a node).
    pub name: String,
    /// Launches.
    pub launches: usize,
    /// Device time in milliseconds.
    pub ms: f64,
}

impl Profile {
    /// The device time of every launch together, in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.kernels.iter().map(|k| k.ms).sum()
    }

    /// The profile whose every launch takes its median time over `runs` (profiles of the same
    /// pass); `None` when there are none or they differ in their launches.
    pub fn median(runs: &[Profile]) -> Option<Profile> {
        let first = runs.first()?;
        if runs
            .iter()
            .any(|r| r.kernels.len() != first.kernels.len() || r.step != first.step)
        {
            return None;
        }
        let mut out = first.clone();
        for (i, k) in out.kernels.iter_mut().enumerate() {
            let mut t: Vec<f64> = runs.iter().map(|r| r.kernels[i].ms).collect();
            t.sort_by(f64::total_cmp);
            k.ms = t[t.len() / 2];
        }
        Some(out)
    }

    /// Time per WGSL entry point, the most expensive first.
    pub fn by_entry(&self) -> Vec<ProfileRow> {
        group(&self.kernels, |k| k.entry.clone())
    }

    /// Time per WGSL file (a kernel family), the most expensive first.
    pub fn by_shader(&self) -> Vec<ProfileRow> {
        group(&self.kernels, |k| k.shader.to_string())
    }

    /// Time per graph node, forward and backward together, the most expensive first.
    pub fn by_node(&self) -> Vec<ProfileRow> {
        group(&self.kernels, |k| k.node.clone())
    }
}

/// The kernels grouped by `key`, sorted by time, the largest first.
fn group(kernels: &[KernelTime], key: impl Fn(&KernelTime) -> String) -> Vec<ProfileRow> {
    let mut rows: BTreeMap<String, ProfileRow> = BTreeMap::new();
    for k in kernels {
        let name = key(k);
        let row = rows.entry(name.clone()).or_insert(ProfileRow {
            name,
            launches: 0,
            ms: 0.0,
        });
        row.launches += 1;
        row.ms += k.ms;
    }
    let mut rows: Vec<ProfileRow> = rows.into_values().collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

impl GpuEngine {
    /// Whether the device can time kernels (it was created with `TIMESTAMP_QUERY`).
    pub fn can_profile(&self) -> bool {
        self.ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// [`GpuEngine::can_profile`] as an error that names the adapter when it cannot.
    pub fn require_profiling(&self) -> R<()> {
        if self.can_profile() {
            return Ok(());
        }
        Err(gpu_err(format!(
            "{} offers no timestamp queries (wgpu's TIMESTAMP_QUERY): its kernels cannot be timed",
            self.ctx.adapter_name()
        )))
    }

    /// Times every launch of one forward pass and input gradient of `loss` at `x` (one chunk:
    /// the batch must fit [`GpuEngine::max_batch`]).
    pub fn profile(&mut self, x: &Array, loss: &Loss, opts: &ForwardOptions) -> R<Profile> {
        check_input(&self.net, x)?;
        self.require_profiling()?;
        if x.batch() > self.max_batch() {
            return Err(gpu_err(format!(
                "a profile runs one chunk: at most {} examples on this device",
                self.max_batch()
            )));
        }
        // Runs the pass once untimed: the plan is built, the input is on the device (no launch
        // writes it) and the logits give the loss's gradient.
        let plain = ForwardOptions {
            bypass_denoise: opts.bypass_denoise,
            ..ForwardOptions::default()
        };
        let fwd = self.run_forward(x, &plain)?;
        let (_, dz) = loss.evaluate(&fwd.logits)?;
        let bypass = opts.bypass_denoise;
        let out = self.net.graph.output;
        let plan = self.plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        let mut kernels = self.time(Phase::Forward, plan.forward(bypass), None)?;
        self.ctx
            .queue
            .write_buffer(plan.grad(out, bypass), 0, bytemuck::cast_slice(dz.data()));
        kernels.extend(self.time(Phase::Backward, plan.backward(bypass), Some((out, bypass)))?);
        let step = StepLaunches {
            forward: plan.forward(bypass).len(),
            backward: plan.backward(bypass).len(),
            // Cross-entropy, the distances, the update (L∞ without momentum).
            attack: 3,
            clears: plan.cleared_grads(out, bypass),
        };
        Ok(Profile { kernels, step })
    }

    /// Runs `launches`, each in its own timed pass, in chunks that fit one query set; with
    /// `clear`, the gradients are cleared first (as a backward pass needs).
    fn time(
        &self,
        phase: Phase,
        launches: &[Dispatch],
        clear: Option<(usize, bool)>,
    ) -> R<Vec<KernelTime>> {
        let ctx = &self.ctx;
        let plan = self.plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        let per_set = (MAX_QUERIES / 2) as usize;
        let period = f64::from(ctx.queue.get_timestamp_period());
        let mut out = Vec::with_capacity(launches.len());
        let mut readback = super::readback::Readback::default();
        for (c, chunk) in launches.chunks(per_set).enumerate() {
            let queries = (2 * chunk.len()) as u32;
            let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            });
            let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile timestamps"),
                size: u64::from(queries) * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("profile"),
                });
            if let (0, Some((output, bypass))) = (c, clear) {
                plan.clear_grads(&mut encoder, output, bypass);
            }
            for (i, d) in chunk.iter().enumerate() {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(d.entry().name()),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                d.encode(&mut pass);
            }
            encoder.resolve_query_set(&set, 0..queries, &resolved, 0);
            let words = readback
                .submit_and_read(ctx, encoder, &[(&resolved, 2 * queries as usize)])?
                .pop()
                .ok_or_else(|| gpu_err("timestamps missing"))?;
            // Each timestamp is a little-endian u64 read back as two f32 words.
            let ticks: Vec<u64> = words
                .chunks_exact(2)
                .map(|w| u64::from(w[0].to_bits()) | (u64::from(w[1].to_bits()) << 32))
                .collect();
            for (d, pair) in chunk.iter().zip(ticks.chunks_exact(2)) {
                let node = d
                    .node()
                    .and_then(|i| self.net.graph.nodes.get(i))
                    .map_or_else(|| "-".to_string(), |n| n.name.clone());
                out.push(KernelTime {
                    phase,
                    entry: entry_label(d),
                    shader: d.entry().shader().file_name(),
                    node,
                    ms: pair[1].saturating_sub(pair[0]) as f64 * period / 1e6,
                });
            }
        }
        Ok(out)
    }
}

/// `elementwise::relu_forward`: the file's stem and the entry point.
fn entry_label(d: &Dispatch) -> String {
    let file = d.entry().shader().file_name();
    format!(
        "{}::{}",
        file.strip_suffix(".wgsl").unwrap_or(file),
        d.entry().name()
    )
}
