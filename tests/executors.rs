//! The planned executor (host buffers, hand-written backward) against candle's autograd on the
//! same networks: logits, taps (the denoise operations' outputs included) and input gradients
//! agree for every denoise variant and placement, with and without bypass, and attacks give the
//! same results. Candle's own kernels (what CUDA and Metal run, and the stock-candle baseline)
//! agree with advlens's, for inference and for training steps.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use advlens::array::Array;
use advlens::attack::{self, AttackConfig, AttackKind};
use advlens::cancel::Cancel;
use advlens::engine::cpu::{CpuEngine, Executor, Kernels};
use advlens::engine::{Engine, ForwardOptions, Loss, TapSelection};
use advlens::model::{DenoiseVariant, Network, Placement};

fn close(a: &Array, b: &Array, tol: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let scale = b.data().iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let diff = a
        .data()
        .iter()
        .zip(b.data())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= tol * scale,
        "{what}: max difference {diff} (scale {scale})"
    );
}

fn engines(net: Network) -> (CpuEngine, CpuEngine) {
    let net = Arc::new(net);
    let planned = CpuEngine::new(net.clone()).unwrap();
    assert_eq!(planned.executor(), Executor::Planned);
    assert_eq!(planned.kernels(), Kernels::Advlens);
    let autograd = CpuEngine::new(net)
        .unwrap()
        .with_executor(Executor::Autograd);
    (planned, autograd)
}

#[test]
fn planned_matches_autograd_everywhere() {
    for variant in DenoiseVariant::ALL {
        for placement in [Placement::AfterStage, Placement::AfterEveryBlock] {
            let (mut p, mut a) = engines(common::randomized(
                common::tiny_config(variant, placement),
                6,
            ));
            let x = common::random_images(3, [2, 8, 8], 7);
            for bypass in [false, true] {
                let label = format!("{variant} {placement:?} bypass={bypass}");
                let opts = ForwardOptions {
                    taps: TapSelection::All,
                    bypass_denoise: bypass,
                };
                let fp = p.forward(&x, &opts).unwrap();
                let fa = a.forward(&x, &opts).unwrap();
                close(&fp.logits, &fa.logits, 1e-5, &label);
                assert_eq!(fp.taps.len(), fa.taps.len(), "{label}");
                // Every denoise block's operation output is among the taps compared.
                let ops = fp.taps.iter().filter(|(n, _)| n.ends_with("/op")).count();
                assert_eq!(ops, p.network().graph.denoise_blocks.len(), "{label}");
                for ((n1, t1), (n2, t2)) in fp.taps.iter().zip(&fa.taps) {
                    assert_eq!(n1, n2);
                    close(t1, t2, 1e-5, &format!("{label} tap {n1}"));
                }
                let loss = Loss::CrossEntropy {
                    classes: vec![0, 3, 4],
                };
                let gp = p.input_grad(&x, &loss, &opts).unwrap();
                let ga = a.input_grad(&x, &loss, &opts).unwrap();
                close(&gp.grad, &ga.grad, 1e-4, &format!("{label} gradient"));
                assert_eq!(gp.loss.len(), 3);
            }
        }
    }
}

#[test]
fn attacks_agree_across_executors_and_batch_sizes_reuse_buffers() {
    let net = (*common::trained()).clone();
    let (mut p, mut a) = engines(net);
    let (x, y) = common::correctly_classified(4);
    for kind in [AttackKind::Fgsm, AttackKind::Pgd, AttackKind::Deepfool] {
        let cfg = AttackConfig {
            kind,
            eps: 0.1,
            seed: 3,
            ..AttackConfig::default()
        };
        let rp = attack::run(&mut p, &x, Some(&y), &cfg, &Cancel::new()).unwrap();
        let ra = attack::run(&mut a, &x, Some(&y), &cfg, &Cancel::new()).unwrap();
        close(&rp.x_adv, &ra.x_adv, 1e-3, &format!("{kind}"));
    }
    // Alternating batch sizes re-sizes the planned buffers and still gives the same answers.
    let one = p
        .forward(&x.select(&[2]), &ForwardOptions::default())
        .unwrap();
    let all = p.forward(&x, &ForwardOptions::default()).unwrap();
    let again = p
        .forward(&x.select(&[2]), &ForwardOptions::default())
        .unwrap();
    assert_eq!(one.logits, again.logits);
    for (u, v) in one.logits.data().iter().zip(all.logits.example(2)) {
        assert!((u - v).abs() < 1e-5);
    }
}

#[test]
fn bottleneck_imagenet_stem_and_stock_candle_agree() {
    use advlens::model::{BlockKind, StemKind};
    let mut cfg = common::tiny_config(DenoiseVariant::NonlocalGaussian, Placement::AfterStage);
    cfg.image_size = [16, 16];
    cfg.block = BlockKind::Bottleneck;
    cfg.stem = StemKind::Imagenet;
    let net = Arc::new(common::randomized(cfg, 12));
    let autograd = |kernels| {
        CpuEngine::new(net.clone())
            .unwrap()
            .with_executor(Executor::Autograd)
            .with_kernels(kernels)
    };
    let mut p = CpuEngine::new(net.clone()).unwrap();
    let mut a = autograd(Kernels::Advlens);
    let mut s = autograd(Kernels::Candle);
    assert_eq!(s.kernels(), Kernels::Candle);
    let x = common::random_images(2, [2, 16, 16], 13);
    let opts = ForwardOptions::default();
    let loss = Loss::CrossEntropy {
        classes: vec![1, 2],
    };
    let gp = p.input_grad(&x, &loss, &opts).unwrap();
    let ga = a.input_grad(&x, &loss, &opts).unwrap();
    let gs = s.input_grad(&x, &loss, &opts).unwrap();
    for (g, what) in [(&ga, "autograd"), (&gs, "stock candle")] {
        close(&gp.logits, &g.logits, 1e-5, &format!("{what} logits"));
        close(&gp.grad, &g.grad, 1e-4, &format!("{what} gradient"));
    }
    // The two autograd engines differ in their convolutions only, and candle's sums in another
    // order than advlens's: bit-identical logits would mean the kernel choice never reached the
    // convolutions and the stock comparison above is vacuous.
    assert_ne!(
        ga.logits, gs.logits,
        "stock candle ran advlens's convolution"
    );
}

#[test]
fn training_with_either_kernels_takes_the_same_step() {
    use advlens::train::{SgdConfig, Trainer};
    let net = common::randomized(
        common::tiny_config(DenoiseVariant::Mean, Placement::AfterStage),
        14,
    );
    let x = common::random_images(4, [2, 8, 8], 15);
    let y = vec![0, 1, 2, 3];
    let mut a = Trainer::new(net.clone(), SgdConfig::default()).unwrap();
    let mut b = Trainer::new(net, SgdConfig::default())
        .unwrap()
        .with_kernels(Kernels::Candle);
    for _ in 0..3 {
        let sa = a.step(&x, &y).unwrap();
        let sb = b.step(&x, &y).unwrap();
        assert!(
            (sa.loss - sb.loss).abs() < 1e-4,
            "{} vs {}",
            sa.loss,
            sb.loss
        );
    }
    let (na, nb) = (a.into_network().unwrap(), b.into_network().unwrap());
    for (k, wa) in &na.weights {
        close(wa, &nb.weights[k], 1e-4, k);
    }
    assert!(
        na.weights.iter().any(|(k, wa)| *wa != nb.weights[k]),
        "the candle-kernel trainer ran advlens's kernels"
    );
}
