//! What the benchmarks share: medians of repeated runs and deterministic inputs.

use std::time::Instant;

use crate::array::Array;

/// The median wall time in ms of `reps` runs of `f` (at least one), after one warm-up run.
pub fn median_ms(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// `b` deterministic images in [0, 1] of the network's input shape, with labels cycling through
/// the classes.
pub(super) fn bench_batch(
    net: &crate::model::Network,
    b: usize,
) -> anyhow::Result<(Array, Vec<usize>)> {
    let [c, h, w] = net.input_shape();
    let data: Vec<f32> = (0..b * c * h * w)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let labels = (0..b).map(|i| i % net.num_classes()).collect();
    Ok((Array::new(vec![b, c, h, w], data)?, labels))
}
