//! The network's parameters on the device: uploaded once per engine and shared by every batch
//! size's plan. Batch norm is folded into a per-channel scale and shift here, so the kernels only
//! ever see an affine map.

use super::buffers::upload;
use super::error::gpu_err;
use crate::engine::EngineError;
use crate::model::Network;
use crate::model::Op;

type R<T> = Result<T, EngineError>;

/// A node's parameters on the device.
pub enum NodeParams {
    /// The op has no parameters.
    None,
    /// Convolution weights `[O, C/g, kh, kw]` and bias.
    Conv {
        /// Weights.
        w: wgpu::Buffer,
        /// Bias, when the layer has one.
        bias: Option<wgpu::Buffer>,
    },
    /// Per-channel tables for normalisation or folded batch norm.
    Aux(wgpu::Buffer),
    /// Fully connected weights `[out, in]` and bias.
    Linear {
        /// Weights.
        w: wgpu::Buffer,
        /// Bias, when the layer has one.
        bias: Option<wgpu::Buffer>,
    },
    /// The 1×1 embeddings `[d, C]` of a denoise block, when its variant has them.
    Denoise {
        /// Query embedding θ.
        theta: Option<wgpu::Buffer>,
        /// Key embedding φ.
        phi: Option<wgpu::Buffer>,
    },
}

/// The network's parameters on the device, shared by every batch size.
pub struct DeviceParams {
    /// Per node (index = node id).
    pub nodes: Vec<NodeParams>,
}

impl DeviceParams {
    /// Uploads `net`'s weights (batch norm folded into a per-channel scale and shift).
    pub fn upload(device: &wgpu::Device, net: &Network) -> R<Self> {
        let p = |name: &str| -> R<Vec<f32>> {
            net.param(name)
                .map(|a| a.data().to_vec())
                .map_err(|e| gpu_err(e.to_string()))
        };
        let mut nodes = Vec::with_capacity(net.graph.nodes.len());
        for node in &net.graph.nodes {
            let name = node.name.as_str();
            nodes.push(match &node.op {
                Op::Normalize {
                    channel_order,
                    mean,
                    std,
                } => {
                    let mut aux: Vec<f32> = channel_order.iter().map(|&c| c as f32).collect();
                    aux.extend(mean);
                    aux.extend(std.iter().map(|s| 1.0 / s));
                    NodeParams::Aux(upload(device, name, &aux))
                }
                Op::Conv2d { weight, bias, .. } => NodeParams::Conv {
                    w: upload(device, weight, &p(weight)?),
                    bias: match bias {
                        Some(b) => Some(upload(device, b, &p(b)?)),
                        None => None,
                    },
                },
                Op::BatchNorm {
                    prefix,
                    eps,
                    naming,
                    ..
                } => {
                    let (scale, shift) = net
                        .folded_batch_norm(&naming.batch_norm(prefix), *eps)
                        .map_err(|e| gpu_err(e.to_string()))?;
                    let mut aux = scale;
                    aux.extend(shift);
                    NodeParams::Aux(upload(device, prefix, &aux))
                }
                Op::Linear { weight, bias, .. } => NodeParams::Linear {
                    w: upload(device, weight, &p(weight)?),
                    bias: match bias {
                        Some(b) => Some(upload(device, b, &p(b)?)),
                        None => None,
                    },
                },
                Op::DenoiseOp { theta, phi, .. } => NodeParams::Denoise {
                    theta: match theta {
                        Some(t) => Some(upload(device, t, &p(t)?)),
                        None => None,
                    },
                    phi: match phi {
                        Some(t) => Some(upload(device, t, &p(t)?)),
                        None => None,
                    },
                },
                _ => NodeParams::None,
            });
        }
        Ok(Self { nodes })
    }
}
