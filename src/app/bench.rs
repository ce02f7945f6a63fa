//! `advlens bench --app`: the app's responsiveness without a window. Runs the real app (every
//! panel, the worker thread, the engine) on a headless egui context: the latency from an ε change
//! to the updated views for FGSM and PGD-10 on the default model, and the frame time (layout and
//! tessellation, median and p95) while ε is dragged, for the cpu engine and, with `--gpu`, the
//! gpu engine.

use std::time::{Duration, Instant};

use eframe::egui;

use super::AdvlensApp;
use super::settings::Settings;
use crate::attack::AttackKind;
use crate::engine::EngineChoice;
use crate::engine::gpu::{AdapterPolicy, GpuContext};

fn frame(ctx: &egui::Context, app: &mut AdvlensApp) -> Duration {
    let input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1280.0, 900.0),
        )),
        ..Default::default()
    };
    let t = Instant::now();
    let out = ctx.run_ui(input, |ui| app.show(ui));
    let _ = ctx.tessellate(out.shapes, out.pixels_per_point);
    t.elapsed()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Frames until the snapshot shows the current ε (the views are updated), or `None` after
/// `timeout`.
fn until_updated(ctx: &egui::Context, app: &mut AdvlensApp, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        frame(ctx, app);
        let eps = app.settings_mut().attack.eps;
        let done = app
            .snapshot()
            .is_some_and(|s| (s.cfg.eps - eps).abs() < 1e-9 && !app.is_busy());
        if done {
            return Some(t.elapsed());
        }

        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

/// Prints the latency and frame-time table.
pub fn run(reps: usize, gpu: bool) -> anyhow::Result<()> {
    let mut engines = vec![(EngineChoice::Cpu, None)];
    if gpu {
        let ctx = GpuContext::headless(AdapterPolicy::AllowSoftware)?;
        let name = ctx.adapter_name();
        engines.push((EngineChoice::Gpu, Some((ctx, name))));
    }
    println!(
        "| engine | attack | ε change → views ms (median) | frame ms while dragging (median) | frame ms (p95) |"
    );
    println!("|---|---|---|---|---|");
    for (choice, gpu_ctx) in engines {
        for (kind, steps) in [(AttackKind::Fgsm, None), (AttackKind::Pgd, Some(10))] {
            let ctx = egui::Context::default();
            let mut settings = Settings {
                engine: choice,
                ..Settings::default()
            };
            settings.attack.kind = kind;
            settings.attack.steps = steps;
            let mut app = AdvlensApp::with_settings(&ctx, settings, None, None)?;
            let label = match &gpu_ctx {
                Some((c, name)) => {
                    app.set_gpu(c.clone());
                    format!("gpu {name}")
                }
                None => "cpu".to_string(),
            };
            let timeout = Duration::from_secs(600);
            // Warm up: the first job builds the engine.
            until_updated(&ctx, &mut app, timeout)
                .ok_or_else(|| anyhow::anyhow!("the first result never arrived"))?;
            let mut latency = Vec::with_capacity(reps);
            for r in 0..reps.max(1) {
                // Values on the slider's n/255 grid, so the slider keeps them as they are.
                app.settings_mut().attack.eps = (4 + r % 8) as f32 / 255.0;
                let d = until_updated(&ctx, &mut app, timeout)
                    .ok_or_else(|| anyhow::anyhow!("a result never arrived"))?;
                latency.push(d.as_secs_f64() * 1e3);
            }
            // A drag: ε changes every frame; the worker keeps only the newest job.
            let mut frames = Vec::with_capacity(120);
            for f in 0..120 {
                app.settings_mut().attack.eps = (4 + f % 12) as f32 / 255.0;
                frames.push(frame(&ctx, &mut app).as_secs_f64() * 1e3);
            }
            let lat = percentile(&mut latency, 0.5);
            let med = percentile(&mut frames, 0.5);
            let p95 = percentile(&mut frames, 0.95);
            println!("| {label} | {kind} | {lat:.1} | {med:.2} | {p95:.2} |");
        }
    }
    Ok(())
}
