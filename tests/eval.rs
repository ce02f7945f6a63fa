//! `analysis::eval` on the small trained model: robust accuracy is re-predicted, never above the
//! clean accuracy for an untargeted attack, cancellation leaves a partial report, and the CLI
//! prints the table for the bundled Fashion-MNIST images.

#![allow(clippy::unwrap_used)]

mod common;

use advlens::analysis::evaluate;
use advlens::array::Array;
use advlens::attack::{AttackConfig, AttackKind, TargetMode};
use advlens::cancel::Cancel;
use advlens::data::Labelled;
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Engine, EngineError, Forward, ForwardOptions, Gradient, Loss};
use advlens::model::Network;

fn data() -> Labelled {
    let (images, labels) = common::synthetic(24, 321);
    Labelled { images, labels }
}

#[test]
fn robust_accuracy_is_re_predicted_and_bounded_by_clean() {
    let mut e = CpuEngine::new(common::trained()).unwrap();
    let attacks = [
        AttackConfig {
            kind: AttackKind::Fgsm,
            eps: 0.05,
            ..AttackConfig::default()
        },
        AttackConfig {
            kind: AttackKind::Pgd,
            eps: 0.3,
            steps: Some(10),
            ..AttackConfig::default()
        },
        AttackConfig {
            kind: AttackKind::Pgd,
            eps: 0.3,
            steps: Some(10),
            target: TargetMode::Random,
            ..AttackConfig::default()
        },
    ];
    let mut calls = vec![];
    let r = evaluate(
        &mut e,
        &data(),
        &attacks,
        10,
        true,
        &Cancel::new(),
        &mut |d, t| calls.push((d, t)),
    )
    .unwrap();
    assert!(r.complete);
    assert_eq!(r.images, 24);
    assert_eq!(calls, vec![(10, 24), (20, 24), (24, 24)]);
    assert!(r.clean_accuracy() > 85.0, "{}", r.clean_accuracy());
    assert!(r.rows[0].correct <= r.clean_correct);
    assert!(
        r.rows[1].accuracy() < 30.0,
        "PGD at 0.3 left {}%",
        r.rows[1].accuracy()
    );
    assert!(r.rows[2].target_hits.unwrap() >= 16);
    assert!(r.rows[0].target_hits.is_none());
    let taps: Vec<&str> = r.amplification.iter().map(|t| t.tap.as_str()).collect();
    assert!(taps.contains(&"group1_denoise/after"));
    assert!(taps.contains(&"group1_denoise/op"));
    // One row per denoise block: its input, operation output and output, read off the taps.
    let graph = &e.network().graph;
    assert_eq!(r.block_noise.len(), graph.denoise_blocks.len());
    let mean = |tap: &str| r.amplification.iter().find(|t| t.tap == tap).unwrap().mean;
    for (row, block) in r.block_noise.iter().zip(&graph.denoise_blocks) {
        assert_eq!(row.block, block.name);
        assert_eq!(row.input, mean(&format!("{}/before", block.name)));
        assert_eq!(row.op, mean(&format!("{}/op", block.name)));
        assert_eq!(row.output, mean(&format!("{}/after", block.name)));
        assert!(row.op > 0.0 && row.op != row.input, "{row:?}");
    }
    assert!(
        r.amplification
            .iter()
            .all(|t| t.mean.is_finite() && t.mean >= 0.0)
    );
    let md = r.markdown();
    assert!(md.contains("| clean |") && md.contains("| pgd |"), "{md}");
    assert!(md.contains("| denoise block | input"), "{md}");
    assert!(md.contains("| group1_denoise | "), "{md}");
}

#[test]
fn cancelling_leaves_a_partial_report() {
    let mut e = CpuEngine::new(common::trained()).unwrap();
    let attacks = [AttackConfig {
        kind: AttackKind::Fgsm,
        eps: 0.1,
        ..AttackConfig::default()
    }];
    let cancel = Cancel::new();
    let stop = cancel.clone();
    let r = evaluate(
        &mut e,
        &data(),
        &attacks,
        8,
        false,
        &cancel,
        &mut |done, _| {
            if done >= 8 {
                stop.cancel();
            }
        },
    )
    .unwrap();
    assert!(!r.complete);
    assert_eq!(r.images, 8);
    assert_eq!(r.rows[0].images, 8);
    assert!(r.markdown().contains("partial"));
}

/// The cpu engine, cancelling `cancel` when its `at`-th input gradient is asked for.
struct CancelAt {
    inner: CpuEngine,
    calls: usize,
    at: usize,
    cancel: Cancel,
}

impl Engine for CancelAt {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn network(&self) -> &Network {
        self.inner.network()
    }
    fn forward(&mut self, x: &Array, opts: &ForwardOptions) -> Result<Forward, EngineError> {
        self.inner.forward(x, opts)
    }
    fn input_grad(
        &mut self,
        x: &Array,
        loss: &Loss,
        opts: &ForwardOptions,
    ) -> Result<Gradient, EngineError> {
        self.calls += 1;
        if self.calls == self.at {
            self.cancel.cancel();
        }
        self.inner.input_grad(x, loss, opts)
    }
}

/// Cancelled inside a batch's second attack, after its first attack measured the amplification:
/// the partial report holds the complete first batch and nothing of the second, amplification
/// included.
#[test]
fn a_batch_cancelled_in_its_last_attack_leaves_no_trace() {
    let attacks = [
        AttackConfig {
            kind: AttackKind::Fgsm,
            eps: 0.1,
            ..AttackConfig::default()
        },
        AttackConfig {
            kind: AttackKind::Pgd,
            eps: 0.1,
            steps: Some(3),
            ..AttackConfig::default()
        },
    ];
    let data = data().select(&(0..16).collect::<Vec<_>>());
    let first = data.select(&(0..8).collect::<Vec<_>>());
    // The first batch's gradients: the attacks, the diagnostics' zero-gradient checks and their
    // unbounded re-attacks (first batch only). The second batch then asks for FGSM's gradient,
    // its zero-gradient check and PGD's first step: cancel there.
    let mut count = CancelAt {
        inner: CpuEngine::new(common::trained()).unwrap(),
        calls: 0,
        at: usize::MAX,
        cancel: Cancel::new(),
    };
    evaluate(
        &mut count,
        &first,
        &attacks,
        8,
        true,
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    let first_batch = count.calls;
    let cancel = Cancel::new();
    let mut e = CancelAt {
        inner: CpuEngine::new(common::trained()).unwrap(),
        calls: 0,
        at: first_batch + 3,
        cancel: cancel.clone(),
    };
    let partial = evaluate(&mut e, &data, &attacks, 8, true, &cancel, &mut |_, _| {}).unwrap();
    assert!(!partial.complete);
    assert_eq!(partial.images, 8);
    assert!(partial.rows.iter().all(|r| r.images == 8));
    let mut e = CpuEngine::new(common::trained()).unwrap();
    let whole = evaluate(
        &mut e,
        &first,
        &attacks,
        8,
        true,
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(partial.clean_correct, whole.clean_correct);
    assert_eq!(partial.amplification.len(), whole.amplification.len());
    for (p, w) in partial.amplification.iter().zip(&whole.amplification) {
        assert_eq!(p.tap, w.tap);
        assert!(
            (p.mean - w.mean).abs() < 1e-9,
            "{}: {} vs {}",
            p.tap,
            p.mean,
            w.mean
        );
    }
}

#[test]
fn cli_eval_on_bundled_images() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_advlens"))
        .args([
            "eval",
            "--data",
            "bundled",
            "--n",
            "20",
            "--attacks",
            "fgsm,pgd3",
        ])
        .args(["--eps", "0.1", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("| fgsm |") && text.contains("| 20 |"),
        "{text}"
    );
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(rep["images"], 20);
    assert_eq!(rep["rows"][1]["attack"]["steps"], 3);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_advlens"))
        .args(["eval", "--data", "/nonexistent/fm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fetch-data.sh"));
}

/// AutoAttack's per-component counts are summed over the batches (`rand`: APGD-CE then APGD-DLR
/// with EOT; `standard` needs Square), the last component's robust count is the row's robust
/// count, and the table shows one sub-row per component.
#[test]
fn autoattack_stages_are_summed_over_batches() {
    let mut e = CpuEngine::new(common::trained()).unwrap();
    let cfg = AttackConfig {
        kind: AttackKind::AutoAttackRand,
        eps: 0.1,
        steps: Some(5),
        apgd: advlens::attack::ApgdConfig {
            eot: 2,
            ..Default::default()
        },
        ..AttackConfig::default()
    };
    let r = evaluate(
        &mut e,
        &data(),
        std::slice::from_ref(&cfg),
        10,
        false,
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    let row = &r.rows[0];
    let ids: Vec<&str> = row.stages.iter().map(|s| s.attack.as_str()).collect();
    assert_eq!(ids, ["apgd-ce", "apgd-dlr"]);
    assert_eq!(row.stages[0].attacked, r.clean_correct);
    assert_eq!(
        row.stages[1].attacked,
        row.stages[0].attacked - row.stages[0].fooled
    );
    assert_eq!(row.stages[1].robust_after, row.correct);
    assert!(row.stages[0].fooled > 0, "{:?}", row.stages);
    let md = r.markdown();
    assert!(md.contains("| ↳ after apgd-ce (fooled"), "{md}");
    let after_dlr = format!(
        "| {} | {:.2} | | – |",
        r.images,
        100.0 * row.correct as f64 / r.images as f64
    );
    assert!(md.contains(&after_dlr), "{md}");
}

/// A hand-made AutoAttack row: the table names it "AutoAttack standard without FAB-T", prints
/// the cumulative robust accuracy after each component, and lists the flags under the table.
#[test]
fn the_table_names_autoattack_and_lists_warnings() {
    use advlens::analysis::{EvalReport, EvalRow};
    use advlens::attack::{AUTOATTACK_STANDARD_NAME, Diagnostic, Flag, Stage};
    let stage = |attack: &str, attacked, fooled, robust_after| Stage {
        attack: attack.into(),
        attacked,
        fooled,
        robust_after,
        seconds: 1.0,
    };
    let report = EvalReport {
        images: 100,
        clean_correct: 90,
        defense: None,
        clean_draws: None,
        rows: vec![EvalRow {
            attack: AttackConfig {
                kind: AttackKind::AutoAttack,
                eps: 0.1,
                ..AttackConfig::default()
            },
            images: 100,
            correct: 40,
            target_hits: None,
            defense: None,
            draws: None,
            diagnostics: vec![Diagnostic {
                flag: Flag::SquareBeatsWhiteBox,
                images: 5,
                of: 45,
                detail: "Square fooled 5".into(),
            }],
            stages: vec![
                stage("apgd-ce", 90, 40, 50),
                stage("apgd-t", 50, 5, 45),
                stage("square", 45, 5, 40),
            ],
            accuracy: 40.0,
            ci95: None,
        }],
        amplification: vec![],
        block_noise: vec![],
        clean_accuracy: 90.0,
        clean_ci95: None,
        all_robust: None,
        unreadable: vec![],
        source: None,
        complete: true,
    };
    let md = report.markdown();
    assert!(
        md.contains(&format!("| {AUTOATTACK_STANDARD_NAME} | Linf |")),
        "{md}"
    );
    assert!(
        md.contains("| ↳ after apgd-t (fooled 5 of 50, 1.0 s) | | | | | 100 | 45.00 | | – |"),
        "{md}"
    );
    assert!(
        md.contains("| ↳ after square (fooled 5 of 45, 1.0 s) | | | | | 100 | 40.00 | | – |"),
        "{md}"
    );
    assert!(md.contains("warnings:\n- AutoAttack standard without FAB-T ε=0.1000: square_beats_white_box: 5/45 images: Square fooled 5 — "), "{md}");
}

/// A model whose gradient is zero everywhere: the eval row carries the zero-gradient flag summed
/// over both batches and the unbounded failure measured on the first batch only, and says so.
#[test]
fn eval_rows_carry_the_flags_of_every_batch() {
    let mut net = (*common::trained()).clone();
    for (name, w) in net.weights.iter_mut() {
        if name.contains("linear") && w.shape().len() == 2 {
            w.data_mut().iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let mut e = CpuEngine::new(std::sync::Arc::new(net)).unwrap();
    let cfg = AttackConfig {
        kind: AttackKind::Pgd,
        eps: 0.1,
        steps: Some(3),
        ..AttackConfig::default()
    };
    let data = data().select(&(0..16).collect::<Vec<_>>());
    let r = evaluate(
        &mut e,
        &data,
        &[cfg],
        8,
        false,
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    let flags = &r.rows[0].diagnostics;
    let zero = flags
        .iter()
        .find(|d| d.flag == advlens::attack::Flag::ZeroGradient)
        .expect("zero gradient");
    assert_eq!((zero.images, zero.of), (16, 16));
    let unbounded = flags
        .iter()
        .find(|d| d.flag == advlens::attack::Flag::UnboundedFailure)
        .expect("unbounded failure");
    assert!(unbounded.of > 0 && unbounded.of <= 8, "{unbounded:?}");
    assert_eq!(unbounded.images, unbounded.of);
    assert!(
        unbounded.detail.contains("first batch only"),
        "{}",
        unbounded.detail
    );
    assert!(r.markdown().contains("zero_gradient: 16/16 images"));
    assert!(!flags.iter().any(|d| d.images == 0));
}
