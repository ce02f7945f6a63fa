//! Attack properties on a small trained model: every attack stays inside the ε ball and [0, 1]
//! (both norms), the same seed gives the same result, an image's result does not depend on its
//! batch, targeted attacks reach their targets, the minimum-norm attacks find smaller
//! perturbations than FGSM, and cancellation stops an attack.

#![allow(clippy::unwrap_used)]

mod common;

use advlens::array::Array;
use advlens::attack::distances;
use advlens::attack::{
    self, AttackConfig, AttackError, AttackKind, AttackResult, Norm, TargetMode,
};
use advlens::cancel::Cancel;
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Engine, ForwardOptions, predictions};

fn engine() -> CpuEngine {
    CpuEngine::new(common::trained()).unwrap()
}

fn cfg(kind: AttackKind, norm: Norm, eps: f32) -> AttackConfig {
    AttackConfig {
        kind,
        norm,
        eps,
        seed: 42,
        cw: advlens::attack::CwConfig {
            steps: 40,
            search_steps: 4,
            initial_const: 0.1,
            learning_rate: 0.05,
            ..Default::default()
        },
        ..AttackConfig::default()
    }
}

fn run(e: &mut CpuEngine, x: &Array, y: &[usize], c: &AttackConfig) -> AttackResult {
    attack::run(e, x, Some(y), c, &Cancel::new()).unwrap()
}

fn success_rate(e: &mut CpuEngine, r: &AttackResult) -> f32 {
    let p = predictions(
        &e.forward(&r.x_adv, &ForwardOptions::default())
            .unwrap()
            .logits,
    );
    let hits = p
        .iter()
        .enumerate()
        .filter(|&(i, &pi)| match &r.targets {
            Some(t) => pi == t[i],
            None => pi != r.labels[i],
        })
        .count();
    hits as f32 / p.len() as f32
}

#[test]
fn the_trained_model_is_accurate() {
    let (x, y) = common::synthetic(64, 77);
    let mut e = engine();
    let p = predictions(&e.forward(&x, &ForwardOptions::default()).unwrap().logits);
    let acc = p.iter().zip(&y).filter(|(a, b)| a == b).count() as f32 / 64.0;
    assert!(acc > 0.9, "accuracy {acc}");
}

#[test]
fn every_attack_stays_in_the_ball_and_the_box() {
    let (x, y) = common::correctly_classified(6);
    let mut e = engine();
    for kind in AttackKind::ALL {
        for norm in [Norm::Linf, Norm::L2] {
            if kind == AttackKind::Cw && norm == Norm::Linf {
                continue;
            }
            let eps = if norm == Norm::Linf { 0.1 } else { 0.8 };
            let mut c = cfg(kind, norm, eps);
            let iterative = !kind.is_minimum_norm() && kind != AttackKind::Fgsm;
            if iterative {
                // Ten steps of ε/2 add up to 5ε: only the projection keeps them in the ball.
                c.alpha = Some(eps / 2.0);
                c.steps = Some(10);
            }
            let r = run(&mut e, &x, &y, &c);
            assert!(
                r.x_adv.data().iter().all(|v| (0.0..=1.0).contains(v)),
                "{kind} {norm:?}: outside [0, 1]"
            );
            assert_eq!(r.history.len(), x.batch());
            assert!(
                r.history.iter().all(|h| !h.is_empty()),
                "{kind}: empty history"
            );
            if kind.is_minimum_norm() {
                continue;
            }
            let mut largest = 0.0f32;
            for i in 0..x.batch() {
                let (linf, l2) = distances(r.x_adv.example(i), x.example(i));
                let d = if norm == Norm::Linf { linf } else { l2 };
                assert!(
                    d <= eps * (1.0 + 1e-5) + 1e-6,
                    "{kind} {norm:?}: ‖δ‖ = {d} > {eps}"
                );
                largest = largest.max(d);
            }
            // They do go that far: the projection is onto the ball, not into a smaller one.
            assert!(
                largest >= 0.95 * eps,
                "{kind} {norm:?}: largest ‖δ‖ {largest} well inside ε = {eps}"
            );
            // The history's last point is the returned image (APGD returns its best point,
            // which its history marks at the step where it was reached).
            if kind.is_apgd() || matches!(kind, AttackKind::AutoAttack | AttackKind::AutoAttackRand)
            {
                continue;
            }
            let last = r.history[0].last().unwrap();
            let (linf, l2) = distances(r.x_adv.example(0), x.example(0));
            assert!((last.linf - linf).abs() < 1e-6 && (last.l2 - l2).abs() < 1e-5);
        }
    }
}

#[test]
fn gradient_attacks_fool_the_model_at_a_large_budget() {
    let (x, y) = common::correctly_classified(8);
    let mut e = engine();
    for kind in [AttackKind::Bim, AttackKind::Pgd, AttackKind::MiFgsm] {
        let r = run(&mut e, &x, &y, &cfg(kind, Norm::Linf, 0.3));
        let s = success_rate(&mut e, &r);
        assert!(s >= 0.75, "{kind}: success {s}");
    }
    // FGSM at a tiny budget changes little; PGD's loss never ends below where it started.
    let r = run(&mut e, &x, &y, &cfg(AttackKind::Pgd, Norm::Linf, 0.1));
    for h in &r.history {
        assert!(h.last().unwrap().loss >= h[0].loss - 1e-3);
    }
}

#[test]
fn same_seed_same_result_and_different_seed_differs() {
    let (x, y) = common::correctly_classified(4);
    let mut e = engine();
    for kind in AttackKind::ALL {
        let norm = if kind == AttackKind::Cw {
            Norm::L2
        } else {
            Norm::Linf
        };
        let mut c = cfg(kind, norm, 0.1);
        c.restarts = if kind == AttackKind::Pgd { 2 } else { 1 };
        let a = run(&mut e, &x, &y, &c);
        let b = run(&mut e, &x, &y, &c);
        assert_eq!(a.x_adv, b.x_adv, "{kind}");
        assert_eq!(a.history, b.history, "{kind}");
    }
    let c = cfg(AttackKind::Pgd, Norm::Linf, 0.1);
    let a = run(&mut e, &x, &y, &c);
    let b = run(&mut e, &x, &y, &AttackConfig { seed: 43, ..c });
    assert_ne!(a.x_adv, b.x_adv, "the random start ignores the seed");
}

#[test]
fn results_do_not_depend_on_the_batch() {
    let (x, y) = common::correctly_classified(5);
    let mut e = engine();
    for kind in AttackKind::ALL {
        let norm = if kind == AttackKind::Cw {
            Norm::L2
        } else {
            Norm::Linf
        };
        let mut c = cfg(kind, norm, 0.1);
        c.target = if kind.is_minimum_norm()
            || matches!(kind, AttackKind::AutoAttack | AttackKind::AutoAttackRand)
        {
            TargetMode::Untargeted
        } else {
            TargetMode::Random
        };
        let whole = run(&mut e, &x, &y, &c);
        // Example 3 alone, and at the front of a reordered batch.
        let alone = run(&mut e, &x.select(&[3]), &y[3..4], &c);
        let order = [3, 0, 4];
        let ys: Vec<usize> = order.iter().map(|&i| y[i]).collect();
        let mixed = run(&mut e, &x.select(&order), &ys, &c);
        for other in [&alone, &mixed] {
            let d = distances(whole.x_adv.example(3), other.x_adv.example(0)).0;
            assert!(d < 1e-5, "{kind}: batch changed the result by {d}");
            assert_eq!(
                whole.targets.as_ref().map(|t| t[3]),
                other.targets.as_ref().map(|t| t[0])
            );
        }
    }
}

#[test]
fn targeted_attacks_reach_their_targets() {
    let (x, y) = common::correctly_classified(8);
    let mut e = engine();
    for (kind, norm, eps) in [
        (AttackKind::Pgd, Norm::Linf, 0.3),
        (AttackKind::Bim, Norm::Linf, 0.3),
        (AttackKind::MiFgsm, Norm::Linf, 0.3),
        (AttackKind::Pgd, Norm::L2, 3.0),
        (AttackKind::Cw, Norm::L2, 0.0),
        (AttackKind::ApgdCe, Norm::Linf, 0.3),
        (AttackKind::ApgdDlr, Norm::Linf, 0.3),
        (AttackKind::Square, Norm::Linf, 0.3),
    ] {
        for target in [
            TargetMode::Random,
            TargetMode::LeastLikely,
            TargetMode::Class(2),
        ] {
            let mut c = cfg(kind, norm, eps);
            c.target = target.clone();
            if kind != AttackKind::Cw {
                c.steps = Some(30);
                c.alpha = Some(eps / 10.0);
            }
            let r = run(&mut e, &x, &y, &c);
            let t = r.targets.clone().unwrap();
            if let TargetMode::Class(k) = target {
                assert!(t.iter().all(|&ti| ti == k));
            }
            if target == TargetMode::Random {
                assert!(t.iter().zip(&y).all(|(a, b)| a != b));
            }
            let s = success_rate(&mut e, &r);
            assert!(
                s >= 0.75,
                "{kind} {norm:?} {target:?}: target reached for {s}"
            );
        }
    }
}

#[test]
fn minimum_norm_attacks_beat_fgsm() {
    let (x, y) = common::correctly_classified(8);
    let mut e = engine();
    let fgsm = run(&mut e, &x, &y, &cfg(AttackKind::Fgsm, Norm::L2, 3.0));
    let s_fgsm = success_rate(&mut e, &fgsm);
    for kind in [AttackKind::Cw, AttackKind::Deepfool] {
        let r = run(&mut e, &x, &y, &cfg(kind, Norm::L2, 0.0));
        let s = success_rate(&mut e, &r);
        assert!(
            s >= s_fgsm,
            "{kind} succeeds less often ({s}) than FGSM ({s_fgsm})"
        );
        // Mean L2 over the images both attacks fooled.
        let pairs: Vec<(f32, f32)> = (0..x.batch())
            .filter(|&i| {
                let mut p = |a: &Array| {
                    predictions(
                        &e.forward(&a.select(&[i]), &ForwardOptions::default())
                            .unwrap()
                            .logits,
                    )[0]
                };
                p(&r.x_adv) != y[i] && p(&fgsm.x_adv) != y[i]
            })
            .map(|i| {
                (
                    distances(r.x_adv.example(i), x.example(i)).1,
                    distances(fgsm.x_adv.example(i), x.example(i)).1,
                )
            })
            .collect();
        assert!(pairs.len() >= 3, "{kind}: too few common successes");
        let ours: f32 = pairs.iter().map(|p| p.0).sum::<f32>() / pairs.len() as f32;
        let theirs: f32 = pairs.iter().map(|p| p.1).sum::<f32>() / pairs.len() as f32;
        assert!(
            ours < theirs,
            "{kind}: mean L2 {ours} not below FGSM's {theirs}"
        );
    }
}

#[test]
fn cancel_stops_an_attack_and_bad_settings_are_errors() {
    let (x, y) = common::correctly_classified(2);
    let mut e = engine();
    let cancel = Cancel::new();
    cancel.cancel();
    let err = attack::run(
        &mut e,
        &x,
        Some(&y),
        &cfg(AttackKind::Pgd, Norm::Linf, 0.1),
        &cancel,
    )
    .unwrap_err();
    assert!(matches!(err, AttackError::Cancelled));
    let mut bad =
        |c: AttackConfig| attack::run(&mut e, &x, Some(&y), &c, &Cancel::new()).unwrap_err();
    let base = cfg(AttackKind::Pgd, Norm::Linf, 0.1);
    assert!(
        bad(AttackConfig {
            eps: f32::NAN,
            ..base.clone()
        })
        .to_string()
        .contains("epsilon")
    );
    assert!(
        bad(AttackConfig {
            steps: Some(0),
            ..base.clone()
        })
        .to_string()
        .contains("step")
    );
    assert!(
        bad(AttackConfig {
            target: TargetMode::Class(9),
            ..base.clone()
        })
        .to_string()
        .contains("out of range")
    );
    let e2 = attack::run(&mut e, &x, Some(&[0]), &base, &Cancel::new()).unwrap_err();
    assert!(e2.to_string().contains("labels"));
    assert!("nope".parse::<AttackKind>().is_err());
    assert_eq!("I-FGSM".parse::<AttackKind>().unwrap(), AttackKind::Bim);
}
