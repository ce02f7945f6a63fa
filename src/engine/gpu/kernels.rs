//! The WGSL kernels (one file per family in `shaders/`), their pipelines (built once per engine
//! and cached) and recorded dispatches: a pipeline, a bind group and a workgroup count, created
//! once per (network, batch) and replayed on every call.

use std::collections::HashMap;

use wgpu::util::DeviceExt as _;

use super::context::GpuContext;
use crate::engine::EngineError;

/// A kernel family: one WGSL file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// Tiled matrix products, convolution forward and input gradient.
    Matmul,
    /// Element-wise ops and global pooling.
    Elementwise,
    /// Max and average pooling.
    Pool,
    /// Row softmax for the non-local blocks.
    Softmax,
    /// Local denoise filters (mean, median, bilateral).
    Denoise,
    /// The attack step: loss gradient on the logits, sign step, projection, random start.
    Attack,
}

impl Shader {
    /// Every kernel family.
    pub const ALL: [Shader; 6] = [
        Shader::Matmul,
        Shader::Elementwise,
        Shader::Pool,
        Shader::Softmax,
        Shader::Denoise,
        Shader::Attack,
    ];

    /// The file name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Matmul => "matmul.wgsl",
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Denoise => "denoise.wgsl",
            Shader::Attack => "attack.wgsl",
        }
    }

    /// The WGSL source (embedded in the binary).
    pub fn source(self) -> &'static str {
        match self {
            Shader::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Shader::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Shader::Pool => include_str!("../../../shaders/pool.wgsl"),
            Shader::Softmax => include_str!("../../../shaders/softmax.wgsl"),
            Shader::Denoise => include_str!("../../../shaders/denoise.wgsl"),
            Shader::Attack => include_str!("../../../shaders/attack.wgsl"),
        }
    }

    /// Storage buffers the file declares (bindings 1..=n; binding 0 is the uniform parameters).
    pub fn storage_bindings(self) -> u32 {
        match self {
            Shader::Matmul | Shader::Elementwise | Shader::Pool => 4,
            Shader::Softmax => 2,
            Shader::Denoise => 8,
            Shader::Attack => 8,
        }
    }
}

/// One recorded kernel launch.
pub struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: [u32; 3],
}

impl Dispatch {
    /// Records the launch into a compute pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// Records `list` into one compute pass of `encoder`.
pub fn encode_all(encoder: &mut wgpu::CommandEncoder, list: &[Dispatch], label: &str) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    for d in list {
        d.encode(&mut pass);
    }
}

struct Family {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    /// One small buffer per storage slot, bound where a kernel leaves the slot unused.
    dummies: Vec<wgpu::Buffer>,
}

/// Shader modules, pipelines and the device they live on.
pub struct Kernels {
    ctx: GpuContext,
    families: HashMap<Shader, Family>,
    pipelines: HashMap<(Shader, &'static str), wgpu::ComputePipeline>,
}

/// Workgroups for a grid-stride kernel of 256 threads over `count` elements.
pub fn grid(count: usize) -> [u32; 3] {
    [count.div_ceil(256).clamp(1, 65_535) as u32, 1, 1]
}

impl Kernels {
    /// Kernels on `ctx`'s device (modules are compiled on first use).
    pub fn new(ctx: GpuContext) -> Self {
        Self {
            ctx,
            families: HashMap::new(),
            pipelines: HashMap::new(),
        }
    }

    /// The device context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn family(&mut self, shader: Shader) -> &Family {
        let device = &self.ctx.device;
        self.families.entry(shader).or_insert_with(|| {
            let n = shader.storage_bindings();
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }];
            for b in 1..=n {
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: b,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
            }
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(shader.file_name()),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(shader.file_name()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.file_name()),
                source: wgpu::ShaderSource::Wgsl(shader.source().into()),
            });
            let dummies = (0..n)
                .map(|_| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("unused slot"),
                        size: 16,
                        usage: wgpu::BufferUsages::STORAGE,
                        mapped_at_creation: false,
                    })
                })
                .collect();
            Family {
                layout,
                pipeline_layout,
                module,
                dummies,
            }
        })
    }

    fn pipeline(&mut self, shader: Shader, entry: &'static str) -> wgpu::ComputePipeline {
        if let Some(p) = self.pipelines.get(&(shader, entry)) {
            return p.clone();
        }
        let device = self.ctx.device.clone();
        let fam = self.family(shader);
        let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&fam.pipeline_layout),
            module: &fam.module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        self.pipelines.insert((shader, entry), p.clone());
        p
    }

    /// Records a launch of `entry` in `shader` with uniform `params` (32-bit words) and storage
    /// buffers for bindings 1, 2, … (`None` leaves a slot unused).
    pub fn dispatch(
        &mut self,
        shader: Shader,
        entry: &'static str,
        params: &[u32],
        buffers: &[Option<&wgpu::Buffer>],
        groups: [u32; 3],
    ) -> Result<Dispatch, EngineError> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(EngineError::Backend {
                engine: "gpu",
                message: format!(
                    "{entry}: {groups:?} workgroups exceed the device's limit of {max} per dimension; use a smaller batch"
                ),
            });
        }
        let pipeline = self.pipeline(shader, entry);
        let device = self.ctx.device.clone();
        let mut words = params.to_vec();
        words.resize(params.len().div_ceil(4).max(1) * 4, 0);
        let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(entry),
            contents: bytemuck::cast_slice(&words),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let fam = self.family(shader);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (slot, dummy) in fam.dummies.iter().enumerate() {
            let buf = buffers.get(slot).copied().flatten().unwrap_or(dummy);
            entries.push(wgpu::BindGroupEntry {
                binding: slot as u32 + 1,
                resource: buf.as_entire_binding(),
            });
        }
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &fam.layout,
            entries: &entries,
        });
        Ok(Dispatch {
            pipeline,
            bind,
            groups,
        })
    }
}

/// An `f32` as the 32-bit word a kernel's parameter block holds.
pub fn f(v: f32) -> u32 {
    v.to_bits()
}
