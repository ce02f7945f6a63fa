//! `advlens bench --defense`: what input-transformation defences cost on the shipped default
//! model's 1×28×28 input, per image: each transform forward and its gradient map back (naive and
//! BPDA), next to the network's own forward pass, and a PGD-10 attack behind random resize and
//! pad with EOT 1 and 10 (cpu engine), so the price of an adaptive evaluation is on record.
//! Medians over the repetitions; the command is printed with the tables.

use std::sync::Arc;

use crate::array::Array;
use crate::attack::{AttackConfig, AttackKind};
use crate::cancel::Cancel;
use crate::defense::{Chain, Defense, Draws, GradientMode};
use crate::engine::cpu::CpuEngine;
use crate::engine::{Defended, Engine, ForwardOptions};

/// The defences timed, as written on the command line.
const CHAINS: [&str; 5] = ["jpeg:75", "bits:5", "bits:3", "median:3", "resize-pad"];

/// Images per timed batch.
const BATCH: usize = 64;

/// Prints both tables with `reps` repetitions per measurement.
pub fn defense_table(reps: usize) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let net = Arc::new(crate::zoo::load_model(crate::zoo::DEFAULT_MODEL)?);
    let all = crate::data::bundled_test_images().map_err(anyhow::Error::msg)?;
    let data = all.select(&(0..BATCH.min(all.len())).collect::<Vec<_>>());
    let x = &data.images;
    let n = x.batch() as f64;
    println!("command: {}", command.join(" "));
    println!(
        "model: {} ({}), {} bundled test images per batch, threads: {}\n",
        crate::zoo::DEFAULT_MODEL,
        net.config.summary(),
        x.batch(),
        rayon::current_num_threads()
    );
    println!("| step | µs per image | naive gradient µs per image | BPDA gradient µs per image |");
    println!("|---|---|---|---|");
    let mut engine = CpuEngine::new(net.clone())?;
    let opts = ForwardOptions::default();
    let fwd = super::timing::median_ms(reps, || {
        engine.forward(x, &opts)?;
        Ok(())
    })?;
    println!(
        "| network forward (for scale) | {:.1} | – | – |",
        1e3 * fwd / n
    );
    let g = Array::new(x.shape().to_vec(), vec![1.0; x.len()])?;
    for spec in CHAINS {
        let chain: Chain = spec.parse()?;
        let mut call = 0u64;
        let apply = super::timing::median_ms(reps, || {
            call += 1;
            chain.apply(
                x,
                &Draws::Seeded {
                    seed: 0,
                    call,
                    draw: 0,
                },
            )?;
            Ok(())
        })?;
        let applied = chain.apply(
            x,
            &Draws::Seeded {
                seed: 0,
                call: 0,
                draw: 0,
            },
        )?;
        let back = |mode| {
            super::timing::median_ms(reps, || {
                applied.backward(&g, mode)?;
                Ok(())
            })
        };
        let naive = back(GradientMode::Naive)?;
        let bpda = back(GradientMode::Bpda)?;
        println!(
            "| {spec} | {:.1} | {:.2} | {:.2} |",
            1e3 * apply / n,
            1e3 * naive / n,
            1e3 * bpda / n
        );
    }
    eot_table(&net, x, reps)
}

/// PGD-10 (ε = 0.1) on the batch: undefended, and behind random resize and pad with EOT 1 and
/// 10 (BPDA, which is the exact gradient for resize and pad).
fn eot_table(net: &Arc<crate::model::Network>, x: &Array, reps: usize) -> anyhow::Result<()> {
    println!(
        "\n| attack (cpu engine) | batch | PGD-10 ms | per image ms | per image per step ms |"
    );
    println!("|---|---|---|---|---|");
    let cfg = AttackConfig {
        kind: AttackKind::Pgd,
        eps: 0.1,
        steps: Some(10),
        ..AttackConfig::default()
    };
    let cases: [(&str, &str, usize); 4] = [
        ("PGD-10, no defence", "none", 1),
        ("PGD-10, jpeg:75 BPDA", "jpeg:75", 1),
        ("PGD-10, resize-pad EOT 1", "resize-pad", 1),
        ("PGD-10, resize-pad EOT 10", "resize-pad", 10),
    ];
    let b = x.batch() as f64;
    for (name, chain, eot) in cases {
        let defense = Defense {
            chain: chain.parse()?,
            eot,
            ..Defense::default()
        };
        let mut engine = Defended::new(Box::new(CpuEngine::new(net.clone())?), defense)?;
        let ms = super::timing::median_ms(reps.div_ceil(3), || {
            crate::attack::run(&mut engine, x, None, &cfg, &Cancel::new())?;
            Ok(())
        })?;
        println!(
            "| {name} | {} | {ms:.0} | {:.2} | {:.3} |",
            x.batch(),
            ms / b,
            ms / b / 10.0
        );
    }
    Ok(())
}
