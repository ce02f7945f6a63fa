//! `analysis::eval` behind input-transformation defences: a random defence's clean and robust
//! accuracy are re-predicted under independent draws (the counts are those of separate forward
//! passes), `--eot` is split per attack and restored, and a deterministic defence takes one pass.

#![allow(clippy::unwrap_used)]

mod common;

use advlens::analysis::{EvalOptions, evaluate_defended};
use advlens::attack::{AttackConfig, AttackKind};
use advlens::cancel::Cancel;
use advlens::data::Labelled;
use advlens::defense::Defense;
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Defended, Engine, ForwardOptions, predictions};

fn data(n: usize) -> Labelled {
    let (images, labels) = common::synthetic(n, 321);
    Labelled { images, labels }
}

fn defended(chain: &str, eot: usize, seed: u64) -> (Defended, Defense) {
    let defense = Defense {
        chain: chain.parse().unwrap(),
        eot,
        seed,
        ..Defense::default()
    };
    let inner = Box::new(CpuEngine::new(common::trained()).unwrap());
    (Defended::new(inner, defense.clone()).unwrap(), defense)
}

fn fgsm() -> AttackConfig {
    AttackConfig {
        kind: AttackKind::Fgsm,
        eps: 0.1,
        ..AttackConfig::default()
    }
}

/// Clean accuracy under a random defence is the count of D separate forward passes, draw by
/// draw: a fresh engine with the same defence, run D times on the batch, gives the same counts.
#[test]
fn a_random_defence_is_re_predicted_under_each_draw() {
    let set = data(24);
    let draws = 6;
    let (mut engine, defense) = defended("resize-pad", 1, 3);
    let opts = EvalOptions {
        batch: 100,
        defense_draws: draws,
        ..EvalOptions::default()
    };
    let r = evaluate_defended(
        &mut engine,
        &set,
        &[fgsm()],
        &opts,
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.defense.as_ref(), Some(&defense));
    let clean = r.clean_draws.as_ref().expect("per-draw clean accuracy");
    let (mut oracle, _) = defended("resize-pad", 1, 3);
    let mut expected = Vec::new();
    let mut logits = Vec::new();
    for _ in 0..draws {
        let out = oracle
            .forward(&set.images, &ForwardOptions::default())
            .unwrap();
        let pred = predictions(&out.logits);
        expected.push(pred.iter().zip(&set.labels).filter(|(p, y)| p == y).count());
        logits.push(out.logits.data().to_vec());
    }
    assert_eq!(clean.correct, expected);
    assert!(
        logits.windows(2).any(|w| w[0] != w[1]),
        "the draws should differ"
    );
    assert_eq!(r.clean_correct, expected[0]);
    let mean = expected
        .iter()
        .map(|&c| 100.0 * c as f64 / 24.0)
        .sum::<f64>()
        / draws as f64;
    assert!((r.clean_accuracy() - mean).abs() < 1e-9);
    let row = &r.rows[0];
    let robust = row.draws.as_ref().expect("per-draw robust accuracy");
    assert_eq!(robust.correct.len(), draws);
    assert_eq!(robust.accuracy.len(), draws);
    assert_eq!(row.correct, robust.correct[0]);
    assert!(row.accuracy_text().contains(" ± "));
    assert!(
        r.markdown()
            .contains(&format!("under {draws} independent draws"))
    );
}

/// PGD averages inside the defence, APGD over its own calls; the defence's EOT is put back.
#[test]
fn eot_is_split_per_attack_and_restored() {
    let set = data(8);
    let (mut engine, _) = defended("resize-pad", 4, 0);
    let pgd = AttackConfig {
        kind: AttackKind::Pgd,
        eps: 0.1,
        steps: Some(2),
        ..AttackConfig::default()
    };
    let apgd = AttackConfig {
        kind: AttackKind::ApgdCe,
        steps: Some(2),
        ..pgd.clone()
    };
    let r = evaluate_defended(
        &mut engine,
        &set,
        &[pgd, apgd],
        &EvalOptions::default(),
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    let split = |i: usize| {
        let row = &r.rows[i];
        (row.attack.apgd.eot, row.defense.as_ref().unwrap().eot)
    };
    assert_eq!(split(0), (1, 4));
    assert_eq!(split(1), (4, 1));
    assert_eq!(engine.defense().eot, 4);
    assert_eq!(r.defense.as_ref().unwrap().eot, 4);
}

/// A defence without randomness is re-predicted once: no draws, no spread.
#[test]
fn a_deterministic_defence_takes_one_pass() {
    let set = data(8);
    let (mut engine, _) = defended("jpeg:75", 1, 0);
    let r = evaluate_defended(
        &mut engine,
        &set,
        &[fgsm()],
        &EvalOptions::default(),
        &Cancel::new(),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(r.clean_draws.is_none());
    assert!(r.rows[0].draws.is_none());
    assert!(!r.markdown().contains('±'));
    assert!(r.markdown().starts_with("defence: jpeg:75 (bpda)"));
}
