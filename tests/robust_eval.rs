//! APGD, Square and AutoAttack on the small trained model: every query Square makes stays in
//! the ε ball and [0, 1]; AutoAttack never attacks an image again once it is fooled, and that
//! image stays fooled; the stages add up; APGD is at least as strong as fixed-step PGD and
//! APGD-T at least as strong as APGD-CE; class-count and targeting errors are clear.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use advlens::array::Array;
use advlens::attack::{self, AttackConfig, AttackKind, Norm, TargetMode, distances};
use advlens::cancel::Cancel;
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Engine, EngineError, Forward, ForwardOptions, Gradient, Loss, predictions};
use advlens::model::{DenoiseVariant, Network, Placement};

/// Every input the wrapped engine sees, by kind of pass.
#[derive(Default)]
struct Seen {
    forwards: Vec<Array>,
    grads: Vec<Array>,
}

/// A cpu engine that records its inputs.
struct Recorder {
    inner: CpuEngine,
    seen: Arc<Mutex<Seen>>,
}

impl Engine for Recorder {
    fn describe(&self) -> String {
        "recorder".into()
    }
    fn network(&self) -> &Network {
        self.inner.network()
    }
    fn forward(&mut self, x: &Array, opts: &ForwardOptions) -> Result<Forward, EngineError> {
        self.seen.lock().unwrap().forwards.push(x.clone());
        self.inner.forward(x, opts)
    }
    fn input_grad(
        &mut self,
        x: &Array,
        loss: &Loss,
        opts: &ForwardOptions,
    ) -> Result<Gradient, EngineError> {
        self.seen.lock().unwrap().grads.push(x.clone());
        self.inner.input_grad(x, loss, opts)
    }
}

fn recorder() -> (Recorder, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let inner = CpuEngine::new(common::trained()).unwrap();
    (
        Recorder {
            inner,
            seen: seen.clone(),
        },
        seen,
    )
}

fn cfg(kind: AttackKind, norm: Norm, eps: f32) -> AttackConfig {
    AttackConfig {
        kind,
        norm,
        eps,
        seed: 11,
        ..AttackConfig::default()
    }
}

/// The clean image (index into `x`) that `v` lies within `eps` of (L∞), if exactly one.
fn owner(x: &Array, v: &[f32], eps: f32) -> Option<usize> {
    let near: Vec<usize> = (0..x.batch())
        .filter(|&i| distances(v, x.example(i)).0 <= eps * (1.0 + 1e-5) + 1e-6)
        .collect();
    (near.len() == 1).then(|| near[0])
}

fn accuracy(e: &mut dyn Engine, x: &Array, y: &[usize]) -> usize {
    let p = predictions(&e.forward(x, &ForwardOptions::default()).unwrap().logits);
    p.iter().zip(y).filter(|(a, b)| a == b).count()
}

#[test]
fn every_square_query_stays_in_the_ball_and_the_box() {
    let (x, y) = common::correctly_classified(6);
    for (norm, eps) in [(Norm::Linf, 0.15), (Norm::L2, 1.0)] {
        let (mut e, seen) = recorder();
        let mut c = cfg(AttackKind::Square, norm, eps);
        c.square.queries = 300;
        let r = attack::run(&mut e, &x, Some(&y), &c, &Cancel::new()).unwrap();
        let seen = seen.lock().unwrap();
        assert!(
            seen.grads.is_empty(),
            "{norm:?}: Square asked for a gradient"
        );
        // The clean pass, the initialisation, then one batched pass per iteration at most.
        assert!(seen.forwards.len() >= 3 && seen.forwards.len() <= 302);
        let mut queries = 0;
        let mut largest = 0.0f32;
        for batch in &seen.forwards[1..] {
            for j in 0..batch.batch() {
                let v = batch.example(j);
                assert!(
                    v.iter().all(|p| (0.0..=1.0).contains(p)),
                    "{norm:?}: outside [0, 1]"
                );
                // Every query belongs to one clean image and is within ε of it.
                let d = (0..x.batch())
                    .map(|i| {
                        let (linf, l2) = distances(v, x.example(i));
                        if norm == Norm::Linf { linf } else { l2 }
                    })
                    .fold(f32::INFINITY, f32::min);
                assert!(
                    d <= eps * (1.0 + 1e-5) + 1e-6,
                    "{norm:?}: query at ‖δ‖ = {d} > {eps}"
                );
                largest = largest.max(d);
                queries += 1;
            }
        }
        assert!(
            largest >= 0.9 * eps,
            "{norm:?}: queries stay well inside ε ({largest})"
        );
        assert!(queries > x.batch(), "{norm:?}: only {queries} queries");
        drop(seen);
        // A second run gives the same images: the windows come from the seed.
        let again = attack::run(&mut e, &x, Some(&y), &c, &Cancel::new()).unwrap();
        assert_eq!(r.x_adv, again.x_adv);
    }
}

#[test]
fn square_stops_querying_fooled_images_and_fools_at_a_large_budget() {
    let (x, y) = common::correctly_classified(6);
    let (mut e, seen) = recorder();
    let mut c = cfg(AttackKind::Square, Norm::Linf, 0.4);
    c.square.queries = 400;
    let r = attack::run(&mut e, &x, Some(&y), &c, &Cancel::new()).unwrap();
    let fooled = x.batch() - accuracy(&mut e.inner, &r.x_adv, &y);
    assert!(fooled >= 4, "Square at ε = 0.4 fooled only {fooled} of 6");
    // Batches shrink as images are fooled and it stops once all are.
    let seen = seen.lock().unwrap();
    let sizes: Vec<usize> = seen.forwards[1..].iter().map(Array::batch).collect();
    assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
}

#[test]
fn autoattack_never_attacks_a_fooled_image_again_and_it_stays_fooled() {
    let (x, y) = common::correctly_classified(8);
    let eps = 0.12;
    let (mut e, seen) = recorder();
    let mut c = cfg(AttackKind::AutoAttack, Norm::Linf, eps);
    c.steps = Some(12);
    c.square.queries = 200;
    let r = attack::run(&mut e, &x, Some(&y), &c, &Cancel::new()).unwrap();
    let names: Vec<&str> = r.stages.iter().map(|s| s.attack.as_str()).collect();
    assert_eq!(names, ["apgd-ce", "apgd-t", "square"]);
    // The stages chain: each attacks exactly what the previous left robust.
    assert_eq!(r.stages[0].attacked, x.batch());
    for w in r.stages.windows(2) {
        assert_eq!(w[1].attacked, w[0].robust_after);
    }
    for s in &r.stages {
        assert_eq!(s.robust_after + s.fooled, s.attacked);
    }
    let first_fooled = r.stages[0].fooled;
    assert!(
        first_fooled > 0 && r.stages[0].robust_after > 0,
        "choose ε so that APGD-CE fools some images and not all: {:?}",
        r.stages
    );
    // Final robust accuracy is the last stage's count, re-predicted on the returned images.
    let robust = accuracy(&mut e, &r.x_adv, &y);
    assert_eq!(robust, r.stages[2].robust_after);
    // Images APGD-CE fooled got exactly its passes: 1 + steps gradients, nothing afterwards.
    let seen = seen.lock().unwrap();
    let mut grads = vec![0usize; x.batch()];
    for batch in &seen.grads {
        for j in 0..batch.batch() {
            if let Some(i) = owner(&x, batch.example(j), eps) {
                grads[i] += 1;
            }
        }
    }
    let p = predictions(
        &e.inner
            .forward(&r.x_adv, &ForwardOptions::default())
            .unwrap()
            .logits,
    );
    let ce_only: Vec<usize> = (0..x.batch()).filter(|&i| grads[i] == 13).collect();
    assert_eq!(
        ce_only.len(),
        first_fooled,
        "gradient passes per image: {grads:?}"
    );
    for &i in &ce_only {
        assert_ne!(
            p[i], y[i],
            "image {i}, fooled by APGD-CE, is no longer fooled"
        );
    }
    // Images that survived APGD-CE were attacked by APGD-T too.
    assert!(grads.iter().all(|&g| g == 13 || g > 13 + 12));
}

#[test]
fn apgd_is_at_least_as_strong_as_pgd_and_apgd_t_as_apgd_ce() {
    let (x, y) = common::correctly_classified(16);
    let mut e = CpuEngine::new(common::trained()).unwrap();
    let eps = 0.1;
    let robust = |e: &mut CpuEngine, c: &AttackConfig| {
        let r = attack::run(e, &x, Some(&y), c, &Cancel::new()).unwrap();
        accuracy(e, &r.x_adv, &y)
    };
    let mut pgd = cfg(AttackKind::Pgd, Norm::Linf, eps);
    pgd.steps = Some(50);
    let mut ce = cfg(AttackKind::ApgdCe, Norm::Linf, eps);
    ce.steps = Some(50);
    let t = AttackConfig {
        kind: AttackKind::ApgdT,
        ..ce.clone()
    };
    let (a_pgd, a_ce, a_t) = (
        robust(&mut e, &pgd),
        robust(&mut e, &ce),
        robust(&mut e, &t),
    );
    assert!(
        a_ce <= a_pgd,
        "APGD-CE {a_ce} vs PGD-50 {a_pgd} robust of 16"
    );
    assert!(a_t <= a_ce, "APGD-T {a_t} vs APGD-CE {a_ce} robust of 16");
    assert!(a_pgd < 16, "ε too small to tell the attacks apart");
}

#[test]
fn dlr_needs_enough_classes_and_autoattack_is_untargeted() {
    // A two-class network: DLR and targeted DLR are undefined.
    let mut tiny = common::tiny_config(DenoiseVariant::Mean, Placement::None);
    tiny.num_classes = 2;
    let net = Arc::new(common::randomized(tiny, 3));
    let mut e = CpuEngine::new(net).unwrap();
    let x = common::random_images(2, [2, 8, 8], 4);
    let run = |e: &mut CpuEngine, kind| {
        attack::run(
            e,
            &x,
            Some(&[0, 1]),
            &cfg(kind, Norm::Linf, 0.1),
            &Cancel::new(),
        )
    };
    let msg = run(&mut e, AttackKind::ApgdDlr).unwrap_err().to_string();
    assert!(
        msg.contains("at least 3 classes") && msg.contains("apgd-ce"),
        "{msg}"
    );
    let msg = run(&mut e, AttackKind::ApgdT).unwrap_err().to_string();
    assert!(msg.contains("at least 4 classes"), "{msg}");
    assert!(run(&mut e, AttackKind::ApgdCe).is_ok());
    // AutoAttack picks its own targets.
    let (x4, y4) = common::correctly_classified(2);
    let mut e4 = CpuEngine::new(common::trained()).unwrap();
    let mut c = cfg(AttackKind::AutoAttack, Norm::Linf, 0.1);
    c.target = TargetMode::Class(1);
    let msg = attack::run(&mut e4, &x4, Some(&y4), &c, &Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("untargeted"), "{msg}");
}

#[test]
fn apgd_from_a_given_start_is_deterministic_and_keeps_its_schedule() {
    let (x, y) = common::correctly_classified(4);
    let mut e = CpuEngine::new(common::trained()).unwrap();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
    let eps = 0.1;
    let mut start = x.clone();
    for i in 0..x.batch() {
        let s = attack::apgd_random_start(x.example(i), eps, Norm::Linf, &mut rng);
        // AutoAttack's start: one coordinate exactly at ±ε (unless clipped by the box).
        let d = distances(&s, x.example(i)).0;
        assert!(d <= eps + 1e-6);
        start.example_mut(i).copy_from_slice(&s);
    }
    let obj = attack::ApgdObjective {
        loss: Loss::CrossEntropy { classes: y.clone() },
        sign: 1.0,
        reach: None,
    };
    let settings = attack::ApgdSettings {
        eps,
        norm: Norm::Linf,
        steps: 100,
        rho: 0.75,
        eot: 1,
    };
    let inp = attack::ApgdInputs {
        x: &x,
        labels: &y,
        start: &start,
    };
    let mut steps_seen = 0;
    let a = attack::apgd_single_run(
        &mut e,
        inp,
        &obj,
        &settings,
        &ForwardOptions::default(),
        &Cancel::new(),
        &mut |s| steps_seen = s,
    )
    .unwrap();
    assert_eq!(steps_seen, 100);
    let b = attack::apgd_single_run(
        &mut e,
        inp,
        &obj,
        &settings,
        &ForwardOptions::default(),
        &Cancel::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(a.x_adv, b.x_adv);
    for i in 0..x.batch() {
        assert_eq!(a.loss_trace[i].len(), 100);
        // The step size only ever halves from 2ε, at most once per checkpoint.
        let halvings = (2.0 * eps / a.step_size[i]).log2();
        assert!(
            (halvings - halvings.round()).abs() < 1e-4 && (0.0..=8.0).contains(&halvings),
            "step size {}",
            a.step_size[i]
        );
        // The best loss is the best of the trace and the start.
        let best = a.loss_trace[i]
            .iter()
            .copied()
            .fold(a.history[i][0].loss, f32::max);
        assert_eq!(a.best_loss[i], best);
    }
}
