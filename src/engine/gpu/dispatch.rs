//! A recorded kernel launch: a compiled entry point, a bind group (its parameter block and
//! storage buffers) and a workgroup count, created once per (network, batch) and replayed on
//! every call.

use wgpu::util::DeviceExt as _;

use super::context::GpuContext;
use super::error::gpu_err;
use super::kernels::Entry;
use super::uniforms::Uniform;
use crate::engine::EngineError;
use crate::model::NodeId;

/// One recorded kernel launch.
pub struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: [u32; 3],
    entry: Entry,
    /// The graph node the launch computes, for profiles.
    node: Option<NodeId>,
}

impl Dispatch {
    /// Records a launch of `entry` with `params` and storage buffers for bindings 1, 2, …
    /// (`None` leaves a slot unused).
    pub fn new<P: Uniform>(
        ctx: &GpuContext,
        entry: Entry,
        params: &P,
        buffers: &[Option<&wgpu::Buffer>],
        groups: [u32; 3],
    ) -> Result<Self, EngineError> {
        let name = entry.name();
        if entry.shader() != P::SHADER {
            return Err(gpu_err(format!(
                "{name} is in {}, not given {}'s parameters",
                entry.shader().file_name(),
                P::SHADER.file_name()
            )));
        }
        let max = ctx.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(gpu_err(format!(
                "{name}: {groups:?} workgroups exceed the device's limit of {max} per dimension; use a smaller batch"
            )));
        }
        let kernel = ctx.kernel(entry)?;
        if buffers.len() > kernel.placeholders.len() {
            return Err(gpu_err(format!(
                "{name}: {} storage buffers for {} slots",
                buffers.len(),
                kernel.placeholders.len()
            )));
        }
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(name),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (slot, placeholder) in kernel.placeholders.iter().enumerate() {
            let buf = buffers.get(slot).copied().flatten().unwrap_or(placeholder);
            entries.push(wgpu::BindGroupEntry {
                binding: slot as u32 + 1,
                resource: buf.as_entire_binding(),
            });
        }
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &kernel.layout,
            entries: &entries,
        });
        Ok(Self {
            pipeline: kernel.pipeline,
            bind,
            groups,
            entry,
            node: None,
        })
    }

    /// The launch, marked as computing node `node` (for profiles).
    pub fn at_node(self, node: NodeId) -> Self {
        Self {
            node: Some(node),
            ..self
        }
    }

    /// The entry point it launches.
    pub fn entry(&self) -> Entry {
        self.entry
    }

    /// The graph node it computes, when it computes one.
    pub fn node(&self) -> Option<NodeId> {
        self.node
    }

    /// Records the launch into a compute pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// Records `list` into one compute pass of `encoder`.
pub fn encode_all<'a>(
    encoder: &mut wgpu::CommandEncoder,
    list: impl IntoIterator<Item = &'a Dispatch>,
    label: &str,
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    for d in list {
        d.encode(&mut pass);
    }
}

/// Workgroups for a grid-stride kernel of 256 threads over `count` elements.
pub fn grid(count: usize) -> [u32; 3] {
    [count.div_ceil(256).clamp(1, 65_535) as u32, 1, 1]
}
