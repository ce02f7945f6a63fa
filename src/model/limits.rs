//! Size limits shared by the weight-file readers ([`super::weights`] for safetensors,
//! [`super::pth`] for PyTorch checkpoints, [`crate::train`]'s checkpoints) and by the
//! architecture checks that a file's configuration passes before anything is built: one place,
//! so that every format opens the same largest file and no reader has to import another for it.

/// Largest weight file advlens opens (4 GiB): above the largest model it is meant for
/// (Xie et al.'s ResNeXt-101 is 0.5 GB), below what a desktop can hold twice in memory while
/// the floats are decoded.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Largest side of a network's input, in pixels.
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Most blocks one stage may repeat. A configuration is a few numbers in a file and the graph
/// is built before any tensor is checked, so one damaged digit must not ask for billions of
/// nodes; the deepest published ResNets repeat about 200 blocks a stage (ResNet-1202 on CIFAR).
pub const MAX_BLOCKS_PER_STAGE: usize = 1024;

/// Largest evaluation resize (the shorter side before the centre crop): no input side is
/// larger, so no real model resizes further, and images are scaled to it before cropping.
pub const MAX_EVAL_RESIZE: usize = MAX_IMAGE_SIDE;
