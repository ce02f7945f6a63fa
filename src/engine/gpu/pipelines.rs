//! Compiled kernels of one device: the shader module, bind group layout and placeholder buffers of
//! each kernel family, and one compute pipeline per entry point, each built on first use and then
//! kept for the device's lifetime. The cache lives in the [`GpuContext`](super::GpuContext) and
//! is shared by its clones, so a second engine on the same device (another model, a robustness
//! run) compiles nothing.

use std::collections::HashMap;

use super::kernels::{Entry, Shader};

/// What recording a launch of one entry point needs.
#[derive(Clone)]
pub struct Kernel {
    /// The compiled entry point.
    pub pipeline: wgpu::ComputePipeline,
    /// Its family's bind group layout (uniform at binding 0, storage buffers after it).
    pub layout: wgpu::BindGroupLayout,
    /// One small buffer per storage slot, bound where a launch leaves the slot unused.
    pub placeholders: Vec<wgpu::Buffer>,
}

/// The device objects shared by every entry point of one WGSL file.
struct Family {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    placeholders: Vec<wgpu::Buffer>,
}

/// Every kernel compiled so far on one device.
#[derive(Default)]
pub struct Pipelines {
    families: HashMap<Shader, Family>,
    kernels: HashMap<Entry, Kernel>,
    /// Pipelines created so far.
    compiled: usize,
}

impl Pipelines {
    /// The compiled `entry`, built on `device` the first time it is asked for.
    pub fn get(&mut self, device: &wgpu::Device, entry: Entry) -> Kernel {
        if let Some(k) = self.kernels.get(&entry) {
            return k.clone();
        }
        let fam = self
            .families
            .entry(entry.shader())
            .or_insert_with(|| Family::new(device, entry.shader()));
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry.name()),
            layout: Some(&fam.pipeline_layout),
            module: &fam.module,
            entry_point: Some(entry.name()),
            compilation_options: Default::default(),
            cache: None,
        });
        let kernel = Kernel {
            pipeline,
            layout: fam.layout.clone(),
            placeholders: fam.placeholders.clone(),
        };
        self.compiled += 1;
        self.kernels.insert(entry, kernel.clone());
        kernel
    }

    /// How many pipelines have been compiled.
    pub fn compiled(&self) -> usize {
        self.compiled
    }
}

impl Family {
    fn new(device: &wgpu::Device, shader: Shader) -> Self {
        let n = shader.storage_bindings();
        let buffer_entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![buffer_entry(0, wgpu::BufferBindingType::Uniform)];
        for b in 1..=n {
            entries.push(buffer_entry(
                b,
                wgpu::BufferBindingType::Storage { read_only: false },
            ));
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
        let placeholders = (0..n)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("unused slot"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Self {
            layout,
            pipeline_layout,
            module,
            placeholders,
        }
    }
}
