//! The cpu engine: runs the architecture description on candle (the reference engine). With the
//! `cuda` or `metal` cargo features, candle's GPU devices can be selected too.
//!
//! Weights are constants: they are plain tensors, never variables, and the convolution's custom
//! backward skips the kernel gradient, so an input gradient costs one forward and one
//! backward-data pass.
//!
//! [`CpuEngine`] runs one of two executors: the planned one ([`plan`]: host buffers and a
//! hand-written backward over the host kernels [`conv_kernel`], [`gemm`], [`nonlocal`] and
//! [`pool`]) or the graph [`interpreter`] under candle's autograd, which the trainer runs too.
//! The interpreter reaches advlens's kernels through candle custom ops ([`conv`], [`batchnorm`],
//! [`pool`], [`relu`], [`softmax`]) and builds the [`denoise`] blocks from them and candle ops.

pub mod batchnorm;
pub mod conv;
pub mod conv_kernel;
mod cpu_engine;
mod custom_op;
pub mod denoise;
mod exp_approx;
pub mod gemm;
pub mod interpreter;
pub mod nonlocal;
pub mod plan;
pub mod pool;
pub mod relu;
pub mod softmax;
mod tensor;
mod workspace;

pub use cpu_engine::{CpuEngine, Executor};
pub use interpreter::{
    BnBatchStats, Kernels, ParamMode, RunOptions, backward_from, run_graph, run_graph_with_stats,
    run_logits,
};
pub(crate) use tensor::backend;
pub use tensor::to_array;
