//! What every advlens candle custom op needs: its f32 input as a host slice, and a round trip to
//! the CPU when the engine runs on another candle device (the ops have host loops only).

use candle_core::{CpuStorage, Device, Layout, Tensor};

/// The contiguous f32 values of a custom op's input storage (no copy).
pub(super) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("advlens cpu ops take f32 tensors")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("advlens cpu ops take contiguous tensors")
    };
    Ok(&v[a..b])
}

/// Runs a host-side custom op on the CPU, moving the tensor there and back when the engine runs
/// on another candle device (the move is differentiable).
pub(super) fn on_cpu(
    x: &Tensor,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        f(&x.contiguous()?)
    } else {
        let dev = x.device().clone();
        f(&x.to_device(&Device::Cpu)?.contiguous()?)?.to_device(&dev)
    }
}
