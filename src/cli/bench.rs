//! `advlens bench`: latency of forward, forward + input gradient and a PGD-10 attack on the
//! default-size resnet-denoise network, at several batch sizes. Numbers are medians over
//! repeated runs in one process; compare ratios from one run, not absolute times across runs.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use crate::array::Array;
use crate::attack::{AttackConfig, AttackKind, Cancel};
use crate::engine::cpu::CpuEngine;
use crate::engine::{Engine, ForwardOptions, Loss};

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Batch sizes, comma separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Model to time (default: the built-in default-size network).
    #[arg(long, default_value = crate::zoo::DEFAULT_MODEL)]
    pub model: String,
}

fn median_ms(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
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

/// Runs the benchmark and prints a markdown table.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let net = Arc::new(crate::zoo::load_model(&args.model)?);
    let mut engine = CpuEngine::new(net.clone())?;
    let [c, h, w] = net.input_shape();
    println!("engine: {}", engine.describe());
    println!("model: {}", net.config.summary());
    println!("\n| batch | forward ms | forward+input-grad ms | PGD-10 ms | PGD-10 per image ms |");
    println!("|---|---|---|---|---|");
    for &b in &args.batch {
        let n = b * c * h * w;
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let x = Array::new(vec![b, c, h, w], data)?;
        let opts = ForwardOptions::default();
        let fwd = median_ms(args.reps, || {
            engine.forward(&x, &opts)?;
            Ok(())
        })?;
        let loss = Loss::CrossEntropy {
            classes: vec![0; b],
        };
        let grad = median_ms(args.reps, || {
            engine.input_grad(&x, &loss, &opts)?;
            Ok(())
        })?;
        let cfg = AttackConfig {
            kind: AttackKind::Pgd,
            steps: Some(10),
            ..AttackConfig::default()
        };
        let pgd = median_ms(args.reps.div_ceil(3), || {
            crate::attack::run(&mut engine, &x, None, &cfg, &Cancel::new())?;
            Ok(())
        })?;
        println!(
            "| {b} | {fwd:.2} | {grad:.2} | {pgd:.1} | {:.2} |",
            pgd / b as f64
        );
    }
    Ok(())
}
