//! The wgpu device the gpu engine computes on: a headless one of its own (CLI, tests) or one
//! shared with the renderer (the app). Requests the adapter's own limits, not wgpu's defaults, so
//! large feature maps fit, turns wgpu's errors into values instead of panics, and holds the
//! device's compiled kernels so every engine on it shares them.

use std::sync::{Arc, Mutex};

use super::error::gpu_err;
use super::kernels::Entry;
use super::pipelines::{Kernel, Pipelines};
use crate::engine::EngineError;

/// Which adapters a headless context may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// Hardware adapters only (integrated or discrete GPU).
    Hardware,
    /// Any adapter, software rasterisers (lavapipe, WARP) included: tests and machines without a
    /// GPU.
    AllowSoftware,
}

/// A wgpu device with its queue, a record of the errors wgpu reported on it and the kernels
/// compiled on it. Clones share the device, the record and the compiled kernels.
#[derive(Clone)]
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// What the adapter reports about itself.
    pub info: wgpu::AdapterInfo,
    /// Limits the device was created with.
    pub limits: wgpu::Limits,
    errors: Arc<Mutex<Vec<String>>>,
    pipelines: Arc<Mutex<Pipelines>>,
}

impl GpuContext {
    /// Creates a device of its own on the best adapter `policy` allows (high performance first).
    pub fn headless(policy: AdapterPolicy) -> Result<Self, EngineError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        adapters.retain(|a| {
            let t = a.get_info().device_type;
            policy == AdapterPolicy::AllowSoftware || t != wgpu::DeviceType::Cpu
        });
        // Discrete before integrated before virtual before software.
        adapters.sort_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        });
        let mut last = None;
        for adapter in adapters {
            match Self::from_adapter(&adapter) {
                Ok(ctx) => return Ok(ctx),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            EngineError::NoAdapter(
                match policy {
                    AdapterPolicy::Hardware => {
                        "no hardware GPU adapter (Vulkan, Metal or DX12) found"
                    }
                    AdapterPolicy::AllowSoftware => {
                        "no GPU adapter found, not even a software one (on Linux, install mesa-vulkan-drivers)"
                    }
                }
                .into(),
            )
        }))
    }

    /// Creates a device on `adapter` with the adapter's own limits.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self, EngineError> {
        let limits = adapter.limits();
        let info = adapter.get_info();
        let desc = wgpu::DeviceDescriptor {
            label: Some("advlens gpu engine"),
            // Timestamps cost nothing until a profile asks for them.
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| gpu_err(format!("{}: {e}", info.name)))?;
        Ok(Self::from_device(device, queue, info, limits))
    }

    /// Wraps an existing device (for example the one eframe renders with).
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
    ) -> Self {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut v) = sink.lock() {
                v.push(format!("device lost ({reason:?}): {message}"));
            }
        });
        Self {
            device,
            queue,
            info,
            limits,
            errors,
            pipelines: Arc::default(),
        }
    }

    /// The adapter's name and backend, e.g. `NVIDIA H100 (Vulkan)`.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether the adapter is a software rasteriser.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Returns the first error wgpu reported since the last call, as an engine error.
    pub fn take_error(&self) -> Result<(), EngineError> {
        let mut v = self
            .errors
            .lock()
            .map_err(|_| gpu_err("error log poisoned"))?;
        if v.is_empty() {
            return Ok(());
        }
        let first = v.remove(0);
        v.clear();
        Err(gpu_err(first))
    }

    /// Waits for all submitted work.
    pub fn wait(&self) -> Result<(), EngineError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_err(e.to_string()))?;
        self.take_error()
    }

    /// The compiled `entry`, compiled now if no engine on this device has used it yet.
    pub(crate) fn kernel(&self, entry: Entry) -> Result<Kernel, EngineError> {
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| gpu_err("pipeline cache poisoned"))?;
        Ok(cache.get(&self.device, entry))
    }

    /// How many kernel pipelines have been compiled on this device, by any engine: it stops
    /// growing once every kernel in use is cached.
    pub fn kernels_compiled(&self) -> usize {
        self.pipelines.lock().map_or(0, |c| c.compiled())
    }
}
