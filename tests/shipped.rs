//! The models shipped in assets/models/ and embedded in the binary: they load, say how they were
//! trained, stay small, differ only in their denoise blocks, and reproduce the accuracy that
//! assets/models/README.md reports (re-measured here on the bundled test images).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use advlens::analysis::evaluate;
use advlens::attack::{AttackConfig, AttackKind};
use advlens::cancel::Cancel;
use advlens::data::bundled_test_images;
use advlens::engine::cpu::CpuEngine;
use advlens::model::{ArchConfig, Placement};
use advlens::zoo::{SHIPPED, default_network, load_model, shipped};

#[test]
fn shipped_models_load_and_carry_their_training_record() {
    let base = |c: &ArchConfig| {
        let ArchConfig::ResnetDenoise(c) = c else {
            panic!("not a resnet-denoise model")
        };
        let mut c = c.clone();
        c.placement = Placement::None;
        c.denoise_stages = None;
        c
    };
    let reference = base(&shipped("clean").unwrap().config);
    let record = |net: &advlens::model::Network| -> serde_json::Value {
        serde_json::from_str(&net.metadata["advlens.training"]).unwrap()
    };
    // One recipe for all: the settings of the record other than the objective agree.
    let recipe = |record: &serde_json::Value| {
        let mut config = record["config"].as_object().unwrap().clone();
        config.remove("mode");
        config.remove("adv");
        config
    };
    let reference_recipe = recipe(&record(&shipped("clean").unwrap()));
    for m in SHIPPED {
        assert!(m.bytes.len() < 10 << 20, "{} is too large", m.name);
        let net = shipped(m.name).unwrap();
        assert_eq!(
            base(&net.config),
            reference,
            "{} differs beyond denoising",
            m.name
        );
        let record = record(&net);
        let mode = record["config"]["mode"]["mode"].as_str().unwrap();
        assert_eq!(mode, if m.name == "clean" { "clean" } else { "pgd" });
        assert_eq!(record["epochs_done"].as_u64().unwrap(), 10, "{}", m.name);
        assert_eq!(
            recipe(&record),
            reference_recipe,
            "{}: another recipe",
            m.name
        );
        assert!(record["command"].as_str().unwrap().contains("train"));
        let has_denoise = !net.graph.denoise_blocks.is_empty();
        assert_eq!(has_denoise, m.name == "pgd-denoise", "{}", m.name);
        let summary = net.config.summary();
        let placement = if has_denoise {
            "nonlocal_gaussian denoise blocks after stages 1, 2"
        } else {
            "no denoise blocks"
        };
        assert!(summary.ends_with(placement), "{summary}");
        assert_eq!(net.class_names[0], "T-shirt/top");
        assert!(load_model(&format!("builtin:{}", m.name)).is_ok());
    }
    let default = default_network().unwrap();
    assert!(default.graph.tap("group1_denoise/before").is_some());
    assert!(default.graph.tap("group2_denoise/after").is_some());
    let err = load_model("builtin:nonexistent").err().unwrap().to_string();
    assert!(err.contains("builtin:pgd-denoise"), "{err}");
}

/// Clean, PGD-10, FGSM and PGD-50 (ε = 0.1) accuracy in percent on the first `n` bundled test
/// images.
fn accuracy(name: &str, n: usize) -> [f64; 4] {
    let data = bundled_test_images().unwrap();
    let data = data.select(&(0..n).collect::<Vec<_>>());
    let mut engine = CpuEngine::new(Arc::new(shipped(name).unwrap())).unwrap();
    let attack = |kind, steps| AttackConfig {
        kind,
        eps: 0.1,
        steps,
        ..AttackConfig::default()
    };
    let attacks = [
        attack(AttackKind::Pgd, Some(10)),
        attack(AttackKind::Fgsm, None),
        attack(AttackKind::Pgd, Some(50)),
    ];
    let r = evaluate(
        &mut engine,
        &data,
        &attacks,
        100,
        false,
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    [
        r.clean_accuracy(),
        r.rows[0].accuracy(),
        r.rows[1].accuracy(),
        r.rows[2].accuracy(),
    ]
}

/// Clean, PGD-10, FGSM and PGD-50 accuracy (%) of each shipped model on the first 300 bundled
/// test images, as assets/models/README.md reports them (`advlens eval --data bundled --n 300
/// --engine cpu --eps 0.1 --seed 0 --attacks pgd10,fgsm,pgd50`).
const REPORTED: [(&str, [f64; 4]); 3] = [
    ("clean", [94.0, 0.0, 3.33, 0.0]),
    ("pgd", [86.0, 81.33, 82.33, 81.33]),
    ("pgd-denoise", [87.33, 82.33, 83.0, 81.67]),
];

#[test]
fn shipped_models_reproduce_their_reported_accuracy() {
    let columns = ["clean", "PGD-10", "FGSM", "PGD-50"];
    let mut measured = Vec::new();
    for (name, reported) in REPORTED {
        let got = accuracy(name, 300);
        println!("{name}: measured {got:.2?}, reported {reported:?} ({columns:?})");
        measured.push((name, got, reported));
    }
    for (name, got, reported) in measured {
        for ((g, r), column) in got.iter().zip(reported).zip(columns) {
            // Within 2 points (6 of 300 images): another CPU's GEMM path may flip a few results.
            assert!((g - r).abs() <= 2.0, "{name}: {column} {g} % against {r} %");
        }
    }
}
