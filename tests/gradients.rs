//! The cpu engine's input gradient against finite differences, through every node type and
//! every denoise variant and placement.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use advlens::array::Array;
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Engine, ForwardOptions, Loss};
use advlens::model::{DenoiseVariant, Network, Placement};
use common::{random_images, randomized};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Compares the analytic gradient with central finite differences on sampled input coordinates,
/// with a random linear loss on the logits. Coordinates where the two one-sided slopes disagree
/// sit on a kink (ReLU, max, median) and are skipped; at most a third may be.
fn check_network(net: Network, bypass: bool, label: &str) {
    let net = Arc::new(net);
    let [c, h, w] = net.input_shape();
    let mut engine = CpuEngine::new(net.clone()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = random_images(2, [c, h, w], 11);
    let k = net.num_classes();
    let weights: Vec<f32> = (0..2 * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let loss = Loss::LogitWeights { weights };
    let opts = ForwardOptions {
        bypass_denoise: bypass,
        ..Default::default()
    };
    let g = engine.input_grad(&x, &loss, &opts).unwrap();
    assert!(g.grad.all_finite(), "{label}: non-finite gradient");
    assert!(
        g.grad.data().iter().any(|&v| v != 0.0),
        "{label}: gradient is identically zero"
    );
    let total = |e: &mut CpuEngine, xx: &Array| -> f64 {
        let lg = e.forward(xx, &opts).unwrap().logits;
        let (vals, _) = loss.evaluate(&lg).unwrap();
        vals.iter().map(|&v| v as f64).sum()
    };
    let f0 = total(&mut engine, &x);
    let hstep = 1e-3f32;
    let samples = 24;
    let mut skipped = 0;
    for _ in 0..samples {
        let j = rng.random_range(0..x.len());
        let mut xp = x.clone();
        xp.data_mut()[j] += hstep;
        let mut xm = x.clone();
        xm.data_mut()[j] -= hstep;
        let (fp, fm) = (total(&mut engine, &xp), total(&mut engine, &xm));
        let h = hstep as f64;
        let (up, down) = ((fp - f0) / h, (f0 - fm) / h);
        let an = g.grad.data()[j] as f64;
        let tol = 2e-2 * up.abs().max(down.abs()).max(an.abs()) + 2e-3;
        if (up - down).abs() > tol {
            skipped += 1;
            continue;
        }
        let fd = (fp - fm) / (2.0 * h);
        assert!(
            (fd - an).abs() <= tol,
            "{label} coordinate {j}: finite difference {fd} vs analytic {an}"
        );
    }
    assert!(
        skipped * 3 <= samples,
        "{label}: {skipped} of {samples} coordinates sit on kinks"
    );
}

#[test]
fn every_denoise_variant_and_placement() {
    for variant in DenoiseVariant::ALL {
        for placement in [Placement::AfterStage, Placement::AfterEveryBlock] {
            let net = randomized(common::tiny_config(variant, placement), 1);
            check_network(net, false, &format!("{variant} {placement:?}"));
        }
    }
    let net = randomized(
        common::tiny_config(DenoiseVariant::NonlocalGaussian, Placement::AfterStage),
        2,
    );
    check_network(net, true, "bypassed denoise");
}

#[test]
fn bottleneck_blocks_and_imagenet_stem() {
    use advlens::model::{BlockKind, StemKind};
    let mut cfg = common::tiny_config(DenoiseVariant::NonlocalGaussian, Placement::AfterEveryBlock);
    cfg.image_size = [16, 16];
    cfg.block = BlockKind::Bottleneck;
    cfg.stem = StemKind::Imagenet;
    check_network(randomized(cfg, 9), false, "bottleneck, imagenet stem");
}

#[test]
fn dot_product_in_both_channel_forms() {
    // The dot-product block switches to its channel form when C <= H·W; make C > H·W too.
    let mut cfg = common::tiny_config(DenoiseVariant::DotProduct, Placement::AfterStage);
    cfg.image_size = [4, 4];
    cfg.widths = vec![4, 12];
    check_network(randomized(cfg, 4), false, "dot product, C > HW");
}

#[test]
fn pooling_relu6_and_channel_reordering() {
    // Reordering, ReLU6, max/avg pooling, grouped and depthwise convs (see common).
    check_network(
        common::pooling_graph([3, 9, 9], (3, 1), 5),
        false,
        "pooling graph",
    );
}
