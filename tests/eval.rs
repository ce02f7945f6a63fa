//! `analysis::eval` on the small trained model: robust accuracy is re-predicted, never above the
//! clean accuracy for an untargeted attack, cancellation leaves a partial report, and the CLI
//! prints the table for the bundled Fashion-MNIST images.

#![allow(clippy::unwrap_used)]

mod common;

use advlens::analysis::eval::evaluate;
use advlens::attack::{AttackConfig, AttackKind, Cancel, TargetMode};
use advlens::data::idx::Labelled;
use advlens::engine::cpu::CpuEngine;

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
