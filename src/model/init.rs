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

/// A standard normal sample (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}
