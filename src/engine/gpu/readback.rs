//! Copying results back to the host through mappable staging buffers, one per result slot, kept
//! between calls and only replaced when a result outgrows them, so a steady stream of forward
//! passes allocates no device memory.

use super::context::GpuContext;
use super::error::gpu_err;
use crate::engine::EngineError;

/// Staging buffers reused across reads.
#[derive(Default)]
pub struct Readback {
    staging: Vec<wgpu::Buffer>,
}

impl Readback {
    /// Submits `encoder` with copies of `sources` (buffer, float count) appended, waits, and
    /// returns each source's floats.
    pub fn submit_and_read(
        &mut self,
        ctx: &GpuContext,
        mut encoder: wgpu::CommandEncoder,
        sources: &[(&wgpu::Buffer, usize)],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        for (slot, &(src, len)) in sources.iter().enumerate() {
            let bytes = (len.max(1) * 4) as u64;
            let staging = self.slot(&ctx.device, slot, bytes);
            encoder.copy_buffer_to_buffer(src, 0, staging, 0, (len * 4) as u64);
        }
        ctx.queue.submit([encoder.finish()]);
        let used = &self.staging[..sources.len()];
        for (b, &(_, len)) in used.iter().zip(sources) {
            b.slice(..(len.max(1) * 4) as u64)
                .map_async(wgpu::MapMode::Read, |_| {});
        }
        let read = || -> Result<Vec<Vec<f32>>, EngineError> {
            ctx.wait()?;
            let mut out = Vec::with_capacity(sources.len());
            for (b, &(_, len)) in used.iter().zip(sources) {
                let view = b
                    .slice(..(len.max(1) * 4) as u64)
                    .get_mapped_range()
                    .map_err(|e| gpu_err(format!("reading results back: {e}")))?;
                out.push(bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec());
            }
            Ok(out)
        };
        let out = read();
        if out.is_ok() {
            for b in used {
                b.unmap();
            }
        } else {
            // Some buffers may be left mapped (or never were); fresh ones next time.
            self.staging.clear();
        }
        out
    }

    /// Staging buffer `slot`, at least `bytes` long.
    fn slot(&mut self, device: &wgpu::Device, slot: usize, bytes: u64) -> &wgpu::Buffer {
        let fits = self.staging.get(slot).is_some_and(|b| b.size() >= bytes);
        if !fits {
            let b = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            if slot < self.staging.len() {
                self.staging[slot] = b;
            } else {
                self.staging.push(b);
            }
        }
        &self.staging[slot]
    }
}
