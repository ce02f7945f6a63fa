//! The gpu engine against the cpu engine (the reference), on the software Vulkan adapter in CI
//! (lavapipe) or a real GPU: every WGSL file validates with naga; every node type's forward
//! values, taps (the denoise operations' outputs among them) and input gradient agree on random
//! networks with odd shapes; the shipped model agrees; the device-side attack loop (FGSM, PGD,
//! MI-FGSM, L2) matches the host loop.
//!
//! Tolerances: values and gradients within 1e-4 of the largest reference magnitude (plus 1e-5),
//! gradients also with cosine similarity above 0.9999; attacks on ≥ 98% of pixels within 1e-4
//! (a gradient entry near zero may take the other sign in a different summation order).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use advlens::array::Array;
use advlens::attack::{self, AttackConfig, AttackKind, Norm};
use advlens::cancel::Cancel;
use advlens::engine::cpu::CpuEngine;
use advlens::engine::gpu::kernels::Shader;
use advlens::engine::gpu::{GpuEngine, Phase};
use advlens::engine::{Engine, EngineError, ForwardOptions, Loss, TapSelection};
use advlens::model::{
    ArchConfig, DenoiseVariant, EfficientNetLiteConfig, Network, Placement, TorchResnetConfig,
};
use advlens::model::{BlockKind, StemKind};
use common::{random_images, randomized, tiny_config};

#[test]
fn every_shader_validates_with_naga() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = Shader::ALL.iter().map(|s| s.file_name().into()).collect();
    known.sort();
    assert_eq!(on_disk, known, "every shader file is used by the engine");
    for shader in Shader::ALL {
        let module = naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| {
            panic!(
                "{}: {}",
                shader.file_name(),
                e.emit_to_string(shader.source())
            )
        });
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", shader.file_name()));
        let bindings = module
            .global_variables
            .iter()
            .filter_map(|(_, v)| v.binding.as_ref().map(|b| b.binding))
            .max()
            .unwrap();
        assert_eq!(
            bindings,
            shader.storage_bindings(),
            "{}",
            shader.file_name()
        );
    }
}

/// The gpu engine on the shared device, or `None` (the test skips with a note) without an adapter.
fn gpu(net: &Arc<Network>) -> Option<GpuEngine> {
    Some(GpuEngine::new(net.clone(), common::gpu_context()?).unwrap())
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn assert_close(got: &Array, want: &Array, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let tol = 1e-4 * max_abs(want.data()) + 1e-5;
    let (i, err) = got
        .data()
        .iter()
        .zip(want.data())
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(
        err <= tol,
        "{what}: max error {err} at {i} (gpu {}, cpu {}), tolerance {tol}",
        got.data()[i],
        want.data()[i]
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb).max(1e-30)) as f32
}

/// Forward (logits and every tap, with and without the denoise bypass) and input gradients of
/// two losses agree between the engines.
fn check_network(net: Network, batch: usize, label: &str) {
    let net = Arc::new(net);
    let mut cpu = CpuEngine::new(net.clone()).unwrap();
    let Some(mut gpu) = gpu(&net) else { return };
    let x = random_images(batch, net.input_shape(), 11);
    for bypass in [false, true] {
        let opts = ForwardOptions {
            taps: TapSelection::All,
            bypass_denoise: bypass,
        };
        let want = cpu.forward(&x, &opts).unwrap();
        let got = gpu.forward(&x, &opts).unwrap();
        assert_close(
            &got.logits,
            &want.logits,
            &format!("{label}: logits (bypass {bypass})"),
        );
        assert_eq!(got.taps.len(), want.taps.len());
        for ((name, g), (want_name, w)) in got.taps.iter().zip(&want.taps) {
            assert_eq!(name, want_name);
            assert_close(g, w, &format!("{label}: tap {name} (bypass {bypass})"));
        }
        let k = net.num_classes();
        let classes: Vec<usize> = (0..batch).map(|i| (i * 3 + 1) % k).collect();
        let losses = [
            Loss::CrossEntropy {
                classes: classes.clone(),
            },
            Loss::Margin {
                classes,
                targeted: false,
                kappa: 100.0,
            },
        ];
        for loss in losses {
            let want = cpu.input_grad(&x, &loss, &opts).unwrap();
            let got = gpu.input_grad(&x, &loss, &opts).unwrap();
            let what = format!("{label}: input gradient {loss:?} (bypass {bypass})");
            assert_close(&got.grad, &want.grad, &what);
            if max_abs(want.grad.data()) > 0.0 {
                let cos = cosine(got.grad.data(), want.grad.data());
                assert!(cos > 0.9999, "{what}: cosine {cos}");
            }
            for (a, b) in got.loss.iter().zip(&want.loss) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{what}: loss {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn every_denoise_variant_after_each_stage() {
    for (seed, variant) in DenoiseVariant::ALL.into_iter().enumerate() {
        let net = randomized(tiny_config(variant, Placement::AfterStage), seed as u64);
        check_network(net, 3, &format!("{variant} after each stage"));
    }
}

#[test]
fn denoise_after_every_block_on_odd_sizes() {
    for (seed, variant) in [
        DenoiseVariant::NonlocalGaussian,
        DenoiseVariant::Bilateral,
        DenoiseVariant::Median,
    ]
    .into_iter()
    .enumerate()
    {
        let mut cfg = tiny_config(variant, Placement::AfterEveryBlock);
        cfg.image_size = [7, 9];
        cfg.blocks = vec![2, 1];
        check_network(
            randomized(cfg, 20 + seed as u64),
            2,
            &format!("{variant} after every block, 7×9"),
        );
    }
}

#[test]
fn dot_product_with_more_channels_than_cells() {
    let mut cfg = tiny_config(DenoiseVariant::DotProduct, Placement::AfterStage);
    cfg.image_size = [4, 4];
    cfg.widths = vec![4, 12];
    check_network(randomized(cfg, 4), 2, "dot product, C > HW");
}

#[test]
fn bottleneck_blocks_and_imagenet_stem() {
    let mut cfg = tiny_config(DenoiseVariant::NonlocalGaussian, Placement::AfterStage);
    cfg.image_size = [19, 17];
    cfg.in_channels = 3;
    cfg.mean = vec![0.485, 0.456, 0.406];
    cfg.std = vec![0.229, 0.224, 0.225];
    cfg.block = BlockKind::Bottleneck;
    cfg.stem = StemKind::Imagenet;
    cfg.widths = vec![8, 16];
    check_network(randomized(cfg, 8), 2, "bottleneck + imagenet stem");
}

#[test]
fn pooling_relu6_grouped_and_depthwise_convs() {
    check_network(
        common::pooling_graph([3, 11, 10], (5, 2), 5),
        3,
        "pooling graph",
    );
}

#[test]
fn torchvision_resnet_and_efficientnet_lite_layouts() {
    let mut resnet = TorchResnetConfig::resnet(50).unwrap();
    resnet.image_size = [33, 29];
    resnet.num_classes = 6;
    resnet.stem_width = 8;
    resnet.widths = vec![4, 8];
    resnet.blocks = vec![1, 2];
    resnet.groups = 2;
    resnet.width_per_group = 32;
    let mut lite = EfficientNetLiteConfig::lite0();
    lite.image_size = [37, 45];
    lite.num_classes = 5;
    lite.stem_width = 8;
    lite.head_width = 16;
    for (s, stage) in lite.stages.iter_mut().enumerate() {
        stage.out = 4 + 2 * s;
        stage.expand = stage.expand.min(2);
        stage.repeats = stage.repeats.min(2);
    }
    for (seed, (config, label)) in [
        (
            ArchConfig::TorchResnet(resnet),
            "torchvision ResNeXt layout",
        ),
        (
            ArchConfig::EfficientNetLite(lite),
            "EfficientNet-Lite layout",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut net = Network::random(config, seed as u64).unwrap();
        common::randomize_weights(&mut net, 30 + seed as u64);
        check_network(net, 2, label);
    }
}

/// The denoise operations' outputs (`<block>/op`), requested alone, agree with the cpu engine's
/// for every variant, with and without the bypass (where they are the block's input); a forward
/// that asks for no tap returns none.
#[test]
fn op_taps_agree_with_the_cpu_engine() {
    for (seed, variant) in DenoiseVariant::ALL.into_iter().enumerate() {
        let mut cfg = tiny_config(variant, Placement::AfterEveryBlock);
        cfg.image_size = [7, 9];
        let net = Arc::new(randomized(cfg, 50 + seed as u64));
        let mut cpu = CpuEngine::new(net.clone()).unwrap();
        let Some(mut gpu) = gpu(&net) else { return };
        let x = random_images(2, net.input_shape(), 51);
        let ops: Vec<String> = net
            .graph
            .denoise_blocks
            .iter()
            .map(|b| format!("{}/op", b.name))
            .collect();
        assert!(ops.len() >= 2);
        for bypass in [false, true] {
            let opts = ForwardOptions {
                taps: TapSelection::Names(ops.clone()),
                bypass_denoise: bypass,
            };
            let want = cpu.forward(&x, &opts).unwrap();
            let got = gpu.forward(&x, &opts).unwrap();
            assert_eq!(got.taps.len(), ops.len());
            for ((name, g), (want_name, w)) in got.taps.iter().zip(&want.taps) {
                assert_eq!(name, want_name);
                assert!(max_abs(w.data()) > 0.0, "{variant}: {name} is all zero");
                assert_close(g, w, &format!("{variant}: {name} (bypass {bypass})"));
            }
            let plain = ForwardOptions {
                bypass_denoise: bypass,
                ..ForwardOptions::default()
            };
            assert!(gpu.forward(&x, &plain).unwrap().taps.is_empty());
        }
    }
}

#[test]
fn shipped_default_model_agrees() {
    let net = advlens::zoo::default_network().unwrap();
    check_network(net, 2, "builtin:default");
}

#[test]
fn results_do_not_depend_on_the_batch_and_bad_input_is_refused() {
    let net = Arc::new(randomized(
        tiny_config(DenoiseVariant::NonlocalGaussian, Placement::AfterStage),
        3,
    ));
    let Some(mut e) = gpu(&net) else { return };
    let x = random_images(4, net.input_shape(), 2);
    let all = e.forward(&x, &ForwardOptions::default()).unwrap().logits;
    let one = e
        .forward(&x.select(&[2]), &ForwardOptions::default())
        .unwrap()
        .logits;
    assert_close(
        &one,
        &all.select(&[2]),
        "example 2 alone vs in a batch of 4",
    );
    let wrong = random_images(1, [1, 8, 8], 0);
    assert!(matches!(
        e.forward(&wrong, &ForwardOptions::default()),
        Err(EngineError::InputShape { .. })
    ));
    let mut nan = x.clone();
    nan.data_mut()[5] = f32::NAN;
    assert!(matches!(
        e.forward(&nan, &ForwardOptions::default()),
        Err(EngineError::NonFiniteInput)
    ));
    assert!(e.describe().starts_with("gpu: "));
}

/// Runs `cfg` on both engines and compares the adversarial images and histories.
fn compare_attack(cfg: AttackConfig, label: &str) {
    let net = common::trained();
    let (x, y) = common::correctly_classified(6);
    let mut cpu = CpuEngine::new(net.clone()).unwrap();
    let Some(mut gpu) = gpu(&net) else { return };
    let want = attack::run(&mut cpu, &x, Some(&y), &cfg, &Cancel::new()).unwrap();
    let got = attack::run(&mut gpu, &x, Some(&y), &cfg, &Cancel::new()).unwrap();
    let close = got
        .x_adv
        .data()
        .iter()
        .zip(want.x_adv.data())
        .filter(|(a, b)| (*a - *b).abs() <= 1e-4)
        .count();
    let frac = close as f32 / x.len() as f32;
    assert!(frac >= 0.98, "{label}: only {frac} of the pixels agree");
    assert_eq!(got.history.len(), want.history.len(), "{label}: histories");
    for (i, (g, w)) in got.history.iter().zip(&want.history).enumerate() {
        assert_eq!(g.len(), w.len(), "{label}: history length");
        let (g0, w0) = (&g[0], &w[0]);
        assert!((g0.loss - w0.loss).abs() < 1e-3, "{label} {i}: first loss");
        assert!((g0.linf - w0.linf).abs() < 1e-5 && (g0.l2 - w0.l2).abs() < 1e-4);
        let (gl, wl) = (g.last().unwrap(), w.last().unwrap());
        assert!(
            gl.linf <= cfg.eps + 1e-5 || cfg.norm == Norm::L2,
            "{label}: linf"
        );
        assert!(
            gl.l2 <= cfg.eps + 1e-4 || cfg.norm == Norm::Linf,
            "{label}: l2"
        );
        assert!(
            (gl.loss - wl.loss).abs() < 0.05 * wl.loss.abs().max(1.0),
            "{label} {i}: final loss {} vs {}",
            gl.loss,
            wl.loss
        );
    }
    assert!(got.x_adv.data().iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn device_attack_loops_match_the_host_loop() {
    let base = AttackConfig {
        eps: 0.15,
        seed: 9,
        ..AttackConfig::default()
    };
    compare_attack(
        AttackConfig {
            kind: AttackKind::Fgsm,
            ..base.clone()
        },
        "fgsm",
    );
    compare_attack(
        AttackConfig {
            kind: AttackKind::Pgd,
            steps: Some(5),
            ..base.clone()
        },
        "pgd linf",
    );
    compare_attack(
        AttackConfig {
            kind: AttackKind::MiFgsm,
            steps: Some(4),
            ..base.clone()
        },
        "mi-fgsm",
    );
    compare_attack(
        AttackConfig {
            kind: AttackKind::Pgd,
            norm: Norm::L2,
            eps: 1.0,
            steps: Some(5),
            ..base.clone()
        },
        "pgd l2",
    );
}

#[test]
fn a_long_device_attack_can_be_cancelled() {
    let net = common::trained();
    let (x, y) = common::correctly_classified(2);
    let Some(mut e) = gpu(&net) else { return };
    let cfg = AttackConfig {
        kind: AttackKind::Pgd,
        steps: Some(100_000),
        ..AttackConfig::default()
    };
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let t = std::thread::Builder::new()
        .name("cancel-later".into())
        .spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            trigger.cancel();
        })
        .unwrap();
    let start = std::time::Instant::now();
    let r = attack::run(&mut e, &x, Some(&y), &cfg, &cancel);
    t.join().unwrap();
    assert!(
        matches!(r, Err(attack::AttackError::Cancelled)),
        "{:?}",
        r.err()
    );
    assert!(
        start.elapsed().as_secs() < 60,
        "cancellation took {:?}",
        start.elapsed()
    );
}

#[test]
fn auto_falls_back_to_the_cpu_engine() {
    use advlens::engine::open_auto;
    let net = common::trained();
    // No adapter at all: the cpu engine, silently.
    let none = open_auto(net.clone(), Err(EngineError::NoAdapter("none".into()))).unwrap();
    assert!(none.notice.is_none());
    assert!(none.engine.describe().starts_with("cpu"));
    // An adapter that fails: the cpu engine, with a message saying why.
    let broken = EngineError::Backend {
        engine: "gpu",
        message: "device lost".into(),
    };
    let failed = open_auto(net.clone(), Err(broken)).unwrap();
    assert!(failed.notice.unwrap().contains("device lost"));
    assert!(failed.engine.describe().starts_with("cpu"));
    assert!("GPU".parse::<advlens::engine::EngineChoice>().is_ok());
    assert!("tpu".parse::<advlens::engine::EngineChoice>().is_err());
    // A working adapter: the gpu engine.
    let Some(ctx) = common::gpu_context() else {
        return;
    };
    let ok = open_auto(net, Ok(ctx)).unwrap();
    assert!(ok.engine.describe().starts_with("gpu: "));
}

/// What building an engine costs on one context, twice: the first engine compiles every kernel
/// it uses, the second should find them in the context's cache. Prints the times (run with
/// `--ignored --nocapture`); a fresh context so other tests have not warmed it.
#[test]
#[ignore = "timing, prints numbers"]
fn engine_setup_timing() {
    use advlens::engine::gpu::{AdapterPolicy, GpuContext};
    let Ok(ctx) = GpuContext::headless(AdapterPolicy::AllowSoftware) else {
        return;
    };
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let x = random_images(1, net.input_shape(), 1);
    for round in 1..=2 {
        let start = std::time::Instant::now();
        let mut e = GpuEngine::new(net.clone(), ctx.clone()).unwrap();
        let built = start.elapsed();
        e.forward(&x, &ForwardOptions::default()).unwrap();
        let first = start.elapsed();
        let again = std::time::Instant::now();
        e.forward(&x, &ForwardOptions::default()).unwrap();
        println!(
            "engine {round} on {}: new {:.1} ms, new + first forward {:.1} ms, second forward {:.1} ms",
            ctx.adapter_name(),
            built.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            again.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Kernels are compiled once per device: a second engine on the same context, for another
/// network with the same ops, compiles none, so switching models costs no shader compilation.
#[test]
fn a_second_engine_on_a_context_compiles_no_kernel() {
    use advlens::engine::gpu::{AdapterPolicy, GpuContext};
    if common::gpu_context().is_none() {
        return;
    }
    // A context of its own: the shared one gains kernels from tests running beside this one.
    let ctx = GpuContext::headless(AdapterPolicy::AllowSoftware).unwrap();
    assert_eq!(ctx.kernels_compiled(), 0);
    let run = |seed: u64| {
        let net = Arc::new(randomized(
            tiny_config(DenoiseVariant::Bilateral, Placement::AfterStage),
            seed,
        ));
        let mut e = GpuEngine::new(net.clone(), ctx.clone()).unwrap();
        let x = random_images(2, net.input_shape(), seed);
        let loss = Loss::CrossEntropy {
            classes: vec![0, 1],
        };
        e.input_grad(&x, &loss, &ForwardOptions::default()).unwrap();
    };
    run(1);
    let compiled = ctx.kernels_compiled();
    assert!(compiled > 5, "{compiled} kernels after one engine");
    run(2);
    assert_eq!(
        ctx.kernels_compiled(),
        compiled,
        "the second engine compiled"
    );
}

/// APGD's run from the same random start on the cpu engine (vectors on the host) and on the gpu
/// engine (vectors on the device, checked to be offered), on images the trained model gets right.
fn apgd_on_both(
    obj: &attack::ApgdObjective,
    norm: Norm,
    eps: f32,
    steps: usize,
) -> Option<(attack::ApgdRun, attack::ApgdRun)> {
    use rand::SeedableRng as _;
    let net = common::trained();
    let (x, y) = common::correctly_classified(5);
    let mut cpu = CpuEngine::new(net.clone()).unwrap();
    let mut gpu = gpu(&net)?;
    let mut start = x.clone();
    for i in 0..x.batch() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(40 + i as u64);
        let s = attack::apgd_random_start(x.example(i), eps, norm, &mut rng);
        start.example_mut(i).copy_from_slice(&s);
    }
    let settings = attack::ApgdSettings {
        eps,
        norm,
        steps,
        rho: 0.75,
        eot: 1,
    };
    let opts = ForwardOptions::default();
    let spec = advlens::engine::ApgdSpec {
        eps,
        l2: norm == Norm::L2,
    };
    let (loss, sign) = (&obj.loss, obj.sign);
    assert!(
        gpu.apgd_session(&x, &start, loss, sign, spec, &opts)
            .is_some()
    );
    assert!(
        cpu.apgd_session(&x, &start, loss, sign, spec, &opts)
            .is_none()
    );
    let inp = attack::ApgdInputs {
        x: &x,
        labels: &y,
        start: &start,
    };
    let run = |e: &mut dyn Engine| {
        attack::apgd_single_run(e, inp, obj, &settings, &opts, &Cancel::new(), &mut |_| {}).unwrap()
    };
    Some((run(&mut cpu), run(&mut gpu)))
}

/// Whether two consecutive losses of `trace` are within rounding of each other, so that whether
/// the second "increased" (APGD's oscillation count) may differ between two f32 machines.
fn has_near_tie(trace: &[f32]) -> bool {
    trace
        .windows(2)
        .any(|w| (w[1] - w[0]).abs() <= 1e-6 * w[0].abs().max(1.0))
}

/// Compares one APGD run on both engines; returns how many images ended with equal step sizes.
fn check_apgd(
    want: &attack::ApgdRun,
    got: &attack::ApgdRun,
    eps: f32,
    norm: Norm,
    label: &str,
) -> usize {
    assert_eq!(got.fooled, want.fooled, "{label}: fooled");
    let dim = want.x_adv.example_len();
    let mut same_steps = 0;
    for i in 0..want.fooled.len() {
        let (w, g) = (&want.loss_trace[i], &got.loss_trace[i]);
        let tol = |v: f32| v.abs().max(1.0);
        for (s, (a, b)) in w.iter().zip(g).enumerate() {
            // The first steps tightly (summation order only); later ones may have taken a
            // near-zero gradient entry's other sign.
            let bound = if s < 5 { 1e-5 } else { 1e-3 };
            assert!(
                (a - b).abs() <= bound * tol(*a),
                "{label} {i}: step {s}: {a} vs {b}"
            );
        }
        assert!((want.best_loss[i] - got.best_loss[i]).abs() <= 1e-3 * tol(want.best_loss[i]));
        let (ew, eg) = (want.step_size[i], got.step_size[i]);
        for (hw, hg) in want.history[i].iter().zip(&got.history[i]) {
            assert_eq!(
                hw.pred, hg.pred,
                "{label} {i}: prediction at step {}",
                hw.step
            );
            if ew != eg {
                // Another step size since a checkpoint: another path, compared above by loss.
                continue;
            }
            let d = ((hw.linf - hg.linf).abs(), (hw.l2 - hg.l2).abs());
            // A flipped sign moves a pixel by at most 2η ≤ 4ε, and η shrinks at checkpoints.
            let bound = if hw.step < 5 { 1e-4 } else { 0.05 * eps };
            assert!(
                d.0 <= bound && d.1 <= bound,
                "{label} {i}: distances at step {}: {d:?}",
                hw.step
            );
        }
        if ew == eg {
            same_steps += 1;
            let (xw, xg) = (want.x_adv.example(i), got.x_adv.example(i));
            let close = xw
                .iter()
                .zip(xg)
                .filter(|(a, b)| (*a - *b).abs() <= 1e-4)
                .count();
            // 64 pixels an image: a sign flipped late leaves a few pixels apart.
            assert!(
                close as f32 >= 0.9 * dim as f32,
                "{label} {i}: {close} of {dim} pixels"
            );
        } else {
            // Only a checkpoint decided by rounding may halve differently.
            assert!(has_near_tie(w), "{label} {i}: step sizes {ew} vs {eg}");
            assert_eq!((ew / eg).log2().fract(), 0.0, "{label} {i}: {ew} vs {eg}");
        }
        let h = got.history[i].last().unwrap();
        let within = match norm {
            Norm::Linf => h.linf <= eps + 1e-5,
            Norm::L2 => h.l2 <= eps + 1e-4,
        };
        assert!(within, "{label} {i}: left the ball");
    }
    assert!(got.x_adv.data().iter().all(|v| (0.0..=1.0).contains(v)));
    same_steps
}

/// APGD with its vectors on the device takes the cpu engine's path: same fooled images, loss
/// traces within f32 noise (1e-5 relative over the first five steps, 1e-3 after), same step
/// sizes except where a checkpoint compared two losses equal to within rounding, same
/// predictions and distances at every step. CE and DLR, L∞ and L2, and a targeted CE (sign −1).
#[test]
fn device_apgd_matches_the_host_apgd() {
    let (_, y) = common::correctly_classified(5);
    let t: Vec<usize> = y.iter().map(|&c| (c + 1) % 4).collect();
    let obj = |loss: Loss| attack::ApgdObjective {
        loss,
        sign: 1.0,
        reach: None,
    };
    let ce = obj(Loss::CrossEntropy { classes: y.clone() });
    let dlr = obj(Loss::Dlr { classes: y.clone() });
    let toward = attack::ApgdObjective {
        loss: Loss::CrossEntropy { classes: t.clone() },
        sign: -1.0,
        reach: Some(t),
    };
    let cases = [
        (&ce, Norm::Linf, 0.12, "ce linf"),
        (&dlr, Norm::Linf, 0.12, "dlr linf"),
        (&ce, Norm::L2, 0.8, "ce l2"),
        (&dlr, Norm::L2, 0.8, "dlr l2"),
        (&toward, Norm::Linf, 0.12, "targeted ce linf"),
    ];
    let (mut same, mut total) = (0, 0);
    for (obj, norm, eps, label) in cases {
        let Some((want, got)) = apgd_on_both(obj, norm, eps, 20) else {
            return;
        };
        same += check_apgd(&want, &got, eps, norm, label);
        total += want.fooled.len();
        let fooled = want.fooled.iter().filter(|&&f| f).count();
        eprintln!("{label}: {fooled} of {} fooled", want.fooled.len());
    }
    assert!(
        same + 2 >= total,
        "step sizes agree for only {same} of {total} images"
    );
}

/// A defended model on the gpu engine sees exactly what it sees on the cpu engine (the transforms
/// run on the host for both) and the gradients mapped back through the chain agree.
#[test]
fn a_defended_model_agrees_between_the_engines() {
    use advlens::defense::{Defense, GradientMode};
    use advlens::engine::Defended;
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    let Some(ctx) = common::gpu_context() else {
        return;
    };
    let x = random_images(3, net.input_shape(), 21);
    let loss = Loss::CrossEntropy {
        classes: vec![0, 5, 9],
    };
    for (chain, gradient) in [
        ("bits:5,jpeg:75", GradientMode::Bpda),
        ("median:3,resize-pad", GradientMode::Naive),
    ] {
        let defense = Defense {
            chain: chain.parse().unwrap(),
            gradient,
            eot: 3,
            seed: 4,
        };
        let mut on_gpu = Defended::new(
            Box::new(GpuEngine::new(net.clone(), ctx.clone()).unwrap()),
            defense.clone(),
        )
        .unwrap();
        let mut on_cpu =
            Defended::new(Box::new(CpuEngine::new(net.clone()).unwrap()), defense).unwrap();
        let opts = ForwardOptions {
            taps: TapSelection::All,
            ..Default::default()
        };
        let (fg, fc) = (
            on_gpu.forward(&x, &opts).unwrap(),
            on_cpu.forward(&x, &opts).unwrap(),
        );
        assert_eq!(
            fg.seen.unwrap().data(),
            fc.seen.unwrap().data(),
            "{chain}: seen"
        );
        assert_close(&fg.logits, &fc.logits, &format!("{chain}: logits"));
        for ((name, a), (_, b)) in fg.taps.iter().zip(&fc.taps) {
            assert_close(a, b, &format!("{chain}: tap {name}"));
        }
        let gg = on_gpu.input_grad(&x, &loss, &opts).unwrap();
        let gc = on_cpu.input_grad(&x, &loss, &opts).unwrap();
        assert_close(&gg.grad, &gc.grad, &format!("{chain}: gradient"));
        assert!(cosine(gg.grad.data(), gc.grad.data()) > 0.9999, "{chain}");
    }
}

/// The profile times every launch of one forward pass and input gradient, groups them so that
/// each grouping adds up to the whole, names the nodes, and leaves the engine's results as they
/// were.
#[test]
fn profile_times_every_launch_and_changes_nothing() {
    let net = Arc::new(randomized(
        tiny_config(DenoiseVariant::NonlocalGaussian, Placement::AfterStage),
        5,
    ));
    let Some(mut gpu) = gpu(&net) else { return };
    if !gpu.can_profile() {
        assert!(
            std::env::var_os(common::REQUIRE_GPU).is_none(),
            "the adapter offers no timestamp queries"
        );
        eprintln!("skipped: the adapter offers no timestamp queries");
        return;
    }
    let x = random_images(2, net.input_shape(), 3);
    let loss = Loss::CrossEntropy {
        classes: vec![1, 2],
    };
    let opts = ForwardOptions::default();
    let before = gpu.input_grad(&x, &loss, &opts).unwrap();
    let p = gpu.profile(&x, &loss, &opts).unwrap();
    assert_eq!(p.kernels.len(), p.step.forward + p.step.backward);
    assert!(p.step.forward > 0 && p.step.backward > 0 && p.step.clears > 0);
    assert!(p.kernels.iter().all(|k| k.ms.is_finite() && k.ms >= 0.0));
    assert!(p.total_ms() > 0.0, "no launch took any time");
    for rows in [p.by_shader(), p.by_entry(), p.by_node()] {
        let launches: usize = rows.iter().map(|r| r.launches).sum();
        let ms: f64 = rows.iter().map(|r| r.ms).sum();
        assert_eq!(launches, p.kernels.len());
        assert!((ms - p.total_ms()).abs() <= 1e-9 * p.total_ms().max(1.0));
        assert!(
            rows.windows(2).all(|w| w[0].ms >= w[1].ms),
            "sorted by time"
        );
    }
    // Every convolution has its launches under its own name, forward and backward.
    for node in net.graph.nodes.iter().filter(|n| n.op.kind() == "conv2d") {
        let phases: Vec<Phase> = p
            .kernels
            .iter()
            .filter(|k| k.node == node.name)
            .map(|k| k.phase)
            .collect();
        assert!(phases.contains(&Phase::Forward), "{}", node.name);
        assert!(phases.contains(&Phase::Backward), "{}", node.name);
    }
    assert!(p.by_shader().iter().any(|r| r.name == "matmul.wgsl"));
    let after = gpu.input_grad(&x, &loss, &opts).unwrap();
    assert_eq!(after.grad.data(), before.grad.data());
    assert_eq!(after.logits.data(), before.logits.data());
}
