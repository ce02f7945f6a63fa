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
    assert!(
        r.amplification
            .iter()
            .all(|t| t.mean.is_finite() && t.mean >= 0.0)
    );
    let md = r.markdown();
    assert!(md.contains("| clean |") && md.contains("| pgd |"), "{md}");
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
    let cancel = Cancel::new();
    // Gradients 1-4 are the first batch (FGSM, then three PGD steps); 5 is the second batch's
    // FGSM, 6 its first PGD step.
    let mut e = CancelAt {
        inner: CpuEngine::new(common::trained()).unwrap(),
        calls: 0,
        at: 6,
        cancel: cancel.clone(),
    };
    let partial = evaluate(&mut e, &data, &attacks, 8, true, &cancel, &mut |_, _| {}).unwrap();
    assert!(!partial.complete);
    assert_eq!(partial.images, 8);
    assert!(partial.rows.iter().all(|r| r.images == 8));
    let mut e = CpuEngine::new(common::trained()).unwrap();
    let first = data.select(&(0..8).collect::<Vec<_>>());
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
