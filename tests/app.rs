//! The app without a window: the worker, the loader, stale jobs, exports, errors, the file-dialog
//! plumbing (with a backend that answers instead of a dialog), and the whole app under
//! egui_kittest, with a few snapshots rendered on the wgpu software adapter (lavapipe).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use advlens::analysis::feature_export_size;
use advlens::analysis::feature_grid;
use advlens::analysis::{AnalyseJob, Snapshot, analyse};
use advlens::analysis::{Export, save_feature_maps};
use advlens::app::{
    AdvlensApp, CURVE_APGD_STEPS, CurveAttack, DELTA_SCALE_TOGGLE, DIALOG_THREAD, DialogAnswer,
    DialogBackend, DialogPurpose, Dialogs, ImageSource, Reply, Settings, SlowState, Worker,
};
use advlens::attack::{AttackConfig, AttackKind, Flag};
use advlens::cancel::Cancel;
use advlens::engine::EngineChoice;
use advlens::engine::cpu::CpuEngine;
use advlens::model::TapKind;
use advlens::model::{DenoiseVariant, Placement};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};

mod common;

fn job(id: u64, net: &Arc<advlens::model::Network>, cfg: AttackConfig) -> AnalyseJob {
    AnalyseJob {
        id,
        net: net.clone(),
        model_name: "builtin:default".into(),
        x: Arc::new(advlens::zoo::default_image()),
        label: Some(9),
        source: "fashion:0".into(),
        cfg,
        engine: EngineChoice::Cpu,
        defense: advlens::defense::Defense::default(),
        cancel: Cancel::new(),
    }
}

fn fgsm() -> AttackConfig {
    AttackConfig {
        kind: AttackKind::Fgsm,
        ..AttackConfig::default()
    }
}

fn default_snapshot() -> Snapshot {
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let mut engine = CpuEngine::new(net.clone()).unwrap();
    analyse(&mut engine, &job(0, &net, fgsm())).unwrap()
}

/// The name of the tap after the app model's second denoise block.
fn second_denoise_output(app: &AdvlensApp) -> String {
    app.network()
        .graph
        .taps_denoise_first()
        .iter()
        .find(|t| t.kind == TapKind::DenoiseAfter(1))
        .unwrap()
        .name
        .clone()
}

#[test]
fn worker_computes_taps_for_the_default_model() {
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let mut w = Worker::start(Arc::new(|| {})).unwrap();
    w.submit(job(7, &net, fgsm()));
    let Some(Reply::Analysed(s)) = w.wait(Duration::from_secs(120)) else {
        panic!("no result");
    };
    assert_eq!(s.id, 7);
    assert_eq!(s.x_adv.shape(), &[1, 1, 28, 28]);
    assert_eq!(s.taps.len(), net.graph.taps.len());
    let blocks = net.graph.denoise_blocks.len();
    assert!(blocks > 0);
    for b in 0..blocks {
        let before = s.taps.iter().find(|t| t.kind == TapKind::DenoiseBefore(b));
        let after = s.taps.iter().find(|t| t.kind == TapKind::DenoiseAfter(b));
        let (before, after) = (before.unwrap(), after.unwrap());
        assert_eq!(before.clean.shape(), after.clean.shape());
        assert_eq!(before.clean.shape(), before.adv.shape());
        assert!(before.chw().is_some());
    }
    // FGSM moves every pixel by at most ε.
    let linf = s.delta().iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(linf <= fgsm().eps + 1e-6, "{linf}");
    assert_eq!(s.record.images.len(), 1);
    assert_eq!(s.record.images[0].clean_top5.len(), 5);
    assert!(s.taps.iter().any(|t| t.amplification > 0.0));
}

#[test]
fn worker_runs_the_gpu_engine_on_the_device_it_is_given() {
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let Some(ctx) = common::gpu_context() else {
        return;
    };
    let mut w = Worker::start(Arc::new(|| {})).unwrap();
    w.set_gpu(ctx);
    let mut j = job(3, &net, fgsm());
    j.engine = EngineChoice::Gpu;
    w.submit(j);
    let Some(Reply::Analysed(s)) = w.wait(Duration::from_secs(300)) else {
        panic!("no result");
    };
    assert!(s.record.engine.starts_with("gpu: "), "{}", s.record.engine);
    let mut cpu = CpuEngine::new(net.clone()).unwrap();
    let want = analyse(&mut cpu, &job(3, &net, fgsm())).unwrap();
    let same = s
        .x_adv
        .data()
        .iter()
        .zip(want.x_adv.data())
        .filter(|(a, b)| (*a - *b).abs() < 1e-4)
        .count();
    assert!(same * 100 >= 98 * s.x_adv.len(), "gpu and cpu FGSM differ");
}

#[test]
fn newer_job_supersedes_a_stale_one() {
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let mut w = Worker::start(Arc::new(|| {})).unwrap();
    let slow = AttackConfig {
        kind: AttackKind::Pgd,
        steps: Some(5000),
        ..AttackConfig::default()
    };
    let stale = job(1, &net, slow);
    let stale_cancel = stale.cancel.clone();
    w.submit(stale);
    w.submit(job(2, &net, fgsm()));
    assert!(stale_cancel.is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the newer job never arrived");
        match w.wait(Duration::from_secs(1)) {
            Some(Reply::Analysed(s)) => {
                assert_eq!(s.id, 2, "a stale job was delivered");
                break;
            }
            Some(Reply::Failed { error, .. }) => panic!("{error}"),
            _ => {}
        }
    }
    // Nothing else follows.
    assert!(w.wait(Duration::from_millis(300)).is_none());
}

#[test]
fn feature_map_export_writes_a_png_of_the_expected_size() {
    let s = default_snapshot();
    let tap = s
        .taps
        .iter()
        .find(|t| matches!(t.kind, TapKind::DenoiseBefore(_)))
        .unwrap()
        .name
        .clone();
    let grid = feature_grid(&s, &tap, 0).unwrap();
    let titles: Vec<&str> = grid.columns.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["block input", "op output", "block output"]);
    let block = tap.strip_suffix("/before").unwrap();
    assert_eq!(grid.columns[1].tap, format!("{block}/op"));
    // The operation changes the features (the maps differ from the block's input).
    assert_ne!(grid.columns[1].clean, grid.columns[0].clean);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maps.png");
    save_feature_maps(&grid, &path).unwrap();
    if let Some(keep) = std::env::var_os("ADVLENS_KEEP_EXPORT") {
        std::fs::copy(&path, keep).unwrap();
    }
    let img = image::open(&path).unwrap().to_rgb8();
    let (w, h) = feature_export_size(&grid);
    assert_eq!((img.width(), img.height()), (w, h));
    // Every cell is at least its native size.
    assert!(h as usize >= 3 * grid.h && w as usize >= 3 * grid.w);
    let first = *img.get_pixel(0, 0);
    assert!(img.pixels().any(|p| *p != first), "the image is uniform");
    // With the |Δ| rows on their own scale the image gains a second colour bar (wider) and the
    // |Δ| cells are drawn stronger; the clean and adversarial rows stay as they were.
    assert!(
        grid.delta_scale < grid.scale,
        "|Δ| already fills the shared scale"
    );
    let own = grid.clone().with_delta_own_scale(true);
    let own_path = dir.path().join("maps_own.png");
    save_feature_maps(&own, &own_path).unwrap();
    let own_img = image::open(&own_path).unwrap().to_rgb8();
    assert!(own_img.width() > img.width());
    assert_eq!(own_img.height(), img.height());
    // Over the shared image's area (the grid and the shared bar), only the |Δ| cells differ.
    let redness = |im: &image::RgbImage| -> u64 {
        (0..img.height())
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .map(|(x, y)| {
                let p = im.get_pixel(x, y);
                u64::from(p[0].saturating_sub(p[1]))
            })
            .sum()
    };
    assert!(redness(&own_img) > redness(&img));
}

#[test]
fn adversarial_perturbation_and_record_exports() {
    let s = default_snapshot();
    let dir = tempfile::tempdir().unwrap();
    let adv = dir.path().join("adv.png");
    let pert = dir.path().join("pert.png");
    let rec = dir.path().join("record.json");
    advlens::analysis::save_adversarial(&s, &adv).unwrap();
    advlens::analysis::save_perturbation(&s, &pert).unwrap();
    advlens::analysis::save_record(&s, &rec).unwrap();
    assert_eq!(image::open(&adv).unwrap().width(), 28);
    assert_eq!(image::open(&pert).unwrap().height(), 28);
    let back: advlens::attack::RunRecord =
        serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    assert_eq!(back.images.len(), 1);
    assert_eq!(back.attack.kind, AttackKind::Fgsm);
}

fn headless_app() -> AdvlensApp {
    AdvlensApp::with_settings(&egui::Context::default(), Settings::default(), None, None).unwrap()
}

/// Polls the app's worker and loader until no file is being read (the loader runs in real time).
fn wait_loaded(app: &mut AdvlensApp) {
    let deadline = Instant::now() + Duration::from_secs(120);
    app.poll_worker();
    while app.is_loading() {
        assert!(Instant::now() < deadline, "the loader never answered");
        std::thread::sleep(Duration::from_millis(10));
        app.poll_worker();
    }
}

#[test]
fn bad_image_paths_give_errors_not_panics() {
    let mut app = headless_app();
    let before = app.input().clone();
    app.open_image(Path::new("/nonexistent/advlens-missing.png"));
    wait_loaded(&mut app);
    assert_eq!(app.errors.list.len(), 1);
    assert!(app.errors.list[0].detail.contains("advlens-missing.png"));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"this is not an image").unwrap();
    app.open_image(&junk);
    wait_loaded(&mut app);
    assert_eq!(app.errors.list.len(), 2);
    assert_eq!(app.input(), &before, "the image is unchanged");
    assert_eq!(app.settings.image, ImageSource::default());
}

#[test]
fn a_real_image_file_is_converted_to_the_model_input() {
    let mut app = headless_app();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("colour.png");
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 0]));
    img.save(&path).unwrap();
    app.open_image(&path);
    wait_loaded(&mut app);
    assert!(app.errors.list.is_empty(), "{:?}", app.errors.list);
    assert_eq!(app.input().shape(), &[1, 1, 28, 28]);
    assert_eq!(app.settings.recent_images.first(), Some(&path));
}

#[test]
fn images_decode_off_the_ui_thread_and_the_newest_request_wins() {
    let mut app = headless_app();
    let before = app.input().clone();
    let dir = tempfile::tempdir().unwrap();
    // Large enough that decoding and resizing take a while.
    let big = dir.path().join("big.png");
    image::GrayImage::from_fn(3000, 3000, |x, y| image::Luma([((x ^ y) & 0xff) as u8]))
        .save(&big)
        .unwrap();
    let small = dir.path().join("small.png");
    image::GrayImage::from_fn(30, 30, |x, _| image::Luma([(x * 8) as u8]))
        .save(&small)
        .unwrap();
    app.open_image(&big);
    // open_image returned without decoding: the old image is still the input.
    assert!(app.is_loading());
    assert_eq!(app.input(), &before);
    // A newer request supersedes the big one, whenever its reply arrives.
    app.open_image(&small);
    wait_loaded(&mut app);
    assert!(app.errors.list.is_empty(), "{:?}", app.errors.list);
    assert_eq!(app.settings.image, ImageSource::File(small.clone()));
    assert_ne!(app.input(), &before);
    // Nothing older arrives afterwards.
    std::thread::sleep(Duration::from_millis(300));
    app.poll_worker();
    assert_eq!(app.settings.image, ImageSource::File(small));
    // A bundled image switches at once and supersedes a decode in flight.
    app.open_image(&big);
    assert!(app.is_loading());
    app.set_image(&ImageSource::Bundled(2)).unwrap();
    assert!(!app.is_loading());
    std::thread::sleep(Duration::from_millis(300));
    wait_loaded(&mut app);
    assert_eq!(app.settings.image, ImageSource::Bundled(2));
}

#[test]
fn a_new_model_gets_the_open_image_in_its_own_input_shape() {
    let mut cfg = common::tiny_config(DenoiseVariant::Mean, Placement::AfterStage);
    cfg.in_channels = 3;
    cfg.image_size = [16, 16];
    cfg.mean = vec![0.5; 3];
    cfg.std = vec![0.25; 3];
    let net = common::randomized(cfg, 4);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("rgb16.safetensors");
    advlens::model::weights::save(&net, &model).unwrap();
    let image = dir.path().join("colour.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90]))
        .save(&image)
        .unwrap();
    let mut app = headless_app();
    // Both at once: whichever the loader answers first, the image ends up in the new model's
    // input shape (converted again when the model arrives after it).
    app.open_image(&image);
    app.open_model(model.clone());
    wait_loaded(&mut app);
    assert!(app.errors.list.is_empty(), "{:?}", app.errors.list);
    assert_eq!(app.network().input_shape(), [3, 16, 16]);
    assert_eq!(app.input().shape(), &[1, 3, 16, 16]);
    assert_eq!(app.settings.image, ImageSource::File(image));
    assert_eq!(app.settings.model.as_ref(), Some(&model));
    // A job runs on the new model.
    app.submit_if_changed();
    assert!(app.is_busy());
}

#[test]
fn a_bad_model_file_gives_an_error_not_a_panic() {
    let mut app = headless_app();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, b"not safetensors").unwrap();
    app.open_model(path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.errors.list.is_empty() {
        assert!(Instant::now() < deadline, "no error arrived");
        std::thread::sleep(Duration::from_millis(20));
        app.poll_worker();
    }
    assert!(app.errors.list[0].detail.contains("bad.safetensors"));
    assert_eq!(app.network().input_shape(), [1, 28, 28]);
}

#[test]
fn the_shipped_models_switch_at_once_and_are_remembered() {
    let mut app = headless_app();
    assert!(!app.network().graph.denoise_blocks.is_empty());
    app.use_builtin("clean");
    assert!(!app.is_loading(), "embedded: no loader round trip");
    assert!(app.network().graph.denoise_blocks.is_empty());
    assert_eq!(app.model_name(), "builtin:clean");
    assert_eq!(app.settings.model, Some(PathBuf::from("builtin:clean")));
    // The next start opens it again, through the loader like a file, without making it recent.
    let mut again =
        AdvlensApp::with_settings(&egui::Context::default(), app.settings.clone(), None, None)
            .unwrap();
    wait_loaded(&mut again);
    assert!(again.errors.list.is_empty(), "{:?}", again.errors.list);
    assert_eq!(again.model_name(), "builtin:clean");
    assert!(again.network().graph.denoise_blocks.is_empty());
    assert!(again.settings.recent_models.is_empty());
    // The default is what an unset setting means; an unknown name is an error, nothing changes.
    app.use_builtin(advlens::zoo::SHIPPED[0].name);
    assert_eq!(app.settings.model, None);
    assert!(!app.network().graph.denoise_blocks.is_empty());
    app.use_builtin("nonexistent");
    assert_eq!(app.errors.list.len(), 1);
    assert!(app.errors.list[0].detail.contains("builtin:pgd"));
    assert!(!app.network().graph.denoise_blocks.is_empty());
}

#[test]
fn the_built_in_menu_lists_the_shipped_models_and_switches() {
    let mut harness = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(|cc| {
            AdvlensApp::with_settings(&cc.egui_ctx, Settings::default(), None, None).unwrap()
        });
    harness.step();
    harness.get_by_label("built-in").click();
    harness.run_steps(2);
    let default = advlens::zoo::SHIPPED[0].name;
    harness.get_by_label(&format!("builtin:{default} (default)"));
    for m in &advlens::zoo::SHIPPED[1..] {
        harness.get_by_label(&format!("builtin:{}", m.name));
    }
    harness.get_by_label("builtin:pgd").click();
    harness.run_steps(2);
    assert_eq!(harness.state().model_name(), "builtin:pgd");
    assert!(harness.state().network().graph.denoise_blocks.is_empty());
    // The view recomputes on the new model.
    step_until(&mut harness, |a| {
        a.snapshot()
            .is_some_and(|s| s.record.model == "builtin:pgd")
            && !a.is_busy()
    });
}

/// Steps the harness until `done` holds (the worker runs in real time).
fn step_until(harness: &mut Harness<'_, AdvlensApp>, done: impl Fn(&AdvlensApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(harness.state()) {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
    harness.step();
    harness.step();
}

#[test]
fn the_app_opens_and_recomputes_when_controls_change() {
    let mut harness = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(|cc| AdvlensApp::new(cc).unwrap());
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    let first = harness.state().snapshot().unwrap().id;
    // Every input widget has an accessible name.
    let unnamed = harness.unnamed_widgets();
    assert!(unnamed.is_empty(), "{unnamed:#?}");
    // The controls are there, by label.
    harness.get_by_label("bypass denoise blocks");
    harness.get_by_label("sort by |Δ|");
    // Toggling a control submits a new job whose result arrives.
    harness.get_by_label("bypass denoise blocks").click();
    harness.step();
    assert!(harness.state().settings.attack.bypass_denoise);
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| s.cfg.bypass_denoise) && !a.is_busy()
    });
    let snap = harness.state().snapshot().unwrap();
    assert!(snap.id > first);
    // With the blocks bypassed, after == before for every denoise block.
    for t in &snap.taps {
        if let TapKind::DenoiseAfter(b) = t.kind {
            let before = snap
                .taps
                .iter()
                .find(|p| p.kind == TapKind::DenoiseBefore(b))
                .unwrap();
            assert_eq!(before.clean, t.clean);
        }
    }
    // Moving ε changes the adversarial image.
    let old = harness.state().snapshot().unwrap().x_adv.clone();
    harness.state_mut().settings.attack.eps = 32.0 / 255.0;
    harness.step();
    step_until(&mut harness, |a| {
        a.snapshot()
            .is_some_and(|s| (s.cfg.eps - 32.0 / 255.0).abs() < 1e-9)
            && !a.is_busy()
    });
    assert_ne!(harness.state().snapshot().unwrap().x_adv, old);
    // The export goes through the same code as the menu.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fm.png");
    harness.state().export(Export::FeatureMaps, &path).unwrap();
    assert!(image::open(&path).unwrap().width() > 0);
}

#[test]
fn robustness_curve_reports_progress_and_accuracy() {
    use advlens::analysis::{CurveProgress, RobustnessJob, robustness_curve};
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let set = advlens::data::bundled_test_images().unwrap();
    let sub = set.select(&(0..30).collect::<Vec<_>>());
    let job = RobustnessJob {
        net,
        images: sub.images,
        labels: sub.labels,
        cfg: fgsm(),
        eps: vec![0.0, 16.0 / 255.0],
        engine: advlens::engine::EngineChoice::Cpu,
        gpu: None,
        defense: advlens::defense::Defense::default(),
    };
    let run = |job: &RobustnessJob| {
        let got = std::sync::Mutex::new(vec![]);
        robustness_curve(job, &Cancel::new(), &|p| got.lock().unwrap().push(p)).unwrap();
        let got = got.into_inner().unwrap();
        assert!(got.contains(&CurveProgress::Fraction(1.0)));
        got.iter()
            .filter_map(|p| match p {
                CurveProgress::Point { eps, accuracy } => Some((*eps, *accuracy)),
                _ => None,
            })
            .collect::<Vec<(f32, f32)>>()
    };
    let points = run(&job);
    assert_eq!(points.len(), 2);
    assert!(points.iter().all(|(_, a)| (0.0..=1.0).contains(a)));
    assert!(points[1].1 <= points[0].1, "{points:?}");
    // A cancelled job stops with an error instead of finishing.
    let cancel = Cancel::new();
    cancel.cancel();
    assert!(robustness_curve(&job, &cancel, &|_| {}).is_err());
    // The same curve on the gpu engine (the window's device in the app; lavapipe here): FGSM
    // steps by the gradient's sign, so an entry near zero may flip; allow one image of 30.
    let Some(ctx) = common::gpu_context() else {
        return;
    };
    let on_gpu = RobustnessJob {
        engine: advlens::engine::EngineChoice::Gpu,
        gpu: Some(ctx),
        images: job.images.clone(),
        labels: job.labels.clone(),
        cfg: job.cfg.clone(),
        eps: job.eps.clone(),
        net: job.net.clone(),
        defense: job.defense.clone(),
    };
    let gpu_points = run(&on_gpu);
    for ((e, a), (eg, ag)) in points.iter().zip(&gpu_points) {
        assert_eq!(e, eg);
        assert!(
            (a - ag).abs() <= 1.0 / 30.0 + 1e-6,
            "cpu {a} vs gpu {ag} at ε {e}"
        );
    }
}

#[test]
fn switching_tap_and_channel_updates_the_views() {
    let mut harness = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(|cc| AdvlensApp::new(cc).unwrap());
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    let first_tap = harness.state().settings.tap.clone().unwrap();
    assert!(
        first_tap.contains("denoise"),
        "denoise taps come first: {first_tap}"
    );
    // Column headers (the amplification legend uses the same words).
    for title in advlens::analysis::DENOISE_COLUMNS {
        assert!(harness.query_all_by_label(title).count() >= 2, "{title}");
    }
    let other = second_denoise_output(harness.state());
    harness.state_mut().settings.tap = Some(other.clone());
    harness.state_mut().settings.channel = 3;
    harness.step();
    harness.step();
    harness.get_by_label(&format!("channels of {other}"));
    harness.get_by_label_contains("channel 3 ·");
    // Switching the attack recomputes.
    harness.state_mut().settings.attack.kind = AttackKind::Bim;
    harness.step();
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| s.cfg.kind == AttackKind::Bim) && !a.is_busy()
    });
}

/// The toggle beside the feature maps gives the |Δ| rows their own colour scale (their largest
/// value, well below the shared scale on the default model) and a second colour bar; turning it
/// off again puts them back on the shared scale.
#[test]
fn the_delta_scale_toggle_gives_the_difference_rows_their_own_scale() {
    let mut harness = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(|cc| AdvlensApp::new(cc).unwrap());
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    harness.run_steps(2);
    let (shared, delta) = harness.state().feature_map_scales().unwrap();
    assert_eq!(delta, shared, "|Δ| starts on the shared scale");
    assert!(!harness.state().settings.delta_own_scale);
    harness.get_by_label(DELTA_SCALE_TOGGLE).click();
    harness.run_steps(2);
    assert!(harness.state().settings.delta_own_scale);
    let (shared_now, own) = harness.state().feature_map_scales().unwrap();
    assert_eq!(shared_now, shared, "the maps' scale does not change");
    assert!(
        own > 0.0 && own < shared,
        "|Δ| scale {own} vs shared {shared}"
    );
    // The colour bars show both ranges.
    assert!(harness.query_all_by_label(&format!("+{shared:.3}")).count() >= 1);
    harness.get_by_label(&format!("|Δ| {own:.3}"));
    // The grid shown is the one exported.
    let grid_delta = {
        let app = harness.state();
        let snap = app.snapshot().unwrap();
        let tap = app.settings.tap.clone().unwrap();
        feature_grid(snap, &tap, app.settings.channel)
            .unwrap()
            .delta_scale
    };
    assert_eq!(own, grid_delta);
    harness.get_by_label(DELTA_SCALE_TOGGLE).click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().feature_map_scales().unwrap(),
        (shared, shared)
    );
    assert_eq!(
        harness.query_all_by_label(&format!("|Δ| {own:.3}")).count(),
        0
    );
}

/// Starts the real binary in a window under `xvfb-run` and takes a screenshot through egui's
/// screenshot command (the app closes itself afterwards). Skipped where xvfb-run is missing, unless
/// `ADVLENS_REQUIRE_XVFB` is set (.ci/run sets it after installing Xvfb).
/// `ADVLENS_SMOKE_BIN` overrides the binary (useful when several checkouts share one target
/// folder and the uplifted binary may come from another one).
#[test]
#[ignore = "opens a real window under xvfb-run: cargo test --release --test app -- --ignored"]
fn smoke_window_under_xvfb() {
    if std::process::Command::new("xvfb-run")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("ADVLENS_REQUIRE_XVFB").is_none(),
            "xvfb-run not found although ADVLENS_REQUIRE_XVFB is set"
        );
        common::skip_note(
            "skipped: xvfb-run not found (apt install xvfb xauth to run the window smoke test)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("window.png");
    let runtime = dir.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    let status = std::process::Command::new("timeout")
        .args(["90", "xvfb-run", "-a", "-s", "-screen 0 1400x1000x24"])
        .arg(std::env::var_os("ADVLENS_SMOKE_BIN").unwrap_or(env!("CARGO_BIN_EXE_advlens").into()))
        .env("ADVLENS_SCREENSHOT", &shot)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let img = image::open(&shot).unwrap();
    assert!(img.width() >= 640 && img.height() >= 480);
}

#[test]
fn errors_show_in_the_status_bar_and_open_a_window() {
    let mut harness = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(|cc| AdvlensApp::new(cc).unwrap());
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    harness.get_by_label("no errors");
    harness
        .state_mut()
        .open_image(Path::new("/nonexistent/advlens-missing.png"));
    step_until(&mut harness, |a| !a.errors.list.is_empty());
    harness.get_by_label_contains("advlens-missing.png").click();
    harness.step();
    harness.step();
    assert!(harness.state().errors.open);
    harness.get_by_label("Clear").click();
    harness.step();
    harness.step();
    assert!(harness.state().errors.list.is_empty());
    // The app keeps working: the previous result is still shown.
    assert!(harness.state().snapshot().is_some());
}

/// A file dropped on the window, as the integration would hand it over.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn the_slider_moves_epsilon_and_dropped_images_open() {
    let mut harness = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(|cc| AdvlensApp::new(cc).unwrap());
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    let eps = harness.state().settings.attack.eps;
    let before = harness.state().snapshot().unwrap().x_adv.clone();
    harness.get_by_role(egui::accesskit::Role::Slider).focus();
    harness.step();
    for _ in 0..8 {
        harness.key_press(egui::Key::ArrowRight);
        harness.step();
    }
    let moved = harness.state().settings.attack.eps;
    assert!(moved > eps, "{moved} > {eps}");
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| s.cfg.eps == moved) && !a.is_busy()
    });
    assert_ne!(harness.state().snapshot().unwrap().x_adv, before);
    // Drop an image file on the window.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.png");
    image::GrayImage::from_fn(40, 40, |x, y| image::Luma([((x * y) % 256) as u8]))
        .save(&path)
        .unwrap();
    harness
        .input_mut()
        .dropped_files
        .push(Arc::new(Dropped(path.clone())));
    harness.step();
    let file = ImageSource::File(path);
    step_until(&mut harness, |a| a.settings.image == file);
    step_until(&mut harness, |a| {
        a.snapshot()
            .is_some_and(|s| s.record.images[0].source.ends_with("dropped.png"))
            && !a.is_busy()
    });
}

/// A dialog backend that answers every purpose from a table, recording the thread it ran on.
fn answering_backend(
    answers: Vec<(DialogPurpose, PathBuf)>,
    threads: Arc<Mutex<Vec<String>>>,
) -> DialogBackend {
    Arc::new(move |purpose| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        threads.lock().unwrap().push(name);
        answers
            .iter()
            .find(|(p, _)| *p == purpose)
            .map(|(_, path)| path.clone())
    })
}

fn app_harness() -> Harness<'static, AdvlensApp> {
    Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(|cc| AdvlensApp::new(cc).unwrap())
}

#[test]
fn dialog_answers_open_images_and_write_exports() {
    let dir = tempfile::tempdir().unwrap();
    let picked = dir.path().join("picked.png");
    image::GrayImage::from_fn(50, 50, |x, y| image::Luma([((x + 2 * y) * 2) as u8]))
        .save(&picked)
        .unwrap();
    let maps = dir.path().join("maps.png");
    let record = dir.path().join("record.json");
    let threads = Arc::new(Mutex::new(vec![]));
    let mut harness = app_harness();
    harness.state_mut().set_dialog_backend(answering_backend(
        vec![
            (DialogPurpose::OpenImage, picked.clone()),
            (DialogPurpose::Export(Export::FeatureMaps), maps.clone()),
            (DialogPurpose::Export(Export::Record), record.clone()),
        ],
        threads.clone(),
    ));
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    // Ctrl+O: the dialog runs on its helper thread, its answer opens the image.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::O);
    harness.step();
    let file = ImageSource::File(picked.clone());
    step_until(&mut harness, |a| {
        a.settings.image == file
            && a.snapshot()
                .is_some_and(|s| s.record.images[0].source.ends_with("picked.png"))
            && !a.is_busy()
    });
    assert_eq!(threads.lock().unwrap().as_slice(), [DIALOG_THREAD]);
    // Ctrl+S: the feature maps are written where the save dialog said.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    harness.step();
    step_until(&mut harness, |a| {
        a.open_dialog().is_none() && maps.exists() && a.pending_writes() == 0
    });
    assert!(image::open(&maps).unwrap().width() > 0);
    harness.step();
    harness.get_by_label_contains("wrote");
    // The File menu's "Export record (JSON)…".
    harness.get_by_label("File").click();
    harness.run_steps(4);
    harness.get_by_label("Export record (JSON)…").click();
    harness.step();
    step_until(&mut harness, |a| {
        a.open_dialog().is_none() && record.exists()
    });
    let back: advlens::attack::RunRecord =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert!(back.images[0].source.ends_with("picked.png"));
    // A cancelled dialog (the backend has no answer for a screenshot) changes nothing.
    harness.key_press_modifiers(
        egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
        egui::Key::S,
    );
    harness.step();
    step_until(&mut harness, |a| a.open_dialog().is_none());
    assert!(
        harness.state().errors.list.is_empty(),
        "{:?}",
        harness.state().errors.list
    );
    assert_eq!(threads.lock().unwrap().len(), 4);
}

#[test]
fn one_dialog_at_a_time_and_the_ui_keeps_working_while_it_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let picked = dir.path().join("later.png");
    image::GrayImage::from_fn(30, 20, |x, _| image::Luma([(x * 8) as u8]))
        .save(&picked)
        .unwrap();
    // The "user" answers when the test says so.
    let (answer_tx, answer_rx) = std::sync::mpsc::channel::<Option<PathBuf>>();
    let answer_rx = Arc::new(Mutex::new(answer_rx));
    let calls = Arc::new(Mutex::new(vec![]));
    let backend: DialogBackend = {
        let calls = calls.clone();
        Arc::new(move |purpose| {
            calls.lock().unwrap().push(purpose);
            answer_rx.lock().unwrap().recv().ok().flatten()
        })
    };
    let mut harness = app_harness();
    harness.state_mut().set_dialog_backend(backend);
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    harness.get_by_label("File").click();
    harness.run_steps(4);
    harness.get_by_label("Open image…  (Ctrl+O)").click();
    harness.step();
    harness.step();
    assert_eq!(
        harness.state().open_dialog(),
        Some(DialogPurpose::OpenImage)
    );
    harness.get_by_label("waiting for the file dialog…");
    // Further requests are ignored while it is open.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    harness.step();
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::O);
    harness.step();
    assert_eq!(
        harness.state().open_dialog(),
        Some(DialogPurpose::OpenImage)
    );
    // The UI keeps running: a new ε is computed while the dialog is open.
    harness.state_mut().settings.attack.eps = 24.0 / 255.0;
    step_until(&mut harness, |a| {
        a.snapshot()
            .is_some_and(|s| (s.cfg.eps - 24.0 / 255.0).abs() < 1e-9)
            && !a.is_busy()
    });
    assert_eq!(
        harness.state().open_dialog(),
        Some(DialogPurpose::OpenImage)
    );
    assert_eq!(calls.lock().unwrap().as_slice(), [DialogPurpose::OpenImage]);
    // The user picks a file: it opens.
    answer_tx.send(Some(picked.clone())).unwrap();
    let file = ImageSource::File(picked);
    step_until(&mut harness, |a| a.settings.image == file);
    assert_eq!(harness.state().open_dialog(), None);
    assert!(
        harness
            .query_by_label("waiting for the file dialog…")
            .is_none()
    );
    // The next dialog opens again; cancelling it changes nothing.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::O);
    harness.step();
    assert_eq!(
        harness.state().open_dialog(),
        Some(DialogPurpose::OpenImage)
    );
    answer_tx.send(None).unwrap();
    step_until(&mut harness, |a| a.open_dialog().is_none());
    assert_eq!(harness.state().settings.image, file);
    assert!(harness.state().errors.list.is_empty());
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[test]
fn a_dialog_thread_that_dies_is_reported_and_the_next_dialog_opens() {
    let mut dialogs = Dialogs::new(Arc::new(|_| panic!("the dialog backend failed")));
    let wake: advlens::app::Waker = Arc::new(|| {});
    assert!(dialogs.open(DialogPurpose::OpenModel, &wake).unwrap());
    assert!(
        !dialogs.open(DialogPurpose::OpenImage, &wake).unwrap(),
        "one at a time"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        if let Some(a) = dialogs.poll() {
            break a;
        }
        assert!(Instant::now() < deadline, "no answer");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(answer.unwrap_err().contains("without an answer"));
    assert_eq!(dialogs.open_purpose(), None);
    dialogs.set_backend(Arc::new(|_| Some(PathBuf::from("/tmp/x.safetensors"))));
    assert!(dialogs.open(DialogPurpose::OpenModel, &wake).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        if let Some(a) = dialogs.poll() {
            break a;
        }
        assert!(Instant::now() < deadline, "no answer");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        answer.unwrap(),
        DialogAnswer {
            purpose: DialogPurpose::OpenModel,
            path: Some(PathBuf::from("/tmp/x.safetensors")),
        }
    );
}

/// The size of the window in the snapshots.
const SNAPSHOT_SIZE: [f32; 2] = [1280.0, 900.0];
/// The control panel's default width (with its margin).
const CONTROLS_WIDTH: f32 = 296.0;
/// The smallest and a common large screen: every panel must be fully visible on both.
const SMALL_SCREEN: [f32; 2] = [1280.0, 800.0];
const LARGE_SCREEN: [f32; 2] = [1920.0, 1080.0];

/// The window for snapshots: fixed size, default settings (fixed seed), no adapter name, rendered
/// on the wgpu software adapter that egui_kittest prefers (lavapipe); the first result is in.
fn snapshot_harness() -> Option<Harness<'static, AdvlensApp>> {
    sized_snapshot_harness(SNAPSHOT_SIZE)
}

fn sized_snapshot_harness(size: [f32; 2]) -> Option<Harness<'static, AdvlensApp>> {
    common::gpu_context()?;
    let mut harness = Harness::builder()
        .with_size(size)
        .with_render_cursor(false)
        .wgpu()
        .build_eframe(|cc| {
            AdvlensApp::with_settings(&cc.egui_ctx, Settings::default(), None, None).unwrap()
        });
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    Some(harness)
}

/// Takes the snapshot `name` once the views have settled. The status bar is masked: it shows the
/// engine's thread count and the recompute time, which depend on the machine, and their widths
/// move everything after them (other tests check its text).
fn settled_snapshot(harness: &mut Harness<'_, AdvlensApp>, name: &str) {
    harness.run_steps(4);
    let row = harness.get_by_label_contains("engine cpu").rect();
    let width = harness.ctx.content_rect().width();
    let status = egui::Rect::from_min_max(
        egui::pos2(0.0, row.min.y - 3.0),
        egui::pos2(width, row.max.y + 3.0),
    );
    harness.mask(status);
    // The photos note offers EfficientNet-Lite0 only where scripts/fetch-models.sh has fetched
    // it, so it differs between machines: mask the control panel from its heading down.
    let photos = harness.get_by_label("photos").rect();
    harness.mask(egui::Rect::from_min_max(
        egui::pos2(0.0, photos.min.y - 2.0),
        egui::pos2(CONTROLS_WIDTH, row.min.y - 3.0),
    ));
    harness.snapshot(name);
}

#[test]
fn snapshot_default_view() {
    let Some(mut harness) = snapshot_harness() else {
        return;
    };
    settled_snapshot(&mut harness, "app_default_view");
}

/// Every panel is on screen, the plots at a usable height, on a small and a large screen.
fn assert_panels_visible(harness: &Harness<'_, AdvlensApp>, size: [f32; 2]) {
    let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(size[0], size[1]));
    for label in [
        "amplification ||ΔA|| / ||A|| by layer",
        "robustness: accuracy over ε",
        "bypass denoise blocks",
    ] {
        let rect = harness.get_by_label(label).rect();
        assert!(
            screen.contains_rect(rect),
            "{label} at {rect:?} is off a {size:?} screen"
        );
    }
    // The plot under the robustness controls keeps a usable height above the status bar.
    let controls = harness.get_by_label("Cancel").rect();
    let status = harness.get_by_label_contains("engine cpu").rect();
    let room = status.min.y - controls.max.y;
    assert!(
        room >= 150.0,
        "the robustness plot gets {room} points on a {size:?} screen"
    );
}

#[test]
fn every_panel_is_visible_on_a_small_and_a_large_screen() {
    for size in [SMALL_SCREEN, LARGE_SCREEN] {
        // The cpu engine, so the status bar reads "engine cpu" on a machine with a GPU too.
        let settings = Settings {
            engine: EngineChoice::Cpu,
            ..Settings::default()
        };
        let mut harness = Harness::builder().with_size(size).build_eframe(|cc| {
            AdvlensApp::with_settings(&cc.egui_ctx, settings.clone(), None, None).unwrap()
        });
        step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
        // A curve, so the robustness plot is drawn too.
        harness.get_by_label("Run").click();
        harness.run_steps(4);
        assert_panels_visible(&harness, size);
    }
}

#[test]
fn snapshot_small_screen() {
    let Some(mut harness) = sized_snapshot_harness(SMALL_SCREEN) else {
        return;
    };
    settled_snapshot(&mut harness, "app_1280x800");
}

#[test]
fn snapshot_large_screen() {
    let Some(mut harness) = sized_snapshot_harness(LARGE_SCREEN) else {
        return;
    };
    settled_snapshot(&mut harness, "app_1920x1080");
}

#[test]
fn snapshot_feature_maps_after_the_second_denoise_block() {
    let Some(mut harness) = snapshot_harness() else {
        return;
    };
    let tap = second_denoise_output(harness.state());
    harness.state_mut().settings.tap = Some(tap.clone());
    harness.state_mut().settings.channel = 3;
    harness.step();
    harness.get_by_label(&format!("channels of {tap}"));
    settled_snapshot(&mut harness, "app_feature_maps_denoise_after_1");
}

#[test]
fn snapshot_denoise_blocks_bypassed() {
    let Some(mut harness) = snapshot_harness() else {
        return;
    };
    harness.get_by_label("bypass denoise blocks").click();
    harness.step();
    harness.remove_cursor();
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| s.cfg.bypass_denoise) && !a.is_busy()
    });
    settled_snapshot(&mut harness, "app_denoise_bypassed");
}

/// A file that is slow to read: a named pipe the loader blocks on until the test writes into it.
#[cfg(unix)]
#[test]
fn the_ui_keeps_running_while_an_image_is_still_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("slow.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    let mut png = std::io::Cursor::new(vec![]);
    image::GrayImage::from_fn(36, 36, |x, y| image::Luma([((x * y) % 251) as u8]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let mut harness = app_harness();
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    let before = harness.state().input().clone();
    harness.state_mut().open_image(&pipe);
    harness.run_steps(3);
    // The loader is blocked on the pipe; the UI is not.
    assert!(harness.state().is_loading());
    harness.get_by_label(&format!("decoding {}…", pipe.display()));
    assert_eq!(harness.state().input(), &before);
    harness.state_mut().settings.attack.eps = 20.0 / 255.0;
    step_until(&mut harness, |a| {
        a.snapshot()
            .is_some_and(|s| (s.cfg.eps - 20.0 / 255.0).abs() < 1e-9)
            && !a.is_busy()
    });
    assert!(harness.state().is_loading());
    // The bytes arrive: the image opens and is analysed.
    let writer = {
        let pipe = pipe.clone();
        std::thread::Builder::new()
            .name("test-pipe-writer".into())
            .spawn(move || std::fs::write(pipe, png.into_inner()).unwrap())
            .unwrap()
    };
    let file = ImageSource::File(pipe);
    step_until(&mut harness, |a| {
        a.settings.image == file
            && a.snapshot()
                .is_some_and(|s| s.record.images[0].source.ends_with("slow.png"))
            && !a.is_busy()
    });
    writer.join().unwrap();
    assert!(harness.query_by_label_contains("decoding").is_none());
    assert_ne!(harness.state().input(), &before);
    assert!(harness.state().errors.list.is_empty());
}

/// The app on the cpu engine (so timings and the status bar do not depend on a GPU), with its
/// first result in.
fn cpu_app_harness() -> Harness<'static, AdvlensApp> {
    let settings = Settings {
        engine: EngineChoice::Cpu,
        ..Settings::default()
    };
    let mut harness = Harness::builder()
        .with_size([1400.0, 1000.0])
        .build_eframe(move |cc| {
            AdvlensApp::with_settings(&cc.egui_ctx, settings.clone(), None, None).unwrap()
        });
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    harness
}

#[test]
fn autoattack_runs_in_the_background_with_progress_and_a_cancel_that_stops_the_worker() {
    let mut harness = cpu_app_harness();
    let shown = harness.state().snapshot().unwrap().id;
    assert!(harness.query_by_label("Cancel attack").is_none());
    // Long enough that the test sees it run: a tiny ε keeps the image robust through APGD-CE,
    // which gets 5000 steps.
    {
        let a = &mut harness.state_mut().settings.attack;
        a.kind = AttackKind::AutoAttack;
        a.eps = 1.0 / 255.0;
        a.steps = Some(5000);
    }
    harness.step();
    let job = harness
        .state()
        .slow_run()
        .expect("AutoAttack runs as a slow job")
        .id;
    // Progress arrives from the worker with the component's name; each frame stays quick.
    let slowest = common::step_until_progress(&mut harness, "apgd-ce");
    harness.step();
    assert!(
        slowest < Duration::from_millis(500),
        "a frame took {slowest:?}"
    );
    harness.get_by_label_contains("autoattack ε 1.0/255 · apgd-ce");
    // The views keep the last finished (PGD) result, marked stale.
    assert_eq!(harness.state().snapshot().unwrap().id, shown);
    harness.get_by_label_contains("stale: showing the last finished result (pgd");
    // Cancel: the worker stops at its next step and says so; the old result stays.
    harness.get_by_label("Cancel attack").click();
    harness.step();
    let t = Instant::now();
    step_until(&mut harness, |a| {
        a.slow_run()
            .is_some_and(|r| r.state == SlowState::Cancelled)
            && !a.is_busy()
    });
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let run = harness.state().slow_run().unwrap();
    assert_eq!(run.id, job);
    assert!(run.done < 1.0);
    assert_eq!(harness.state().snapshot().unwrap().id, shown);
    harness.get_by_label_contains("cancelled at");
    harness.get_by_label("Run attack");
    // Not re-run by itself: the worker is idle until asked.
    harness.run_steps(5);
    assert!(!harness.state().is_busy());
    // "Run attack" starts it again; switching to a fast attack supersedes it.
    harness.get_by_label("Run attack").click();
    harness.step();
    assert!(
        harness
            .state()
            .slow_run()
            .is_some_and(|r| r.id > job && r.in_flight())
    );
    assert!(harness.state().is_busy());
    // The worker is free: a fast attack answers at once.
    harness.state_mut().settings.attack.kind = AttackKind::Fgsm;
    harness.step();
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| s.cfg.kind == AttackKind::Fgsm) && !a.is_busy()
    });
    assert!(harness.state().slow_run().is_none());
    assert!(harness.query_by_label("Cancel attack").is_none());
    assert!(harness.state().errors.list.is_empty());
}

#[test]
fn apgd_runs_live_on_the_slider_and_ignores_the_step_size() {
    let mut harness = cpu_app_harness();
    harness.state_mut().settings.attack.kind = AttackKind::ApgdCe;
    harness.step();
    step_until(&mut harness, |a| {
        a.snapshot()
            .is_some_and(|s| s.cfg.kind == AttackKind::ApgdCe)
            && !a.is_busy()
    });
    assert!(
        harness.state().slow_run().is_none(),
        "APGD is not a slow job"
    );
    // Step size: APGD picks its own, so the control is disabled; steps still apply.
    let autos = harness.get_all_by_label("auto").collect::<Vec<_>>();
    assert_eq!(autos.len(), 2);
    assert!(autos[0].accesskit_node().is_disabled());
    assert!(!autos[1].accesskit_node().is_disabled());
    harness.get_by_label("no warnings");
    let before = harness.state().snapshot().unwrap().clone();
    harness.get_by_role(egui::accesskit::Role::Slider).focus();
    harness.step();
    for _ in 0..8 {
        harness.key_press(egui::Key::ArrowRight);
        harness.step();
    }
    let moved = harness.state().settings.attack.eps;
    assert!(moved > before.cfg.eps);
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| s.cfg.eps == moved) && !a.is_busy()
    });
    let after = harness.state().snapshot().unwrap();
    assert_eq!(after.cfg.kind, AttackKind::ApgdCe);
    assert_ne!(after.x_adv, before.x_adv);
    // Square: no step size, no steps, no restarts.
    harness.state_mut().settings.attack.kind = AttackKind::Square;
    harness.step();
    harness.step();
    for n in harness.get_all_by_label("auto") {
        assert!(n.accesskit_node().is_disabled());
    }
    // Back on PGD every control is live again.
    harness.state_mut().settings.attack.kind = AttackKind::Pgd;
    harness.step();
    harness.step();
    for n in harness.get_all_by_label("auto") {
        assert!(!n.accesskit_node().is_disabled());
    }
}

#[test]
fn a_raised_flag_shows_as_a_chip_with_its_explanation() {
    // A model whose gradient is exactly zero everywhere: every weight zero.
    let mut net = advlens::zoo::default_network().unwrap();
    for (_, a) in net.weights.iter_mut() {
        a.data_mut().fill(0.0);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero.safetensors");
    advlens::model::weights::save(&net, &path).unwrap();
    let mut harness = cpu_app_harness();
    harness.get_by_label("no warnings");
    harness.state_mut().settings.attack.kind = AttackKind::ApgdCe;
    harness.state_mut().open_model(path.clone());
    step_until(&mut harness, |a| {
        a.model_name().ends_with("zero.safetensors")
            && a.snapshot().is_some_and(|s| {
                s.cfg.kind == AttackKind::ApgdCe && s.record.model.ends_with("zero.safetensors")
            })
            && !a.is_busy()
    });
    let snap = harness.state().snapshot().unwrap();
    let flags: Vec<_> = snap.diagnostics.iter().map(|d| d.flag).collect();
    assert_eq!(flags, vec![Flag::ZeroGradient]);
    assert!(harness.query_by_label("no warnings").is_none());
    let chip = harness.get_by_label_contains("zero_gradient 1/1");
    chip.hover();
    // Tooltips wait half a second of stillness; the harness steps 1/60 s per frame.
    harness.run_steps(60);
    // The tooltip: what it means and what to try, then the numbers.
    harness.get_by_label_contains(Flag::ZeroGradient.explanation());
    harness.get_by_label_contains("1 of 1 images");
}

#[test]
fn the_robustness_curve_offers_apgd_ce_with_its_own_steps() {
    let mut harness = cpu_app_harness();
    {
        let r = &mut harness.state_mut().settings.robustness;
        r.attack = CurveAttack::ApgdCe;
        r.images = 4;
        r.points = 3;
    }
    harness.step();
    let steps = harness.get_by_role_and_label(egui::accesskit::Role::SpinButton, "steps");
    assert_eq!(
        steps.accesskit_node().numeric_value(),
        Some(CURVE_APGD_STEPS as f64)
    );
    harness.get_by_label("Run").click();
    harness.step();
    let name = format!("apgd-ce {CURVE_APGD_STEPS} steps accuracy");
    let deadline = Instant::now() + Duration::from_secs(120);
    while harness.query_by_label(&name).is_none() || harness.query_by_label("Run").is_none() {
        assert!(Instant::now() < deadline, "the curve never finished");
        std::thread::sleep(Duration::from_millis(50));
        harness.step();
    }
    assert!(harness.state().errors.list.is_empty());
}
