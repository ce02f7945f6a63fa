//! `advlens bench --gpu --profile`: where the gpu engine's time goes on this machine's adapter.
//! For each batch size: the launches one attack step records, the wall-clock time of a forward
//! pass + input gradient and of one PGD step against the device time of its kernels (timestamp
//! queries, medians over runs), the overhead per launch that the difference implies, and the
//! device time per shader file, per entry point and per graph node.

use std::sync::Arc;

use super::timing::{bench_batch, median_ms};
use crate::attack::{AttackConfig, AttackKind};
use crate::cancel::Cancel;
use crate::engine::gpu::{AdapterPolicy, GpuContext, GpuEngine, Profile, ProfileRow};
use crate::engine::{Engine, ForwardOptions, Loss};
use crate::model::Network;

/// Rows shown per table (the rest are summed into one).
const TOP: usize = 12;

/// Profiles `net` on the best adapter at each batch size of `batches`, `reps` timed runs each.
pub fn profile_tables(net: &Arc<Network>, batches: &[usize], reps: usize) -> anyhow::Result<()> {
    let ctx = GpuContext::headless(AdapterPolicy::AllowSoftware)?;
    let mut engine = GpuEngine::new(net.clone(), ctx.clone())?;
    println!("model: {}", net.config.summary());
    println!("adapter: {}", ctx.adapter_name());
    // Before the wall-clock runs, so an adapter without timestamps fails at once.
    engine.require_profiling()?;
    for &b in batches {
        let (x, labels) = bench_batch(net, b)?;
        let loss = Loss::CrossEntropy { classes: labels };
        let opts = ForwardOptions::default();
        let grad_ms = median_ms(reps, || {
            engine.input_grad(&x, &loss, &opts)?;
            Ok(())
        })?;
        let steps = 10;
        let cfg = AttackConfig {
            kind: AttackKind::Pgd,
            steps: Some(steps),
            ..AttackConfig::default()
        };
        let pgd_ms = median_ms(reps.div_ceil(3), || {
            crate::attack::run(&mut engine, &x, None, &cfg, &Cancel::new())?;
            Ok(())
        })?;
        let runs = (0..reps.div_ceil(2).max(1))
            .map(|_| engine.profile(&x, &loss, &opts))
            .collect::<Result<Vec<_>, _>>()?;
        let profile = Profile::median(&runs)
            .ok_or_else(|| anyhow::anyhow!("the profiled runs differ in their launches"))?;
        print_profile(b, &profile, grad_ms, pgd_ms / steps as f64);
    }
    Ok(())
}

/// Prints one batch size's summary and tables.
fn print_profile(batch: usize, p: &Profile, grad_ms: f64, step_ms: f64) {
    let kernels = p.total_ms();
    let s = p.step;
    let launches = s.forward + s.backward;
    println!("\n### batch {batch}\n");
    println!(
        "one PGD step records {} launches ({} forward, {} backward, {} attack) and {} buffer clears",
        s.launches(),
        s.forward,
        s.backward,
        s.attack,
        s.clears
    );
    let rest = grad_ms - kernels;
    let overhead = if rest > 0.0 {
        format!(
            "the rest, {rest:.2} ms, is {:.1} µs per launch",
            rest * 1e3 / launches.max(1) as f64
        )
    } else {
        "the kernels' sum reaches the wall time: no overhead beyond them is measurable".into()
    };
    println!(
        "forward + input gradient: {grad_ms:.2} ms wall (median), {kernels:.2} ms in its \
         {launches} kernels (medians, each timed in its own pass); {overhead}"
    );
    println!(
        "PGD-10 on the device: {step_ms:.2} ms per step (median run / 10); kernels alone \
         {kernels:.2} ms, {:.0} % of the step",
        100.0 * kernels / step_ms.max(1e-9)
    );
    table("shader (kernel family)", &p.by_shader(), kernels);
    table("entry point", &p.by_entry(), kernels);
    table("node", &p.by_node(), kernels);
}

/// A markdown table of the first [`TOP`] rows, the rest summed, with each row's share.
fn table(what: &str, rows: &[ProfileRow], total: f64) {
    println!("\n| {what} | launches | ms | % |");
    println!("|---|---|---|---|");
    let share = |ms: f64| 100.0 * ms / total.max(1e-12);
    for r in rows.iter().take(TOP) {
        println!(
            "| {} | {} | {:.3} | {:.1} |",
            r.name,
            r.launches,
            r.ms,
            share(r.ms)
        );
    }
    if rows.len() > TOP {
        let rest = &rows[TOP..];
        let ms: f64 = rest.iter().map(|r| r.ms).sum();
        let n: usize = rest.iter().map(|r| r.launches).sum();
        println!(
            "| {} others | {n} | {ms:.3} | {:.1} |",
            rest.len(),
            share(ms)
        );
    }
}
