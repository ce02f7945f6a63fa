//! The device memory a network needs for one batch size: a value and a gradient buffer per node,
//! and the scratch each denoise block keeps between its forward and backward launches. Every
//! buffer is checked against the device's per-binding limit, so an oversized batch fails with a
//! message instead of a wgpu validation error.

use wgpu::util::DeviceExt as _;

use super::error::gpu_err;
use crate::engine::EngineError;
use crate::model::{DenoiseVariant, Network};
use crate::model::{Node, Op};

type R<T> = Result<T, EngineError>;

/// Usage of every buffer the engine computes in: bound to kernels, cleared, uploaded to and read
/// back.
const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// `[C, H, W]` of an activation shape.
pub fn chw(shape: &[usize]) -> R<[usize; 3]> {
    match shape {
        &[c, h, w] => Ok([c, h, w]),
        s => Err(gpu_err(format!(
            "expected a [C, H, W] activation, got {s:?}"
        ))),
    }
}

/// Uploads a slice of floats as a storage buffer.
pub fn upload(device: &wgpu::Device, label: &str, data: &[f32]) -> wgpu::Buffer {
    let bytes: &[u8] = if data.is_empty() {
        &[0; 4]
    } else {
        bytemuck::cast_slice(data)
    };
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: USAGE,
    })
}

/// A zeroed storage buffer of `floats` floats, refused when it exceeds `limit` bytes.
fn storage(device: &wgpu::Device, label: &str, floats: usize, limit: u64) -> R<wgpu::Buffer> {
    let size = (floats.max(1) * 4) as u64;
    if size > limit {
        return Err(gpu_err(format!(
            "{label} needs {} MiB, over this device's {} MiB limit per buffer; use a smaller batch",
            size >> 20,
            limit >> 20
        )));
    }
    Ok(device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: USAGE,
        mapped_at_creation: false,
    }))
}

/// What a denoise block keeps on the device, in floats per example.
struct ScratchSizes {
    /// The embedding width `d` of θ and φ (the channel count when the variant has none).
    dim: usize,
    /// Each of θ, φ, dθ and dφ (0: not allocated).
    embedding: usize,
    /// The saved forward result and the backward temporary of the same shape, with their
    /// labels.
    saved: (usize, &'static str, &'static str),
}

impl ScratchSizes {
    /// The sizes for `node`, or `None` when it needs no scratch.
    fn of(net: &Network, node: &Node) -> R<Option<Self>> {
        let Op::DenoiseOp { variant, theta, .. } = &node.op else {
            return Ok(None);
        };
        let [c, h, w] = chw(&node.shape)?;
        let pp = h * w;
        let dim = match theta {
            Some(t) => net
                .param(t)
                .map_err(|e| gpu_err(e.to_string()))?
                .shape()
                .first()
                .copied()
                .unwrap_or(c),
            None => c,
        };
        Ok(Some(match variant {
            DenoiseVariant::NonlocalGaussian | DenoiseVariant::GaussianNoEmbed => Self {
                dim,
                embedding: if theta.is_some() { dim * pp } else { 0 },
                saved: (pp * pp, "attention", "scores"),
            },
            DenoiseVariant::DotProduct => Self {
                dim,
                embedding: 0,
                saved: (c * c, "gram", "dgram"),
            },
            DenoiseVariant::Bilateral => Self {
                dim,
                embedding: dim * pp,
                saved: (9 * pp, "weights", "dlogits"),
            },
            DenoiseVariant::Mean | DenoiseVariant::Median => return Ok(None),
        }))
    }
}

/// Per-node scratch on the device (denoise blocks only).
#[derive(Default)]
pub struct Scratch {
    /// Embedding width `d` of θ and φ (the channel count when the variant has no embedding).
    pub dim: usize,
    /// Embedding θ (`[n, d, P]`).
    pub theta: Option<wgpu::Buffer>,
    /// Embedding φ (`[n, d, P]`).
    pub phi: Option<wgpu::Buffer>,
    /// Attention probabilities (`[n, P, P]`), the dot product's `X·Xᵀ` (`[n, C, C]`) or the
    /// bilateral weights (`[n, 9, P]`): kept by the forward for the backward.
    pub saved: Option<wgpu::Buffer>,
    /// Backward temporary of the same shape: scores/dS, dG or the weight logits' gradient.
    pub work: Option<wgpu::Buffer>,
    /// Gradient of θ.
    pub dtheta: Option<wgpu::Buffer>,
    /// Gradient of φ.
    pub dphi: Option<wgpu::Buffer>,
}

/// Value, gradient and scratch buffers for one batch size.
pub struct Buffers {
    /// Batch size.
    pub batch: usize,
    /// Node values (index = node id).
    pub values: Vec<wgpu::Buffer>,
    /// Gradients with respect to node values.
    pub grads: Vec<wgpu::Buffer>,
    /// Denoise scratch per node (empty for other nodes).
    pub scratch: Vec<Scratch>,
}

impl Buffers {
    /// Allocates every buffer `net` needs for a batch of `n` on `device`, each at most `limit`
    /// bytes.
    pub fn new(device: &wgpu::Device, limit: u64, net: &Network, n: usize) -> R<Self> {
        let mut values = Vec::new();
        let mut grads = Vec::new();
        let mut scratch = Vec::new();
        for node in &net.graph.nodes {
            let len = n * node.shape.iter().product::<usize>();
            values.push(storage(device, &node.name, len, limit)?);
            grads.push(storage(device, &node.name, len, limit)?);
            let mut s = Scratch::default();
            if let Some(sizes) = ScratchSizes::of(net, node)? {
                let buf = |what: &str, len: usize| {
                    storage(device, &format!("{}/{what}", node.name), n * len, limit).map(Some)
                };
                s.dim = sizes.dim;
                if sizes.embedding > 0 {
                    s.theta = buf("theta", sizes.embedding)?;
                    s.phi = buf("phi", sizes.embedding)?;
                    s.dtheta = buf("dtheta", sizes.embedding)?;
                    s.dphi = buf("dphi", sizes.embedding)?;
                }
                let (len, saved, work) = sizes.saved;
                s.saved = buf(saved, len)?;
                s.work = buf(work, len)?;
            }
            scratch.push(s);
        }
        Ok(Self {
            batch: n,
            values,
            grads,
            scratch,
        })
    }
}

/// The largest buffer one example needs, in floats (activations and denoise scratch).
pub fn largest_per_example(net: &Network) -> usize {
    net.graph
        .nodes
        .iter()
        .map(|node| {
            let own: usize = node.shape.iter().product();
            match ScratchSizes::of(net, node) {
                Ok(Some(s)) => own.max(s.embedding).max(s.saved.0),
                // A node that cannot be laid out fails when the plan is built, with the reason.
                Ok(None) | Err(_) => own,
            }
        })
        .max()
        .unwrap_or(1)
        .max(1)
}
