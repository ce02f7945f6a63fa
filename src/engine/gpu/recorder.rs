//! What recording a plan's launches works with: the graph, the parameters and buffers on the
//! device and the batch size, plus the launch helpers every op's recording shares (matrix
//! products, element-wise ops, softmax). The ops themselves are in `layers.rs` and `denoise/`.

use super::buffers::{Buffers, Scratch};
use super::context::GpuContext;
use super::dispatch::{Dispatch, grid};
use super::error::gpu_err;
use super::kernels::Entry;
use super::params::{DeviceParams, NodeParams};
use super::uniforms::{ElementwiseParams, MatmulParams, SoftmaxParams, Uniform};
use crate::engine::EngineError;
use crate::model::{Graph, Node, NodeId};

type R<T> = Result<T, EngineError>;

/// Records the launches of one batch size, one node at a time.
pub struct Recorder<'a> {
    /// The device.
    pub ctx: &'a GpuContext,
    /// The network's graph.
    pub graph: &'a Graph,
    /// Its parameters on the device.
    pub params: &'a DeviceParams,
    /// Its buffers for this batch.
    pub buffers: &'a Buffers,
    /// Node each node's buffers stand for (see `Plan`'s denoise bypass).
    pub alias: &'a [NodeId],
    /// Batch size.
    pub n: usize,
}

impl Recorder<'_> {
    /// Node `i`.
    pub fn node(&self, i: NodeId) -> &Node {
        &self.graph.nodes[i]
    }

    /// Node `i`'s parameters.
    pub fn node_params(&self, i: NodeId) -> &NodeParams {
        &self.params.nodes[i]
    }

    /// The node holding input `k` of node `i` (after aliasing).
    pub fn input(&self, i: NodeId, k: usize) -> R<NodeId> {
        self.graph.nodes[i]
            .inputs
            .get(k)
            .map(|&j| self.alias[j])
            .ok_or_else(|| gpu_err(format!("{}: missing input", self.graph.nodes[i].name)))
    }

    /// The shape of node `i`'s first input.
    pub fn in_shape(&self, i: NodeId) -> R<&[usize]> {
        let node = &self.graph.nodes[i];
        node.inputs
            .first()
            .map(|&j| self.graph.nodes[j].shape.as_slice())
            .ok_or_else(|| gpu_err(format!("{}: missing input", node.name)))
    }

    /// Node `i`'s value buffer.
    pub fn value(&self, i: NodeId) -> &wgpu::Buffer {
        &self.buffers.values[i]
    }

    /// The gradient buffer of node `i`'s value.
    pub fn grad(&self, i: NodeId) -> &wgpu::Buffer {
        &self.buffers.grads[i]
    }

    /// Node `i`'s denoise scratch.
    pub fn scratch(&self, i: NodeId) -> &Scratch {
        &self.buffers.scratch[i]
    }

    /// A launch of `entry`.
    pub fn launch<P: Uniform>(
        &self,
        entry: Entry,
        params: &P,
        buffers: &[Option<&wgpu::Buffer>],
        groups: [u32; 3],
    ) -> R<Dispatch> {
        Dispatch::new(self.ctx, entry, params, buffers, groups)
    }

    /// `z` matrix products `c = α·a·b + β·c (+ bias)`.
    pub fn mm(
        &self,
        p: MatmulParams,
        z: usize,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
    ) -> R<Dispatch> {
        self.launch(
            Entry::Matmul,
            &p,
            &[Some(a), Some(b), Some(c), bias],
            p.groups(z),
        )
    }

    /// A row softmax launch over `rows` rows of `cols` scores scaled by 1/√d.
    pub fn softmax(
        &self,
        entry: Entry,
        rows: usize,
        cols: usize,
        d: usize,
        scores: &wgpu::Buffer,
        prob: &wgpu::Buffer,
    ) -> R<Dispatch> {
        let p = SoftmaxParams {
            rows: rows as u32,
            cols: cols as u32,
            scale: 1.0 / (d as f32).sqrt(),
            unused: 0,
        };
        let groups = [rows.clamp(1, 65_535) as u32, 1, 1];
        self.launch(entry, &p, &[Some(scores), Some(prob)], groups)
    }

    /// An element-wise launch over `count` elements of `c` channels of `hw` cells.
    pub fn ew(
        &self,
        entry: Entry,
        count: usize,
        [c, hw, extra]: [usize; 3],
        bufs: [Option<&wgpu::Buffer>; 4],
    ) -> R<Dispatch> {
        let p = ElementwiseParams::new(count, c, hw, extra);
        self.launch(entry, &p, &bufs, grid(count))
    }
}

/// A scratch buffer the plan must have allocated.
pub fn need<'b>(b: &'b Option<wgpu::Buffer>, what: &str) -> R<&'b wgpu::Buffer> {
    b.as_ref()
        .ok_or_else(|| gpu_err(format!("denoise scratch {what} missing")))
}
