//! A network laid out on the device for one batch size: a value and a gradient buffer per node,
//! the scratch the denoise blocks need, and the recorded forward and backward dispatches (with
//! and without the denoise blocks), built once and replayed on every call.

use wgpu::util::DeviceExt as _;

use super::kernels::{Dispatch, Kernels, Shader, f, grid};
use crate::engine::EngineError;
use crate::model::graph::{Graph, NodeId, Op};
use crate::model::{DenoiseVariant, Network};

type R<T> = Result<T, EngineError>;

fn gpu_err(message: impl Into<String>) -> EngineError {
    EngineError::Backend {
        engine: "gpu",
        message: message.into(),
    }
}

/// A node's parameters on the device.
enum Params {
    None,
    Conv {
        w: wgpu::Buffer,
        bias: Option<wgpu::Buffer>,
    },
    /// Per-channel tables for normalisation or folded batch norm.
    Aux(wgpu::Buffer),
    Linear {
        w: wgpu::Buffer,
        bias: Option<wgpu::Buffer>,
    },
    Denoise {
        theta: Option<wgpu::Buffer>,
        phi: Option<wgpu::Buffer>,
    },
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
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
    })
}

/// The network's parameters on the device, shared by every batch size.
pub struct DeviceParams {
    nodes: Vec<Params>,
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
                    Params::Aux(upload(device, name, &aux))
                }
                Op::Conv2d { weight, bias, .. } => Params::Conv {
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
                    Params::Aux(upload(device, prefix, &aux))
                }
                Op::Linear { weight, bias, .. } => Params::Linear {
                    w: upload(device, weight, &p(weight)?),
                    bias: match bias {
                        Some(b) => Some(upload(device, b, &p(b)?)),
                        None => None,
                    },
                },
                Op::DenoiseOp { theta, phi, .. } => Params::Denoise {
                    theta: match theta {
                        Some(t) => Some(upload(device, t, &p(t)?)),
                        None => None,
                    },
                    phi: match phi {
                        Some(t) => Some(upload(device, t, &p(t)?)),
                        None => None,
                    },
                },
                _ => Params::None,
            });
        }
        Ok(Self { nodes })
    }
}

/// The parameter block of one matrix-product launch (see `shaders/matmul.wgsl`).
#[derive(Clone, Copy, Default)]
struct Mm {
    m: usize,
    n: usize,
    k: usize,
    zdiv: usize,
    alpha: f32,
    beta: f32,
    bias_mode: u32,
    a_mode: u32,
    a: [usize; 4],
    b: [usize; 4],
    c: [usize; 4],
    b_mode: u32,
    geom: [usize; 9],
    chan: usize,
    bias_z2: usize,
}

impl Mm {
    /// A plain product: `a`, `b`, `c` are `[per z1, per z2, row stride, column stride]`.
    fn plain(m: usize, n: usize, k: usize, a: [usize; 4], b: [usize; 4], c: [usize; 4]) -> Self {
        Self {
            m,
            n,
            k,
            zdiv: 1,
            alpha: 1.0,
            a,
            b,
            c,
            ..Default::default()
        }
    }

    fn words(&self) -> Vec<u32> {
        let u = |v: usize| v as u32;
        let mut w = vec![
            u(self.m),
            u(self.n),
            u(self.k),
            u(self.zdiv.max(1)),
            f(self.alpha),
            f(self.beta),
            self.bias_mode,
            self.a_mode,
        ];
        w.extend(self.a.iter().map(|&v| u(v)));
        w.extend(self.b.iter().map(|&v| u(v)));
        w.extend(self.c.iter().map(|&v| u(v)));
        w.push(self.b_mode);
        w.extend(self.geom.iter().map(|&v| u(v)));
        w.push(u(self.chan));
        w.push(u(self.bias_z2));
        w
    }
}

/// Per-node scratch on the device (denoise blocks only).
#[derive(Default)]
struct Scratch {
    /// Embedding width `d` of θ and φ (the channel count when the variant has no embedding).
    dim: usize,
    /// Embeddings θ, φ (`[n, d, P]`).
    theta: Option<wgpu::Buffer>,
    phi: Option<wgpu::Buffer>,
    /// Attention probabilities (`[n, P, P]`), the dot product's `X·Xᵀ` (`[n, C, C]`) or the
    /// bilateral weights (`[n, 9, P]`): kept by the forward for the backward.
    saved: Option<wgpu::Buffer>,
    /// Backward temporaries: scores/dS (`[n, P, P]` or `[n, 9, P]` or `[n, C, C]`), dθ, dφ.
    work: Option<wgpu::Buffer>,
    dtheta: Option<wgpu::Buffer>,
    dphi: Option<wgpu::Buffer>,
}

/// Buffers and recorded dispatches for one batch size.
pub struct Plan {
    /// Batch size.
    pub batch: usize,
    /// Node values (index = node id).
    pub values: Vec<wgpu::Buffer>,
    /// Gradients with respect to node values.
    pub grads: Vec<wgpu::Buffer>,
    scratch: Vec<Scratch>,
    /// Recorded forward and backward launches, without (`[0]`) and with (`[1]`) the denoise
    /// bypass.
    forward: [Vec<Dispatch>; 2],
    backward: [Vec<Dispatch>; 2],
    /// Node each node's value and gradient live in, per bypass setting.
    alias: [Vec<NodeId>; 2],
}

fn chw(shape: &[usize]) -> R<[usize; 3]> {
    match shape {
        &[c, h, w] => Ok([c, h, w]),
        s => Err(gpu_err(format!(
            "expected a [C, H, W] activation, got {s:?}"
        ))),
    }
}

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
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}

/// The largest buffer one example needs, in floats (activations and denoise scratch).
pub fn largest_per_example(net: &Network) -> usize {
    net.graph
        .nodes
        .iter()
        .map(|node| {
            let own: usize = node.shape.iter().product();
            let scratch = match (&node.op, node.shape.as_slice()) {
                (Op::DenoiseOp { variant, .. }, &[c, h, w]) => match variant {
                    DenoiseVariant::NonlocalGaussian | DenoiseVariant::GaussianNoEmbed => {
                        (h * w) * (h * w)
                    }
                    DenoiseVariant::DotProduct => c * c,
                    DenoiseVariant::Bilateral => 9 * h * w,
                    _ => 0,
                },
                _ => 0,
            };
            own.max(scratch)
        })
        .max()
        .unwrap_or(1)
        .max(1)
}

impl Plan {
    /// Allocates the buffers for a batch of `n` and records every launch.
    pub fn new(kernels: &mut Kernels, net: &Network, params: &DeviceParams, n: usize) -> R<Self> {
        let ctx = kernels.context().clone();
        let device = &ctx.device;
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        let graph = &net.graph;
        let size = |id: NodeId| n * graph.nodes[id].shape.iter().product::<usize>();
        let mut values = Vec::new();
        let mut grads = Vec::new();
        let mut scratch = Vec::new();
        for (id, node) in graph.nodes.iter().enumerate() {
            values.push(storage(device, &node.name, size(id), limit)?);
            grads.push(storage(device, &node.name, size(id), limit)?);
            let mut s = Scratch::default();
            if let Op::DenoiseOp { variant, theta, .. } = &node.op {
                let [c, h, w] = chw(&node.shape)?;
                let pp = h * w;
                let d = match theta {
                    Some(t) => net
                        .param(t)
                        .map_err(|e| gpu_err(e.to_string()))?
                        .shape()
                        .first()
                        .copied()
                        .unwrap_or(c),
                    None => c,
                };
                s.dim = d;
                let buf = |what: &str, len: usize| {
                    storage(device, &format!("{}/{what}", node.name), len, limit).map(Some)
                };
                match variant {
                    DenoiseVariant::NonlocalGaussian | DenoiseVariant::GaussianNoEmbed => {
                        if theta.is_some() {
                            s.theta = buf("theta", n * d * pp)?;
                            s.phi = buf("phi", n * d * pp)?;
                            s.dtheta = buf("dtheta", n * d * pp)?;
                            s.dphi = buf("dphi", n * d * pp)?;
                        }
                        s.saved = buf("attention", n * pp * pp)?;
                        s.work = buf("scores", n * pp * pp)?;
                    }
                    DenoiseVariant::DotProduct => {
                        s.saved = buf("gram", n * c * c)?;
                        s.work = buf("dgram", n * c * c)?;
                    }
                    DenoiseVariant::Bilateral => {
                        s.theta = buf("theta", n * d * pp)?;
                        s.phi = buf("phi", n * d * pp)?;
                        s.dtheta = buf("dtheta", n * d * pp)?;
                        s.dphi = buf("dphi", n * d * pp)?;
                        s.saved = buf("weights", n * 9 * pp)?;
                        s.work = buf("dlogits", n * 9 * pp)?;
                    }
                    DenoiseVariant::Mean | DenoiseVariant::Median => {}
                }
            }
            scratch.push(s);
        }
        let mut plan = Self {
            batch: n,
            values,
            grads,
            scratch,
            forward: [vec![], vec![]],
            backward: [vec![], vec![]],
            alias: [vec![], vec![]],
        };
        for bypass in [false, true] {
            let alias = aliases(graph, bypass);
            let mut fwd = Vec::new();
            let mut bwd = Vec::new();
            for i in 1..graph.nodes.len() {
                if alias[i] != i {
                    continue;
                }
                let mut rec = Recorder {
                    kernels,
                    graph,
                    params,
                    plan: &plan,
                    alias: &alias,
                    n,
                };
                fwd.extend(rec.forward(i)?);
                let mut b = rec.backward(i)?;
                b.reverse();
                bwd.extend(b);
            }
            bwd.reverse();
            plan.forward[bypass as usize] = fwd;
            plan.backward[bypass as usize] = bwd;
            plan.alias[bypass as usize] = alias;
        }
        ctx.take_error()?;
        Ok(plan)
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
        &self.values[self.alias[bypass as usize][id]]
    }

    /// The buffer holding the gradient at node `id`.
    pub fn grad(&self, id: NodeId, bypass: bool) -> &wgpu::Buffer {
        &self.grads[self.alias[bypass as usize][id]]
    }

    /// Records clearing every gradient buffer except the logits' (which the caller fills).
    pub fn clear_grads(&self, encoder: &mut wgpu::CommandEncoder, output: NodeId, bypass: bool) {
        let alias = &self.alias[bypass as usize];
        for (i, g) in self.grads.iter().enumerate() {
            if alias[i] == i && i != alias[output] {
                encoder.clear_buffer(g, 0, None);
            }
        }
    }
}

/// For each node, the node whose buffers stand for it: itself, or with the bypass the input of
/// the denoise block it belongs to.
fn aliases(graph: &Graph, bypass: bool) -> Vec<NodeId> {
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

struct Recorder<'a> {
    kernels: &'a mut Kernels,
    graph: &'a Graph,
    params: &'a DeviceParams,
    plan: &'a Plan,
    alias: &'a [NodeId],
    n: usize,
}

impl Recorder<'_> {
    fn input(&self, i: NodeId, k: usize) -> R<NodeId> {
        self.graph.nodes[i]
            .inputs
            .get(k)
            .map(|&j| self.alias[j])
            .ok_or_else(|| gpu_err(format!("{}: missing input", self.graph.nodes[i].name)))
    }

    fn in_shape(&self, i: NodeId) -> &[usize] {
        &self.graph.nodes[self.graph.nodes[i].inputs[0]].shape
    }

    fn mm(
        &mut self,
        p: Mm,
        z: usize,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
    ) -> R<Dispatch> {
        let groups = [
            p.n.div_ceil(32).max(1) as u32,
            p.m.div_ceil(32).max(1) as u32,
            z.max(1) as u32,
        ];
        self.kernels.dispatch(
            Shader::Matmul,
            "main",
            &p.words(),
            &[Some(a), Some(b), Some(c), bias],
            groups,
        )
    }

    /// A row softmax launch (`shaders/softmax.wgsl`) over `rows` rows of `cols` scores scaled by
    /// 1/√d.
    fn softmax(
        &mut self,
        entry: &'static str,
        rows: usize,
        cols: usize,
        d: usize,
        scores: &wgpu::Buffer,
        prob: &wgpu::Buffer,
    ) -> R<Dispatch> {
        let words = [rows as u32, cols as u32, f(1.0 / (d as f32).sqrt()), 0];
        let groups = [rows.clamp(1, 65_535) as u32, 1, 1];
        self.kernels.dispatch(
            Shader::Softmax,
            entry,
            &words,
            &[Some(scores), Some(prob)],
            groups,
        )
    }

    fn ew(
        &mut self,
        entry: &'static str,
        count: usize,
        c: usize,
        hw: usize,
        extra: usize,
        bufs: [Option<&wgpu::Buffer>; 4],
    ) -> R<Dispatch> {
        let words = [count as u32, c as u32, hw as u32, extra as u32];
        self.kernels
            .dispatch(Shader::Elementwise, entry, &words, &bufs, grid(count))
    }

    fn conv_mm(&self, i: NodeId, backward: bool) -> R<(Mm, usize)> {
        let node = &self.graph.nodes[i];
        let Op::Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            ..
        } = &node.op
        else {
            return Err(gpu_err("not a convolution"));
        };
        let [c, h, w] = chw(self.in_shape(i))?;
        let [o, oh, ow] = chw(&node.shape)?;
        if c != *in_channels || o != *out_channels || *groups == 0 || c % groups != 0 {
            return Err(gpu_err(format!("{}: inconsistent convolution", node.name)));
        }
        let g = *groups;
        let (cg, og) = (c / g, o / g);
        let [kh, kw] = *kernel;
        let kk = kh * kw;
        let [pt, _, pl, _] = padding.resolve(h, w, *kernel, *stride);
        let pointwise = kk == 1 && *stride == 1 && pt == 0 && pl == 0;
        let geom = [h, w, oh, ow, kh, kw, *stride, pt, pl];
        let mut p = if !backward {
            // Y[og, OH·OW] = W[og, cg·kk] · im2col(X)[cg·kk, OH·OW] per (image, group).
            let mut p = Mm::plain(
                og,
                oh * ow,
                cg * kk,
                [0, og * cg * kk, cg * kk, 1],
                [c * h * w, cg * h * w, h * w, 1],
                [o * oh * ow, og * oh * ow, oh * ow, 1],
            );
            if !pointwise {
                p.b_mode = 1;
            }
            p
        } else {
            // dX[cg, H·W] += Wᵀ[cg, og·kk] · dY gathered [og·kk, H·W].
            let mut p = Mm::plain(
                cg,
                h * w,
                og * kk,
                [0, og * cg * kk, 1, cg],
                [o * oh * ow, og * oh * ow, oh * ow, 1],
                [c * h * w, cg * h * w, h * w, 1],
            );
            p.beta = 1.0;
            if !pointwise {
                p.a_mode = 1;
                p.b_mode = 2;
            }
            p
        };
        p.zdiv = g;
        p.geom = geom;
        p.chan = cg;
        p.bias_z2 = og;
        Ok((p, self.n * g))
    }

    fn forward(&mut self, i: NodeId) -> R<Vec<Dispatch>> {
        let node = &self.graph.nodes[i];
        let plan = self.plan;
        let out = &plan.values[i];
        let n = self.n;
        let count = n * node.shape.iter().product::<usize>();
        let mut v = Vec::new();
        match (&node.op, &self.params.nodes[i]) {
            (Op::Input, _) => {}
            (Op::Normalize { .. }, Params::Aux(aux)) => {
                let [ci, h, w] = chw(self.in_shape(i))?;
                let x = &plan.values[self.input(i, 0)?];
                v.push(self.ew(
                    "normalize_forward",
                    count,
                    node.shape[0],
                    h * w,
                    ci,
                    [Some(x), Some(out), None, Some(aux)],
                )?);
            }
            (Op::Conv2d { .. }, Params::Conv { w, bias }) => {
                let (mut p, z) = self.conv_mm(i, false)?;
                p.bias_mode = bias.is_some() as u32;
                let x = &plan.values[self.input(i, 0)?];
                v.push(self.mm(p, z, w, x, out, bias.as_ref())?);
            }
            (Op::BatchNorm { .. }, Params::Aux(aux)) => {
                let [c, h, w] = chw(&node.shape)?;
                let x = &plan.values[self.input(i, 0)?];
                v.push(self.ew(
                    "affine_forward",
                    count,
                    c,
                    h * w,
                    0,
                    [Some(x), Some(out), None, Some(aux)],
                )?);
            }
            (Op::Relu | Op::Relu6, _) => {
                let x = &plan.values[self.input(i, 0)?];
                let entry = if node.op == Op::Relu {
                    "relu_forward"
                } else {
                    "relu6_forward"
                };
                v.push(self.ew(entry, count, 1, 1, 0, [Some(x), Some(out), None, None])?);
            }
            (Op::Add, _) => {
                let a = &plan.values[self.input(i, 0)?];
                let b = &plan.values[self.input(i, 1)?];
                v.push(self.ew(
                    "add_forward",
                    count,
                    1,
                    1,
                    0,
                    [Some(a), Some(out), Some(b), None],
                )?);
            }
            (Op::MaxPool { .. } | Op::AvgPool { .. }, _) => {
                let (words, _) = self.pool_words(i)?;
                let x = &plan.values[self.input(i, 0)?];
                v.push(self.kernels.dispatch(
                    Shader::Pool,
                    "pool_forward",
                    &words,
                    &[Some(x), Some(out), None, None],
                    grid(count),
                )?);
            }
            (Op::GlobalAvgPool, _) => {
                let [c, h, w] = chw(self.in_shape(i))?;
                let x = &plan.values[self.input(i, 0)?];
                v.push(self.ew(
                    "global_pool_forward",
                    n * c,
                    c,
                    h * w,
                    0,
                    [Some(x), Some(out), None, None],
                )?);
            }
            (
                Op::Linear {
                    in_features,
                    out_features,
                    ..
                },
                Params::Linear { w, bias },
            ) => {
                let (inf, outf) = (*in_features, *out_features);
                let x = &plan.values[self.input(i, 0)?];
                // Y[n, out] = X[n, in] · Wᵀ + b.
                let mut p = Mm::plain(
                    n,
                    outf,
                    inf,
                    [0, 0, inf, 1],
                    [0, 0, 1, inf],
                    [0, 0, outf, 1],
                );
                p.bias_mode = if bias.is_some() { 2 } else { 0 };
                v.push(self.mm(p, 1, x, w, out, bias.as_ref())?);
            }
            (Op::DenoiseOp { variant, .. }, Params::Denoise { theta, phi }) => {
                v.extend(self.denoise_forward(i, *variant, theta.as_ref(), phi.as_ref())?);
            }
            (op, _) => return Err(gpu_err(format!("{}: no gpu kernel", op.kind()))),
        }
        Ok(v)
    }

    fn pool_words(&self, i: NodeId) -> R<(Vec<u32>, usize)> {
        let node = &self.graph.nodes[i];
        let (kind, kernel, stride, padding) = match &node.op {
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => (0u32, kernel, stride, padding),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => (1u32, kernel, stride, padding),
            _ => return Err(gpu_err("not a pooling node")),
        };
        let [c, h, w] = chw(self.in_shape(i))?;
        let [_, oh, ow] = chw(&node.shape)?;
        let [pt, _, pl, _] = padding.resolve(h, w, *kernel, *stride);
        let planes = self.n * c;
        let words = [
            planes,
            h,
            w,
            oh,
            ow,
            kernel[0],
            kernel[1],
            *stride,
            pt,
            pl,
            kind as usize,
            0,
        ]
        .map(|v| v as u32)
        .to_vec();
        Ok((words, planes * h * w))
    }

    fn need<'b>(b: &'b Option<wgpu::Buffer>, what: &str) -> R<&'b wgpu::Buffer> {
        b.as_ref()
            .ok_or_else(|| gpu_err(format!("denoise scratch {what} missing")))
    }

    fn denoise_words(&self, c: usize, h: usize, w: usize, d: usize, scale: f32) -> Vec<u32> {
        let n = self.n;
        vec![
            (n * c) as u32,
            h as u32,
            w as u32,
            c as u32,
            d as u32,
            n as u32,
            f(scale),
            0,
        ]
    }

    /// `emb = W·x` for a `[d, C]` 1×1 embedding, per image.
    fn embed(
        &mut self,
        w: &wgpu::Buffer,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        c: usize,
        d: usize,
        pp: usize,
    ) -> R<Dispatch> {
        let p = Mm::plain(
            d,
            pp,
            c,
            [0, 0, c, 1],
            [c * pp, 0, pp, 1],
            [d * pp, 0, pp, 1],
        );
        self.mm(p, self.n, w, x, out, None)
    }

    fn denoise_forward(
        &mut self,
        i: NodeId,
        variant: DenoiseVariant,
        theta: Option<&wgpu::Buffer>,
        phi: Option<&wgpu::Buffer>,
    ) -> R<Vec<Dispatch>> {
        let plan = self.plan;
        let [c, h, w] = chw(&self.graph.nodes[i].shape)?;
        let pp = h * w;
        let n = self.n;
        let x = &plan.values[self.input(i, 0)?];
        let out = &plan.values[i];
        let s = &plan.scratch[i];
        let mut v = Vec::new();
        match variant {
            DenoiseVariant::NonlocalGaussian | DenoiseVariant::GaussianNoEmbed => {
                let d = s.dim;
                let (th, ph) = match (theta, phi) {
                    (Some(wt), Some(wp)) => {
                        let (tb, pb) = (Self::need(&s.theta, "theta")?, Self::need(&s.phi, "phi")?);
                        v.push(self.embed(wt, x, tb, c, d, pp)?);
                        v.push(self.embed(wp, x, pb, c, d, pp)?);
                        (tb, pb)
                    }
                    _ => (x, x),
                };
                let scores = Self::need(&s.work, "scores")?;
                let prob = Self::need(&s.saved, "attention")?;
                // S = θᵀφ: [P, P] per image.
                let p = Mm::plain(
                    pp,
                    pp,
                    d,
                    [d * pp, 0, 1, pp],
                    [d * pp, 0, pp, 1],
                    [pp * pp, 0, pp, 1],
                );
                v.push(self.mm(p, n, th, ph, scores, None)?);
                v.push(self.softmax("softmax_forward", n * pp, pp, d, scores, prob)?);
                // y = x·Aᵀ: [C, P] per image.
                let p = Mm::plain(
                    c,
                    pp,
                    pp,
                    [c * pp, 0, pp, 1],
                    [pp * pp, 0, 1, pp],
                    [c * pp, 0, pp, 1],
                );
                v.push(self.mm(p, n, x, prob, out, None)?);
            }
            DenoiseVariant::DotProduct => {
                let gram = Self::need(&s.saved, "gram")?;
                // G = x·xᵀ ([C, C]); y = G·x / P.
                let p = Mm::plain(
                    c,
                    c,
                    pp,
                    [c * pp, 0, pp, 1],
                    [c * pp, 0, 1, pp],
                    [c * c, 0, c, 1],
                );
                v.push(self.mm(p, n, x, x, gram, None)?);
                let mut p = Mm::plain(
                    c,
                    pp,
                    c,
                    [c * c, 0, c, 1],
                    [c * pp, 0, pp, 1],
                    [c * pp, 0, pp, 1],
                );
                p.alpha = 1.0 / pp as f32;
                v.push(self.mm(p, n, gram, x, out, None)?);
            }
            DenoiseVariant::Mean | DenoiseVariant::Median => {
                let entry = if variant == DenoiseVariant::Mean {
                    "mean_forward"
                } else {
                    "median_forward"
                };
                let words = self.denoise_words(c, h, w, 0, 0.0);
                v.push(self.kernels.dispatch(
                    Shader::Denoise,
                    entry,
                    &words,
                    &[Some(x), None, None, Some(out)],
                    grid(n * c * pp),
                )?);
            }
            DenoiseVariant::Bilateral => {
                let (Some(wt), Some(wp)) = (theta, phi) else {
                    return Err(gpu_err("bilateral denoise without embeddings"));
                };
                let d = s.dim;
                let (tb, pb) = (Self::need(&s.theta, "theta")?, Self::need(&s.phi, "phi")?);
                let wts = Self::need(&s.saved, "weights")?;
                v.push(self.embed(wt, x, tb, c, d, pp)?);
                v.push(self.embed(wp, x, pb, c, d, pp)?);
                let words = self.denoise_words(c, h, w, d, 1.0 / (d as f32).sqrt());
                v.push(self.kernels.dispatch(
                    Shader::Denoise,
                    "bilateral_forward",
                    &words,
                    &[Some(x), Some(tb), Some(pb), Some(out), Some(wts)],
                    grid(n * pp),
                )?);
            }
        }
        Ok(v)
    }

    /// Launches that add node `i`'s contribution to its inputs' gradients, in execution order.
    fn backward(&mut self, i: NodeId) -> R<Vec<Dispatch>> {
        let node = &self.graph.nodes[i];
        let plan = self.plan;
        let g = &plan.grads[i];
        let n = self.n;
        let mut v = Vec::new();
        if node.op == Op::Input {
            return Ok(v);
        }
        let j = self.input(i, 0)?;
        let gx = &plan.grads[j];
        let in_count = n * self.in_shape(i).iter().product::<usize>();
        match (&node.op, &self.params.nodes[i]) {
            (Op::Normalize { .. }, Params::Aux(aux)) => {
                let [ci, h, w] = chw(self.in_shape(i))?;
                v.push(self.ew(
                    "normalize_backward",
                    in_count,
                    node.shape[0],
                    h * w,
                    ci,
                    [Some(g), Some(gx), None, Some(aux)],
                )?);
            }
            (Op::Conv2d { .. }, Params::Conv { w, .. }) => {
                let (p, z) = self.conv_mm(i, true)?;
                v.push(self.mm(p, z, w, g, gx, None)?);
            }
            (Op::BatchNorm { .. }, Params::Aux(aux)) => {
                let [c, h, w] = chw(&node.shape)?;
                v.push(self.ew(
                    "affine_backward",
                    in_count,
                    c,
                    h * w,
                    0,
                    [Some(g), Some(gx), None, Some(aux)],
                )?);
            }
            (Op::Relu, _) => {
                let y = &plan.values[i];
                v.push(self.ew(
                    "relu_backward",
                    in_count,
                    1,
                    1,
                    0,
                    [Some(g), Some(gx), Some(y), None],
                )?);
            }
            (Op::Relu6, _) => {
                let x = &plan.values[j];
                v.push(self.ew(
                    "relu6_backward",
                    in_count,
                    1,
                    1,
                    0,
                    [Some(g), Some(gx), Some(x), None],
                )?);
            }
            (Op::Add, _) => {
                let k = self.input(i, 1)?;
                let gk = &plan.grads[k];
                v.push(self.ew(
                    "accumulate",
                    in_count,
                    1,
                    1,
                    0,
                    [Some(g), Some(gx), None, None],
                )?);
                v.push(self.ew(
                    "accumulate",
                    in_count,
                    1,
                    1,
                    0,
                    [Some(g), Some(gk), None, None],
                )?);
            }
            (Op::MaxPool { .. } | Op::AvgPool { .. }, _) => {
                let (words, total) = self.pool_words(i)?;
                let x = &plan.values[j];
                v.push(self.kernels.dispatch(
                    Shader::Pool,
                    "pool_backward",
                    &words,
                    &[Some(x), None, Some(g), Some(gx)],
                    grid(total),
                )?);
            }
            (Op::GlobalAvgPool, _) => {
                let [c, h, w] = chw(self.in_shape(i))?;
                v.push(self.ew(
                    "global_pool_backward",
                    in_count,
                    c,
                    h * w,
                    0,
                    [Some(g), Some(gx), None, None],
                )?);
            }
            (
                Op::Linear {
                    in_features,
                    out_features,
                    ..
                },
                Params::Linear { w, .. },
            ) => {
                let (inf, outf) = (*in_features, *out_features);
                // dX[n, in] += dY[n, out] · W[out, in].
                let mut p = Mm::plain(
                    n,
                    inf,
                    outf,
                    [0, 0, outf, 1],
                    [0, 0, inf, 1],
                    [0, 0, inf, 1],
                );
                p.beta = 1.0;
                v.push(self.mm(p, 1, g, w, gx, None)?);
            }
            (Op::DenoiseOp { variant, .. }, Params::Denoise { theta, phi }) => {
                v.extend(self.denoise_backward(i, *variant, theta.as_ref(), phi.as_ref())?);
            }
            (op, _) => return Err(gpu_err(format!("{}: no gpu backward", op.kind()))),
        }
        Ok(v)
    }

    fn denoise_backward(
        &mut self,
        i: NodeId,
        variant: DenoiseVariant,
        theta: Option<&wgpu::Buffer>,
        phi: Option<&wgpu::Buffer>,
    ) -> R<Vec<Dispatch>> {
        let plan = self.plan;
        let [c, h, w] = chw(&self.graph.nodes[i].shape)?;
        let pp = h * w;
        let n = self.n;
        let j = self.input(i, 0)?;
        let x = &plan.values[j];
        let gx = &plan.grads[j];
        let dy = &plan.grads[i];
        let s = &plan.scratch[i];
        let mut v = Vec::new();
        match variant {
            DenoiseVariant::NonlocalGaussian | DenoiseVariant::GaussianNoEmbed => {
                let d = s.dim;
                let prob = Self::need(&s.saved, "attention")?;
                let ds = Self::need(&s.work, "scores")?;
                // dX += dY·A.
                let mut p = Mm::plain(
                    c,
                    pp,
                    pp,
                    [c * pp, 0, pp, 1],
                    [pp * pp, 0, pp, 1],
                    [c * pp, 0, pp, 1],
                );
                p.beta = 1.0;
                v.push(self.mm(p, n, dy, prob, gx, None)?);
                // dA = dYᵀ·X, then dS = A ⊙ (dA − rowsum(dA ⊙ A)) / √d.
                let p = Mm::plain(
                    pp,
                    pp,
                    c,
                    [c * pp, 0, 1, pp],
                    [c * pp, 0, pp, 1],
                    [pp * pp, 0, pp, 1],
                );
                v.push(self.mm(p, n, dy, x, ds, None)?);
                v.push(self.softmax("softmax_backward", n * pp, pp, d, ds, prob)?);
                // dθ = φ·dSᵀ and dφ = θ·dS ([d, P] each).
                let dt_p = Mm::plain(
                    d,
                    pp,
                    pp,
                    [d * pp, 0, pp, 1],
                    [pp * pp, 0, 1, pp],
                    [d * pp, 0, pp, 1],
                );
                let dp_p = Mm::plain(
                    d,
                    pp,
                    pp,
                    [d * pp, 0, pp, 1],
                    [pp * pp, 0, pp, 1],
                    [d * pp, 0, pp, 1],
                );
                match (theta, phi) {
                    (Some(wt), Some(wp)) => {
                        let (tb, pb) = (Self::need(&s.theta, "theta")?, Self::need(&s.phi, "phi")?);
                        let (dtb, dpb) = (
                            Self::need(&s.dtheta, "dtheta")?,
                            Self::need(&s.dphi, "dphi")?,
                        );
                        v.push(self.mm(dt_p, n, pb, ds, dtb, None)?);
                        v.push(self.mm(dp_p, n, tb, ds, dpb, None)?);
                        // dX += Wθᵀ·dθ + Wφᵀ·dφ.
                        let mut p = Mm::plain(
                            c,
                            pp,
                            d,
                            [0, 0, 1, c],
                            [d * pp, 0, pp, 1],
                            [c * pp, 0, pp, 1],
                        );
                        p.beta = 1.0;
                        v.push(self.mm(p, n, wt, dtb, gx, None)?);
                        v.push(self.mm(p, n, wp, dpb, gx, None)?);
                    }
                    _ => {
                        let (mut a, mut b) = (dt_p, dp_p);
                        a.beta = 1.0;
                        b.beta = 1.0;
                        v.push(self.mm(a, n, x, ds, gx, None)?);
                        v.push(self.mm(b, n, x, ds, gx, None)?);
                    }
                }
            }
            DenoiseVariant::DotProduct => {
                let gram = Self::need(&s.saved, "gram")?;
                let e = Self::need(&s.work, "dgram")?;
                let inv = 1.0 / pp as f32;
                // dX += (G·dY + (E + Eᵀ)·X) / P with E = dY·Xᵀ.
                let mut p = Mm::plain(
                    c,
                    pp,
                    c,
                    [c * c, 0, c, 1],
                    [c * pp, 0, pp, 1],
                    [c * pp, 0, pp, 1],
                );
                p.alpha = inv;
                p.beta = 1.0;
                v.push(self.mm(p, n, gram, dy, gx, None)?);
                let p = Mm::plain(
                    c,
                    c,
                    pp,
                    [c * pp, 0, pp, 1],
                    [c * pp, 0, 1, pp],
                    [c * c, 0, c, 1],
                );
                v.push(self.mm(p, n, dy, x, e, None)?);
                let mut p = Mm::plain(
                    c,
                    pp,
                    c,
                    [c * c, 0, c, 1],
                    [c * pp, 0, pp, 1],
                    [c * pp, 0, pp, 1],
                );
                p.alpha = inv;
                p.beta = 1.0;
                v.push(self.mm(p, n, e, x, gx, None)?);
                p.a = [c * c, 0, 1, c];
                v.push(self.mm(p, n, e, x, gx, None)?);
            }
            DenoiseVariant::Mean | DenoiseVariant::Median => {
                let entry = if variant == DenoiseVariant::Mean {
                    "mean_backward"
                } else {
                    "median_backward"
                };
                let words = self.denoise_words(c, h, w, 0, 0.0);
                v.push(self.kernels.dispatch(
                    Shader::Denoise,
                    entry,
                    &words,
                    &[Some(x), None, None, Some(dy), None, None, None, Some(gx)],
                    grid(n * c * pp),
                )?);
            }
            DenoiseVariant::Bilateral => {
                let (Some(wt), Some(wp)) = (theta, phi) else {
                    return Err(gpu_err("bilateral denoise without embeddings"));
                };
                let d = s.dim;
                let (tb, pb) = (Self::need(&s.theta, "theta")?, Self::need(&s.phi, "phi")?);
                let (dtb, dpb) = (
                    Self::need(&s.dtheta, "dtheta")?,
                    Self::need(&s.dphi, "dphi")?,
                );
                let wts = Self::need(&s.saved, "weights")?;
                let dl = Self::need(&s.work, "dlogits")?;
                let words = self.denoise_words(c, h, w, d, 1.0 / (d as f32).sqrt());
                v.push(self.kernels.dispatch(
                    Shader::Denoise,
                    "bilateral_backward_query",
                    &words,
                    &[
                        Some(x),
                        Some(tb),
                        Some(pb),
                        Some(dy),
                        Some(wts),
                        Some(dl),
                        Some(dtb),
                    ],
                    grid(n * pp),
                )?);
                v.push(self.kernels.dispatch(
                    Shader::Denoise,
                    "bilateral_backward_key",
                    &words,
                    &[
                        None,
                        Some(tb),
                        None,
                        Some(dy),
                        Some(wts),
                        Some(dl),
                        Some(dpb),
                        Some(gx),
                    ],
                    grid(n * pp),
                )?);
                let mut p = Mm::plain(
                    c,
                    pp,
                    d,
                    [0, 0, 1, c],
                    [d * pp, 0, pp, 1],
                    [c * pp, 0, pp, 1],
                );
                p.beta = 1.0;
                v.push(self.mm(p, n, wt, dtb, gx, None)?);
                v.push(self.mm(p, n, wp, dpb, gx, None)?);
            }
        }
        Ok(v)
    }
}
