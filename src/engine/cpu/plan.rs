//! The planned executor: runs the graph on host buffers sized once per (network, batch) and
//! reused across calls, with a hand-written backward-data pass for every node (weights are
//! constants, so no weight gradient is ever formed). Denoise operations are the one exception:
//! their backward runs candle's autograd locally on that node alone.

use candle_core::{Device, Tensor, Var};
use rayon::prelude::*;

use super::conv_kernel::{self, ConvGeom};
use super::denoise;
use super::gemm::{MatMut, MatRef, Threads, gemm};
use super::nonlocal::NonLocal;
use super::pool::PoolOp;
use crate::model::{DenoiseVariant, Network};
use crate::model::{Graph, NodeId, Op};

type R<T> = candle_core::Result<T>;

/// A node's parameters in the form its kernels want.
enum Prepared {
    Plain,
    Normalize {
        order: Vec<usize>,
        mean: Vec<f32>,
        inv_std: Vec<f32>,
    },
    Conv {
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        op: Op,
    },
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Linear {
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        inf: usize,
        outf: usize,
    },
    Pool,
    Denoise {
        variant: DenoiseVariant,
        theta: Option<Tensor>,
        phi: Option<Tensor>,
        /// Host copies of the embeddings for the native non-local kernels.
        embed: Option<(Vec<f32>, Vec<f32>)>,
    },
}

impl Prepared {
    /// The native non-local kernel for this node, when it has one.
    fn nonlocal(&self, n: usize, shape: &[usize]) -> Option<NonLocal<'_>> {
        let Prepared::Denoise { variant, embed, .. } = self else {
            return None;
        };
        let &[c, h, w] = shape else { return None };
        let embed = match (variant, embed) {
            (DenoiseVariant::NonlocalGaussian, Some((t, p))) => Some((t.as_slice(), p.as_slice())),
            (DenoiseVariant::GaussianNoEmbed, _) => None,
            _ => return None,
        };
        Some(NonLocal {
            n,
            c,
            p: h * w,
            embed,
        })
    }
}

fn err(m: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(m.into())
}

fn prepare(net: &Network) -> R<Vec<Prepared>> {
    let p = |name: &str| -> R<Vec<f32>> {
        net.param(name)
            .map(|a| a.data().to_vec())
            .map_err(|e| err(e.to_string()))
    };
    let mut out = Vec::with_capacity(net.graph.nodes.len());
    for node in &net.graph.nodes {
        out.push(match &node.op {
            Op::Normalize {
                channel_order,
                mean,
                std,
            } => Prepared::Normalize {
                order: channel_order.clone(),
                mean: mean.clone(),
                inv_std: std.iter().map(|s| 1.0 / s).collect(),
            },
            Op::Conv2d { weight, bias, .. } => Prepared::Conv {
                w: p(weight)?,
                bias: bias.as_deref().map(p).transpose()?,
                op: node.op.clone(),
            },
            Op::BatchNorm {
                prefix,
                eps,
                naming,
                ..
            } => {
                let (scale, shift) = net
                    .folded_batch_norm(&naming.batch_norm(prefix), *eps)
                    .map_err(|e| err(e.to_string()))?;
                Prepared::Affine { scale, shift }
            }
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => Prepared::Linear {
                w: p(weight)?,
                bias: bias.as_deref().map(p).transpose()?,
                inf: *in_features,
                outf: *out_features,
            },
            Op::MaxPool { .. } | Op::AvgPool { .. } => Prepared::Pool,
            Op::DenoiseOp {
                variant,
                theta,
                phi,
                ..
            } => {
                let emb = |n: &Option<String>| -> R<Option<Tensor>> {
                    n.as_ref()
                        .map(|n| {
                            let a = net.param(n).map_err(|e| err(e.to_string()))?;
                            Tensor::from_slice(a.data(), (a.shape()[0], a.shape()[1]), &Device::Cpu)
                        })
                        .transpose()
                };
                let host = |n: &Option<String>| n.as_deref().map(p).transpose();
                let embed = match (host(theta)?, host(phi)?) {
                    (Some(t), Some(f)) => Some((t, f)),
                    _ => None,
                };
                Prepared::Denoise {
                    variant: *variant,
                    theta: emb(theta)?,
                    phi: emb(phi)?,
                    embed,
                }
            }
            _ => Prepared::Plain,
        });
    }
    Ok(out)
}

/// Buffers and prepared parameters for one network.
pub struct Planned {
    prepared: Vec<Prepared>,
    batch: usize,
    values: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// Per node, what its forward keeps for its backward (non-local attention maps).
    saved: Vec<Vec<f32>>,
    alias: Vec<NodeId>,
}

fn chw(shape: &[usize]) -> R<[usize; 3]> {
    match shape {
        &[c, h, w] => Ok([c, h, w]),
        s => Err(err(format!("expected a [C, H, W] activation, got {s:?}"))),
    }
}

fn conv_geom(op: &Op, n: usize, in_shape: &[usize]) -> R<ConvGeom> {
    let Op::Conv2d {
        out_channels,
        in_channels,
        kernel,
        stride,
        padding,
        groups,
        ..
    } = op
    else {
        return Err(err("not a conv"));
    };
    let [c, h, w] = chw(in_shape)?;
    ConvGeom::new(
        [n, c, h, w],
        [*out_channels, in_channels / groups, kernel[0], kernel[1]],
        *stride,
        padding.resolve(h, w, *kernel, *stride),
        *groups,
    )
    .map_err(err)
}

fn pool_op(op: &Op, in_shape: &[usize]) -> R<PoolOp> {
    let [_, h, w] = chw(in_shape)?;
    PoolOp::from_op(op, h, w).ok_or_else(|| err("not a pool"))
}

/// `dst[i] += src[i]`, in parallel for large buffers.
fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(1 << 14)
        .zip(src.par_chunks(1 << 14))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
}

impl Planned {
    /// Prepares `net`'s parameters.
    pub fn new(net: &Network) -> R<Self> {
        Ok(Self {
            prepared: prepare(net)?,
            batch: 0,
            values: vec![],
            grads: vec![],
            saved: vec![],
            alias: vec![],
        })
    }

    fn size(graph: &Graph, id: NodeId, n: usize) -> usize {
        n * graph.nodes[id].shape.iter().product::<usize>()
    }

    /// Sizes the buffers for a batch of `n` (a no-op when already sized).
    fn ensure(&mut self, graph: &Graph, n: usize, grads: bool) {
        if self.batch != n {
            self.values = (0..graph.nodes.len())
                .map(|i| vec![0.0; Self::size(graph, i, n)])
                .collect();
            self.saved = (0..graph.nodes.len())
                .map(|i| {
                    let len = self.prepared[i]
                        .nonlocal(n, &graph.nodes[i].shape)
                        .map_or(0, |nl| n * nl.saved_len());
                    vec![0.0; len]
                })
                .collect();
            self.grads.clear();
            self.batch = n;
        }
        if grads && self.grads.is_empty() {
            self.grads = (0..graph.nodes.len())
                .map(|i| vec![0.0; Self::size(graph, i, n)])
                .collect();
        }
    }

    /// The value of node `id` after [`Planned::forward`].
    pub fn value(&self, id: NodeId) -> &[f32] {
        &self.values[self.alias[id]]
    }

    /// The gradient at the input after [`Planned::input_grad`].
    pub fn input_gradient(&self) -> &[f32] {
        &self.grads[0]
    }

    fn skipped(&self, i: NodeId) -> bool {
        self.alias[i] != i
    }

    /// Runs the graph on `x` (`n` examples).
    pub fn forward(&mut self, graph: &Graph, x: &[f32], n: usize, bypass: bool) -> R<()> {
        self.ensure(graph, n, false);
        self.alias = (0..graph.nodes.len()).collect();
        if bypass {
            for i in 0..graph.nodes.len() {
                if let Some(b) = graph.nodes[i].denoise_block {
                    self.alias[i] = self.alias[graph.denoise_blocks[b].input];
                }
            }
        }
        self.values[0].copy_from_slice(x);
        for i in 1..graph.nodes.len() {
            if self.skipped(i) {
                continue;
            }
            let mut out = std::mem::take(&mut self.values[i]);
            let mut saved = std::mem::take(&mut self.saved[i]);
            let res = self.forward_node(graph, i, n, &mut out, &mut saved);
            self.values[i] = out;
            self.saved[i] = saved;
            res?;
        }
        Ok(())
    }

    fn forward_node(
        &self,
        graph: &Graph,
        i: NodeId,
        n: usize,
        out: &mut [f32],
        saved: &mut [f32],
    ) -> R<()> {
        let node = &graph.nodes[i];
        let input = |k: usize| -> R<&[f32]> {
            node.inputs
                .get(k)
                .map(|&j| self.values[self.alias[j]].as_slice())
                .ok_or_else(|| err(format!("{}: missing input", node.name)))
        };
        let in_shape = |k: usize| graph.nodes[node.inputs[k]].shape.as_slice();
        match (&node.op, &self.prepared[i]) {
            (Op::Input, _) => {}
            (
                Op::Normalize { .. },
                Prepared::Normalize {
                    order,
                    mean,
                    inv_std,
                },
            ) => {
                let x = input(0)?;
                let [c, h, w] = chw(in_shape(0))?;
                let hw = h * w;
                out.par_chunks_mut(hw).enumerate().for_each(|(p, o)| {
                    let (b, ch) = (p / c, p % c);
                    let src = &x[(b * c + order[ch]) * hw..][..hw];
                    for (o, s) in o.iter_mut().zip(src) {
                        *o = (s - mean[ch]) * inv_std[ch];
                    }
                });
            }
            (Op::Conv2d { .. }, Prepared::Conv { w, bias, op }) => {
                let g = conv_geom(op, n, in_shape(0))?;
                conv_kernel::forward(&g, input(0)?, w, out);
                if let Some(b) = bias {
                    let ohw = g.ohw();
                    out.par_chunks_mut(ohw).enumerate().for_each(|(p, o)| {
                        let v = b[p % g.o];
                        o.iter_mut().for_each(|o| *o += v);
                    });
                }
            }
            (Op::BatchNorm { .. }, Prepared::Affine { scale, shift }) => {
                let x = input(0)?;
                let [c, h, w] = chw(in_shape(0))?;
                out.par_chunks_mut(h * w)
                    .zip(x.par_chunks(h * w))
                    .enumerate()
                    .for_each(|(p, (o, s))| {
                        let (a, b) = (scale[p % c], shift[p % c]);
                        o.iter_mut().zip(s).for_each(|(o, s)| *o = s * a + b);
                    });
            }
            (Op::Relu, _) => {
                out.par_iter_mut()
                    .zip(input(0)?.par_iter())
                    .for_each(|(o, s)| *o = s.max(0.0));
            }
            (Op::Relu6, _) => {
                out.par_iter_mut()
                    .zip(input(0)?.par_iter())
                    .for_each(|(o, s)| *o = s.clamp(0.0, 6.0));
            }
            (Op::Add, _) => {
                let (a, b) = (input(0)?, input(1)?);
                out.par_iter_mut()
                    .zip(a.par_iter().zip(b.par_iter()))
                    .for_each(|(o, (a, b))| *o = a + b);
            }
            (Op::MaxPool { .. } | Op::AvgPool { .. }, Prepared::Pool) => {
                let op = pool_op(&node.op, in_shape(0))?;
                let [_, h, w] = chw(in_shape(0))?;
                let g = op.geometry(h, w)?;
                op.forward_into(input(0)?, &g, out);
            }
            (Op::GlobalAvgPool, _) => {
                let [_, h, w] = chw(in_shape(0))?;
                let hw = h * w;
                let x = input(0)?;
                for (p, o) in out.iter_mut().enumerate() {
                    *o = x[p * hw..][..hw].iter().sum::<f32>() / hw as f32;
                }
            }
            (Op::Linear { .. }, Prepared::Linear { w, bias, inf, outf }) => {
                let (inf, outf) = (*inf, *outf);
                let dst = MatMut::new(out, outf, 1);
                let lhs = MatRef::new(input(0)?, inf, 1);
                let rhs = MatRef::new(w, 1, inf);
                gemm(n, outf, inf, dst, lhs, rhs, false, Threads::One);
                if let Some(b) = bias {
                    for row in out.chunks_mut(outf) {
                        row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                    }
                }
            }
            (Op::DenoiseOp { .. }, prep) if prep.nonlocal(n, in_shape(0)).is_some() => {
                if let Some(nl) = prep.nonlocal(n, in_shape(0)) {
                    nl.forward(input(0)?, out, saved);
                }
            }
            (
                Op::DenoiseOp { .. },
                Prepared::Denoise {
                    variant,
                    theta,
                    phi,
                    ..
                },
            ) => {
                let [c, h, w] = chw(in_shape(0))?;
                let x = Tensor::from_slice(input(0)?, (n, c, h, w), &Device::Cpu)?;
                let y = denoise::apply(*variant, &x, theta.as_ref(), phi.as_ref())?;
                out.copy_from_slice(&y.flatten_all()?.to_vec1::<f32>()?);
            }
            (op, _) => return Err(err(format!("{}: no planned kernel", op.kind()))),
        }
        Ok(())
    }

    /// Back-propagates `dz` (`∂L/∂logits`) from `output` to the input; read the result with
    /// [`Planned::input_gradient`]. Call after [`Planned::forward`] on the same input.
    pub fn input_grad(&mut self, graph: &Graph, output: NodeId, dz: &[f32]) -> R<()> {
        let n = self.batch;
        self.ensure(graph, n, true);
        for (i, g) in self.grads.iter_mut().enumerate() {
            if self.alias[i] == i {
                g.par_iter_mut().for_each(|v| *v = 0.0);
            }
        }
        self.grads[self.alias[output]].copy_from_slice(dz);
        for i in (1..graph.nodes.len()).rev() {
            if self.skipped(i) {
                continue;
            }
            let g = std::mem::take(&mut self.grads[i]);
            let res = self.backward_node(graph, i, n, &g);
            self.grads[i] = g;
            res?;
        }
        Ok(())
    }

    fn backward_node(&mut self, graph: &Graph, i: NodeId, n: usize, g: &[f32]) -> R<()> {
        let node = &graph.nodes[i];
        let j = self.alias[node
            .inputs
            .first()
            .copied()
            .ok_or_else(|| err("no input"))?];
        let in_shape = graph.nodes[node.inputs[0]].shape.as_slice();
        let values = &self.values;
        let grads = &mut self.grads;
        match (&node.op, &self.prepared[i]) {
            (Op::Normalize { .. }, Prepared::Normalize { order, inv_std, .. }) => {
                let [c, h, w] = chw(in_shape)?;
                let hw = h * w;
                let gx = &mut grads[j];
                for b in 0..n {
                    for ch in 0..c {
                        let src = &g[(b * c + ch) * hw..][..hw];
                        let dst = &mut gx[(b * c + order[ch]) * hw..][..hw];
                        dst.iter_mut()
                            .zip(src)
                            .for_each(|(d, s)| *d += s * inv_std[ch]);
                    }
                }
            }
            (Op::Conv2d { .. }, Prepared::Conv { w, op, .. }) => {
                let geom = conv_geom(op, n, in_shape)?;
                conv_kernel::input_grad(&geom, g, w, &mut grads[j], true);
            }
            (Op::BatchNorm { .. }, Prepared::Affine { scale, .. }) => {
                let [c, h, w] = chw(in_shape)?;
                grads[j]
                    .par_chunks_mut(h * w)
                    .zip(g.par_chunks(h * w))
                    .enumerate()
                    .for_each(|(p, (d, s))| {
                        let a = scale[p % c];
                        d.iter_mut().zip(s).for_each(|(d, s)| *d += s * a);
                    });
            }
            (Op::Relu, _) => {
                let y = &values[i];
                grads[j]
                    .par_iter_mut()
                    .zip(g.par_iter().zip(y.par_iter()))
                    .for_each(|(d, (s, y))| {
                        if *y > 0.0 {
                            *d += s;
                        }
                    });
            }
            (Op::Relu6, _) => {
                let x = &values[j];
                grads[j]
                    .par_iter_mut()
                    .zip(g.par_iter().zip(x.par_iter()))
                    .for_each(|(d, (s, x))| {
                        if *x > 0.0 && *x < 6.0 {
                            *d += s;
                        }
                    });
            }
            (Op::Add, _) => {
                let k = self.alias[node.inputs[1]];
                add_into(&mut grads[j], g);
                add_into(&mut grads[k], g);
            }
            (Op::MaxPool { .. } | Op::AvgPool { .. }, Prepared::Pool) => {
                let op = pool_op(&node.op, in_shape)?;
                let [_, h, w] = chw(in_shape)?;
                let geom = op.geometry(h, w)?;
                op.backward_add(&values[j], g, &geom, &mut grads[j]);
            }
            (Op::GlobalAvgPool, _) => {
                let [_, h, w] = chw(in_shape)?;
                let hw = h * w;
                grads[j]
                    .par_chunks_mut(hw)
                    .zip(g.par_iter())
                    .for_each(|(d, s)| d.iter_mut().for_each(|d| *d += s / hw as f32));
            }
            (Op::Linear { .. }, Prepared::Linear { w, inf, outf, .. }) => {
                let (inf, outf) = (*inf, *outf);
                let dst = MatMut::new(&mut grads[j], inf, 1);
                let lhs = MatRef::new(g, outf, 1);
                let rhs = MatRef::new(w, inf, 1);
                gemm(n, inf, outf, dst, lhs, rhs, true, Threads::One);
            }
            (Op::DenoiseOp { .. }, prep) if prep.nonlocal(n, in_shape).is_some() => {
                if let Some(nl) = prep.nonlocal(n, in_shape) {
                    nl.backward_add(&values[j], g, &self.saved[i], &mut grads[j]);
                }
            }
            (
                Op::DenoiseOp { .. },
                Prepared::Denoise {
                    variant,
                    theta,
                    phi,
                    ..
                },
            ) => {
                let [c, h, w] = chw(in_shape)?;
                let x = Var::from_slice(&values[j], (n, c, h, w), &Device::Cpu)?;
                let y = denoise::apply(*variant, x.as_tensor(), theta.as_ref(), phi.as_ref())?;
                let seed = Tensor::from_slice(g, (n, c, h, w), &Device::Cpu)?;
                let grads_c = (y * seed)?.sum_all()?.backward()?;
                if let Some(dx) = grads_c.get(x.as_tensor()) {
                    add_into(&mut grads[j], &dx.flatten_all()?.to_vec1::<f32>()?);
                }
            }
            (op, _) => return Err(err(format!("{}: no planned backward", op.kind()))),
        }
        Ok(())
    }
}
