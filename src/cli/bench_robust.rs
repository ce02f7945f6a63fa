//! `advlens bench --robust`: throughput (images/s) of the reliable-evaluation attacks, APGD-CE
//! (100 steps), Square (5000 queries) and AutoAttack standard (without FAB-T), on the shipped
//! default model and the bundled Fashion-MNIST test images at ε = 0.1, cpu engine (and the gpu
//! engine with `--gpu`). The images are real ones because these attacks only keep working on
//! images that are still robust: their cost depends on the model's robustness.

use std::sync::Arc;
use std::time::Instant;

use crate::analysis::evaluate;
use crate::attack::{AttackConfig, AttackKind};
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::engine::cpu::CpuEngine;
use crate::engine::gpu::{AdapterPolicy, GpuContext, GpuEngine};

/// Prints the table for the first `n` bundled test images.
pub fn robust_table(n: usize, gpu: bool) -> anyhow::Result<()> {
    let net = Arc::new(crate::zoo::load_model(crate::zoo::DEFAULT_MODEL)?);
    let all = crate::data::bundled_test_images().map_err(anyhow::Error::msg)?;
    let data = all.select(&(0..n.min(all.len())).collect::<Vec<_>>());
    println!(
        "\nmodel: {} (builtin:default), {} bundled test images, L∞ ε = 0.1",
        net.config.summary(),
        data.len()
    );
    println!("| engine | attack | images | s | images/s | robust % |");
    println!("|---|---|---|---|---|---|");
    let mut engines: Vec<(String, Box<dyn Engine>)> =
        vec![("cpu".into(), Box::new(CpuEngine::new(net.clone())?))];
    if gpu {
        let ctx = GpuContext::headless(AdapterPolicy::AllowSoftware)?;
        let name = format!("gpu {}", ctx.adapter_name());
        engines.push((name, Box::new(GpuEngine::new(net.clone(), ctx)?)));
    }
    let attacks = [
        ("APGD-CE 100", AttackKind::ApgdCe),
        ("Square 5000", AttackKind::Square),
        (
            crate::attack::AUTOATTACK_STANDARD_NAME,
            AttackKind::AutoAttack,
        ),
    ];
    for (engine_name, engine) in &mut engines {
        for (name, kind) in attacks {
            let cfg = AttackConfig {
                kind,
                eps: 0.1,
                ..AttackConfig::default()
            };
            let started = Instant::now();
            let report = evaluate(
                engine.as_mut(),
                &data,
                &[cfg],
                100,
                false,
                &Cancel::new(),
                &mut |_, _| {},
            )?;
            let s = started.elapsed().as_secs_f64();
            let robust = report.rows.first().map_or(f64::NAN, |r| r.accuracy());
            println!(
                "| {engine_name} | {name} | {} | {s:.1} | {:.2} | {robust:.2} |",
                report.images,
                report.images as f64 / s
            );
        }
    }
    Ok(())
}
