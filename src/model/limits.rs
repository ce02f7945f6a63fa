//! Size limits shared by the weight-file readers ([`super::weights`] for safetensors,
//! [`super::pth`] for PyTorch checkpoints, [`crate::train`]'s checkpoints): one place, so that
//! every format opens the same largest file and no reader has to import another for it.

/// Largest weight file advlens opens (4 GiB): above the largest model it is meant for
/// (Xie et al.'s ResNeXt-101 is 0.5 GB), below what a desktop can hold twice in memory while
/// the floats are decoded.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
