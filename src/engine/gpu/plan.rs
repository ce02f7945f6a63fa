//! A network laid out on the device for one batch size: its buffers and the recorded forward and
//! backward launches, with and without the denoise blocks, built once and replayed on every call.
//!
//! The denoise bypass records no launch for a block's nodes: each of them stands for the block's
//! input (an alias), so the block's consumers read the input's value and add into its gradient.

use super::buffers::Buffers;
use super::context::GpuContext;
use super::dispatch::Dispatch;
use super::layers;
use super::params::DeviceParams;
use super::recorder::Recorder;
use crate::engine::EngineError;
use crate::model::Network;
use crate::model::{Graph, NodeId};

type R<T> = Result<T, EngineError>;

/// Buffers and recorded launches for one batch size.
pub struct Plan {
    buffers: Buffers,
    /// Recorded forward and backward launches, without (`[0]`) and with (`[1]`) the denoise
    /// bypass.
    forward: [Vec<Dispatch>; 2],
    backward: [Vec<Dispatch>; 2],
    /// Node each node's value and gradient live in, per bypass setting.
    alias: [Vec<NodeId>; 2],
}

impl Plan {
    /// Allocates the buffers for a batch of `n` and records every launch.
    pub fn new(ctx: &GpuContext, net: &Network, params: &DeviceParams, n: usize) -> R<Self> {
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        let buffers = Buffers::new(&ctx.device, limit, net, n)?;
        let graph = &net.graph;
        let mut forward = [vec![], vec![]];
        let mut backward = [vec![], vec![]];
        let mut aliases = [vec![], vec![]];
        for bypass in [false, true] {
            let alias = alias(graph, bypass);
            let rec = Recorder {
                ctx,
                graph,
                params,
                buffers: &buffers,
                alias: &alias,
                n,
            };
            let mut fwd = Vec::new();
            let mut bwd = Vec::new();
            for i in (1..graph.nodes.len()).filter(|&i| alias[i] == i) {
                fwd.extend(layers::forward(&rec, i)?.into_iter().map(|d| d.at_node(i)));
                // Each node's launches in execution order, the nodes in reverse.
                let mut b: Vec<Dispatch> = layers::backward(&rec, i)?
                    .into_iter()
                    .map(|d| d.at_node(i))
                    .collect();
                b.reverse();
                bwd.extend(b);
            }
            bwd.reverse();
            forward[bypass as usize] = fwd;
            backward[bypass as usize] = bwd;
            aliases[bypass as usize] = alias;
        }
        ctx.take_error()?;
        Ok(Self {
            buffers,
            forward,
            backward,
            alias: aliases,
        })
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        self.buffers.batch
    }

    /// The launches of a forward pass.
    pub fn forward(&self, bypass: bool) -> &[Dispatch] {
        &self.forward[bypass as usize]
    }

    /// The launches of a backward pass (input gradient), in execution order.
    pub fn backward(&self, bypass: bool) -> &[Dispatch] {
        &self.backward[bypass as usize]
    }

    /// The buffer holding node `id`'s value.
    pub fn value(&self, id: NodeId, bypass: bool) -> &wgpu::Buffer {
        &self.buffers.values[self.alias[bypass as usize][id]]
    }

    /// The buffer holding the gradient at node `id`.
    pub fn grad(&self, id: NodeId, bypass: bool) -> &wgpu::Buffer {
        &self.buffers.grads[self.alias[bypass as usize][id]]
    }

    /// How many buffers [`Plan::clear_grads`] clears.
    pub fn cleared_grads(&self, output: NodeId, bypass: bool) -> usize {
        let alias = &self.alias[bypass as usize];
        (0..self.buffers.grads.len())
            .filter(|&i| alias[i] == i && i != alias[output])
            .count()
    }

    /// Records clearing every gradient buffer except the logits' (which the caller fills).
    pub fn clear_grads(&self, encoder: &mut wgpu::CommandEncoder, output: NodeId, bypass: bool) {
        let alias = &self.alias[bypass as usize];
        for (i, g) in self.buffers.grads.iter().enumerate() {
            if alias[i] == i && i != alias[output] {
                encoder.clear_buffer(g, 0, None);
            }
        }
    }
}

/// For each node, the node whose buffers stand for it: itself, or with the bypass the input of
/// the denoise block it belongs to.
fn alias(graph: &Graph, bypass: bool) -> Vec<NodeId> {
    let mut alias: Vec<NodeId> = (0..graph.nodes.len()).collect();
    if bypass {
        for i in 0..graph.nodes.len() {
            if let Some(b) = graph.nodes[i].denoise_block {
                alias[i] = alias[graph.denoise_blocks[b].input];
            }
        }
    }
    alias
}
