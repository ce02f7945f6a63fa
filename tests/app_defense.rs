//! The app with an input-transformation defence in front of the network: the selector in the
//! controls, what the network sees, Redraw for a random defence, a chain that does not fit the
//! model, and EOT attacks in the background. The app runs on the cpu engine without a window
//! (egui_kittest), as in `tests/app.rs`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use advlens::analysis::{AnalyseJob, analyse};
use advlens::app::{AdvlensApp, Reply, Settings, Worker};
use advlens::array::Array;
use advlens::attack::{AttackConfig, AttackKind};
use advlens::cancel::Cancel;
use advlens::defense::{Chain, Defense, Draws};
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Defended, Engine as _, EngineChoice, ForwardOptions, TapSelection};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;

mod common;

/// Steps the harness until `done` holds (the worker runs in real time).
fn step_until(harness: &mut Harness<'_, AdvlensApp>, done: impl Fn(&AdvlensApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done(harness.state()) {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
    harness.step();
    harness.step();
}

/// The app on the cpu engine with its first (undefended) result in.
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

/// Waits for the result of the current settings: the newest job done, with this defence and ε.
fn wait_for_current(harness: &mut Harness<'_, AdvlensApp>) {
    step_until(harness, |a| {
        a.snapshot()
            .is_some_and(|s| s.defense == a.settings.defense && s.cfg.eps == a.settings.attack.eps)
            && !a.is_busy()
    });
}

/// Adds a transform through the controls' "add transform" menu.
fn add_transform(harness: &mut Harness<'_, AdvlensApp>, label: &str) {
    harness.get_by_label("add transform").click();
    harness.run_steps(2);
    harness.get_by_label(label).click();
    harness.run_steps(2);
}

/// What the worker's view of `x` is under `defense`: the chain applied with the first draw
/// after a restart.
fn first_draw(defense: &Defense, x: &Array) -> Array {
    let draws = Draws::Seeded {
        seed: defense.seed,
        call: 0,
        draw: 0,
    };
    defense.chain.apply(x, &draws).unwrap().x
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f32> = logits.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn selecting_a_defence_changes_what_the_network_sees() {
    let mut harness = cpu_app_harness();
    // No defence: the network sees the input, and the panel shows no transformed images.
    assert!(harness.state().snapshot().unwrap().seen.is_none());
    assert!(harness.query_by_label("what the network sees").is_none());
    assert!(harness.query_by_label("clean, as seen").is_none());
    add_transform(&mut harness, "JPEG compression");
    add_transform(&mut harness, "bit-depth reduction");
    assert_eq!(
        harness.state().settings.defense.chain.to_string(),
        "jpeg:75,bits:5"
    );
    wait_for_current(&mut harness);
    let snap = harness.state().snapshot().unwrap().clone();
    let seen = snap
        .seen
        .as_ref()
        .expect("a defended result shows what was seen");
    // The prediction input is the transformed image, exactly the chain applied to the input.
    assert!(seen.clean != *snap.x, "the defence changed nothing");
    assert!(seen.clean == first_draw(&snap.defense, &snap.x));
    assert!(seen.adv != snap.x_adv);
    assert!(seen.adv == first_draw(&snap.defense, &snap.x_adv));
    // The prediction and the feature maps are the bare network's on the transformed images.
    let net = Arc::new(harness.state().network().clone());
    let mut bare = CpuEngine::new(net).unwrap();
    let opts = ForwardOptions {
        taps: TapSelection::All,
        ..ForwardOptions::default()
    };
    let fwd = bare.forward(&seen.clean, &opts).unwrap();
    let probs = softmax(fwd.logits.example(0));
    let top = &snap.record.images[0].clean_top5[0];
    assert!((probs[top.class] - top.prob).abs() < 1e-5);
    assert!(probs.iter().all(|&p| p <= top.prob));
    for ((name, want), got) in fwd.taps.iter().zip(&snap.taps) {
        assert_eq!(*name, got.name);
        assert!(*want == got.clean, "{name}");
    }
    assert!(snap.record.engine.contains("defence jpeg:75,bits:5"));
    // The panel shows both, labelled.
    harness.get_by_label("what the network sees");
    harness.get_by_label("clean, as seen");
    harness.get_by_label("adversarial, as seen");
    // Removing the transforms brings back the bare view.
    for _ in 0..2 {
        harness.get_all_by_label("×").next().unwrap().click();
        harness.run_steps(2);
    }
    assert!(harness.state().settings.defense.is_none());
    wait_for_current(&mut harness);
    assert!(harness.state().snapshot().unwrap().seen.is_none());
    assert!(harness.query_by_label("what the network sees").is_none());
    assert!(harness.state().errors.list.is_empty());
}

#[test]
fn redraw_changes_a_random_defence_and_the_view_holds_until_then() {
    let mut harness = cpu_app_harness();
    add_transform(&mut harness, "random resize and pad");
    assert!(harness.state().settings.defense.chain.is_random());
    wait_for_current(&mut harness);
    let first = harness.state().snapshot().unwrap().clone();
    let seen = first.seen.as_ref().unwrap().clean.clone();
    assert!(seen != *first.x);
    assert!(
        seen == first_draw(&first.defense, &first.x),
        "the first view is not the first draw after a restart"
    );
    // Two ε changes run two new attacks; the clean image's draw stays the same.
    for eps in [0.05, 0.15] {
        harness.state_mut().settings.attack.eps = eps;
        harness.step();
        wait_for_current(&mut harness);
        let snap = harness.state().snapshot().unwrap();
        assert!(snap.id > first.id);
        assert!(snap.x_adv != first.x_adv);
        assert!(
            snap.seen.as_ref().unwrap().clean == seen,
            "the view moved at ε {eps}"
        );
    }
    // Redraw: a new seed, and a new view of the same image.
    let seed = harness.state().settings.defense.seed;
    harness.get_by_label("Redraw").click();
    harness.step();
    let redrawn = harness.state().settings.defense.seed;
    assert_ne!(redrawn, seed);
    wait_for_current(&mut harness);
    let snap = harness.state().snapshot().unwrap();
    assert_eq!(snap.defense.seed, redrawn);
    let now = &snap.seen.as_ref().unwrap().clean;
    assert!(*now != seen, "Redraw kept the view");
    assert!(*now == first_draw(&snap.defense, &snap.x));
    harness.get_by_label(&format!("seed {redrawn}"));
}

#[test]
fn a_defence_that_does_not_fit_the_model_shows_its_error() {
    let mut harness = cpu_app_harness();
    let shown = harness.state().snapshot().unwrap().id;
    // A padded side over twice the height: the controls cannot enter it, but a model change can
    // leave a saved one out of range.
    let bad = Defense::new("resize-pad:60".parse().unwrap());
    let why = bad
        .check(harness.state().network().input_shape())
        .unwrap_err()
        .to_string();
    harness.state_mut().settings.defense = bad;
    harness.run_steps(5);
    // The reason is in the controls and above the views; nothing was submitted.
    harness.get_by_label(&why);
    harness.get_by_label_contains("the defence cannot run on this model");
    assert!(!harness.state().is_busy());
    assert_eq!(harness.state().snapshot().unwrap().id, shown);
    assert_eq!(harness.state().worker_queue(), 0);
    assert!(harness.state().errors.list.is_empty());
    // Back in range through the control: the worker was never disturbed and runs it.
    harness.state_mut().settings.defense.chain = "resize-pad:40".parse().unwrap();
    harness.step();
    assert!(harness.query_by_label(&why).is_none());
    wait_for_current(&mut harness);
    let snap = harness.state().snapshot().unwrap();
    assert!(snap.id > shown);
    assert!(snap.seen.is_some());
    assert!(harness.state().errors.list.is_empty());
}

fn job(id: u64, cfg: AttackConfig, defense: Defense) -> AnalyseJob {
    AnalyseJob {
        id,
        net: Arc::new(advlens::zoo::default_network().unwrap()),
        model_name: "builtin:default".into(),
        x: Arc::new(advlens::zoo::default_image()),
        label: Some(9),
        source: "fashion:0".into(),
        cfg,
        engine: EngineChoice::Cpu,
        defense,
        cancel: Cancel::new(),
    }
}

fn fgsm() -> AttackConfig {
    AttackConfig {
        kind: AttackKind::Fgsm,
        ..AttackConfig::default()
    }
}

#[test]
fn the_worker_fails_a_defence_that_does_not_fit_and_keeps_working() {
    let mut w = Worker::start(Arc::new(|| {})).unwrap();
    w.submit(job(
        1,
        fgsm(),
        Defense::new("resize-pad:60".parse().unwrap()),
    ));
    match w.wait(Duration::from_secs(120)) {
        Some(Reply::Failed { id, error }) => {
            assert_eq!(id, 1);
            assert!(error.contains("over the limit"), "{error}");
        }
        _ => panic!("expected a failure"),
    }
    w.submit(job(2, fgsm(), Defense::new("median:3".parse().unwrap())));
    let Some(Reply::Analysed(s)) = w.wait(Duration::from_secs(120)) else {
        panic!("no result after the failure");
    };
    assert_eq!(s.id, 2);
    assert!(s.seen.is_some());
}

#[test]
fn analysing_a_defended_job_on_a_bare_engine_is_an_error() {
    let j = job(0, fgsm(), Defense::new(Chain::new(vec![])));
    let mut bare = CpuEngine::new(j.net.clone()).unwrap();
    assert!(analyse(&mut bare, &j).unwrap().seen.is_none());
    let j = job(0, fgsm(), Defense::new("bits:3".parse().unwrap()));
    let err = analyse(&mut bare, &j).unwrap_err().to_string();
    assert!(err.contains("does not run the job's defence"), "{err}");
    // And the reverse: a defended engine under a job without the defence.
    let mut defended = Defended::new(Box::new(bare), j.defense.clone()).unwrap();
    assert!(analyse(&mut defended, &j).unwrap().seen.is_some());
    let undefended = job(0, fgsm(), Defense::default());
    let err = analyse(&mut defended, &undefended).unwrap_err().to_string();
    assert!(err.contains("it runs bits:3"), "{err}");
}

#[test]
fn eot_goes_where_the_attack_takes_it_as_on_the_command_line() {
    let mut harness = cpu_app_harness();
    {
        let s = &mut harness.state_mut().settings;
        s.attack.kind = AttackKind::ApgdCe;
        s.attack.steps = Some(4);
        s.defense = Defense {
            eot: 3,
            ..Defense::new("resize-pad".parse().unwrap())
        };
    }
    harness.step();
    assert_eq!(harness.state().slow_run().map(|r| r.draws), Some(3));
    step_until(&mut harness, |a| {
        a.snapshot()
            .is_some_and(|s| s.cfg.kind == AttackKind::ApgdCe)
            && !a.is_busy()
    });
    // APGD averages its own gradient calls: the defence draws once per call.
    let snap = harness.state().snapshot().unwrap();
    assert_eq!((snap.cfg.apgd.eot, snap.defense.eot), (3, 1));
    assert_eq!(snap.record.defense.as_ref(), Some(&snap.defense));
    // PGD takes one gradient per step: the defence averages inside it.
    harness.state_mut().settings.attack.kind = AttackKind::Pgd;
    harness.step();
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| s.cfg.kind == AttackKind::Pgd) && !a.is_busy()
    });
    let snap = harness.state().snapshot().unwrap();
    assert_eq!((snap.cfg.apgd.eot, snap.defense.eot), (1, 3));
    // Without randomness EOT has nothing to average: one draw, and no slow job.
    harness.state_mut().settings.defense.chain = "jpeg:60".parse().unwrap();
    harness.step();
    assert!(harness.state().slow_run().is_none());
    step_until(&mut harness, |a| {
        a.snapshot().is_some_and(|s| !s.defense.chain.is_random()) && !a.is_busy()
    });
    let snap = harness.state().snapshot().unwrap();
    assert_eq!((snap.cfg.apgd.eot, snap.defense.eot), (1, 1));
    assert!(harness.state().errors.list.is_empty());
}

#[test]
fn eot_runs_in_the_background_with_progress_and_the_newest_request_wins() {
    let mut harness = cpu_app_harness();
    {
        let s = &mut harness.state_mut().settings;
        s.attack.kind = AttackKind::Pgd;
        s.attack.steps = Some(400);
        s.defense = Defense {
            eot: 20,
            ..Defense::new("resize-pad".parse().unwrap())
        };
    }
    harness.step();
    let run = harness.state().slow_run().expect("EOT runs as a slow job");
    assert_eq!(run.draws, 20);
    let first = run.id;
    // Progress arrives from the worker; each frame stays quick.
    let slowest = common::step_until_progress(&mut harness, "pgd");
    harness.step();
    assert!(
        slowest < Duration::from_millis(500),
        "a frame took {slowest:?}"
    );
    harness.get_by_label_contains("EOT 20 · pgd");
    // A new ε supersedes the running job at once (newest wins), and so does a cheap setting.
    harness.state_mut().settings.attack.eps = 0.05;
    harness.step();
    let second = harness.state().slow_run().unwrap().id;
    assert!(second > first);
    harness.state_mut().settings.attack.steps = Some(3);
    harness.state_mut().settings.defense.eot = 2;
    harness.step();
    wait_for_current(&mut harness);
    let snap = harness.state().snapshot().unwrap();
    assert!(snap.id > second);
    assert_eq!(snap.cfg.steps, Some(3));
    assert_eq!(snap.defense.eot, 2);
    assert!(harness.state().errors.list.is_empty());
}

/// The default view with a random defence in front of the network (JPEG, then resize and pad,
/// seed 0): the second image row shows what the network saw. Rendered on the software adapter
/// as the snapshots of `tests/app.rs` are, with the same masks (the status bar, and the control
/// panel from the photos heading down).
#[test]
fn snapshot_defended_view() {
    if common::gpu_context().is_none() {
        return;
    }
    let settings = Settings {
        defense: Defense::new("jpeg:50,resize-pad".parse().unwrap()),
        ..Settings::default()
    };
    let mut harness = Harness::builder()
        .with_size([1280.0, 900.0])
        .with_render_cursor(false)
        .wgpu()
        .build_eframe(move |cc| {
            AdvlensApp::with_settings(&cc.egui_ctx, settings.clone(), None, None).unwrap()
        });
    step_until(&mut harness, |a| a.snapshot().is_some() && !a.is_busy());
    harness.run_steps(4);
    let row = harness.get_by_label_contains("engine cpu").rect();
    let width = harness.ctx.content_rect().width();
    harness.mask(egui::Rect::from_min_max(
        egui::pos2(0.0, row.min.y - 3.0),
        egui::pos2(width, row.max.y + 3.0),
    ));
    let photos = harness.get_by_label("photos").rect();
    harness.mask(egui::Rect::from_min_max(
        egui::pos2(0.0, photos.min.y - 2.0),
        egui::pos2(296.0, row.min.y - 3.0),
    ));
    harness.snapshot("app_defended_view");
}

#[test]
fn the_robustness_curve_runs_behind_the_defence() {
    use advlens::analysis::{CurveProgress, RobustnessJob, robustness_curve};
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let set = advlens::data::bundled_test_images().unwrap();
    let sub = set.select(&(0..40).collect::<Vec<_>>());
    let defense = Defense::new("median:7,bits:1".parse().unwrap());
    let curve = |defense: &Defense| {
        let job = RobustnessJob {
            net: net.clone(),
            images: sub.images.clone(),
            labels: sub.labels.clone(),
            cfg: fgsm(),
            eps: vec![0.0],
            engine: EngineChoice::Cpu,
            gpu: None,
            defense: defense.clone(),
        };
        let got = std::sync::Mutex::new(None);
        robustness_curve(&job, &Cancel::new(), &|p| {
            if let CurveProgress::Point { accuracy, .. } = p {
                *got.lock().unwrap() = Some(accuracy);
            }
        })
        .unwrap();
        got.into_inner().unwrap().unwrap()
    };
    // At ε = 0 the point is the clean accuracy of the network on the transformed images.
    let seen = defense
        .chain
        .apply(&sub.images, &Draws::Fixed(vec![]))
        .unwrap()
        .x;
    let mut bare = CpuEngine::new(net.clone()).unwrap();
    let logits = bare
        .forward(&seen, &ForwardOptions::default())
        .unwrap()
        .logits;
    let correct = advlens::engine::predictions(&logits)
        .iter()
        .zip(&sub.labels)
        .filter(|(p, l)| p == l)
        .count();
    let defended = curve(&defense);
    assert_eq!(defended, correct as f32 / 40.0);
    assert_ne!(
        defended,
        curve(&Defense::default()),
        "the defence changed nothing"
    );
}
