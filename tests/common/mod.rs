//! Helpers shared by the integration tests: small networks with every weight randomised, random
//! images, and a small model trained on a synthetic four-class problem.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use advlens::array::Array;
use advlens::model::{ArchConfig, DenoiseVariant, Network, Placement, ResnetDenoiseConfig, normal};
use advlens::train::{SgdConfig, Trainer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tiny resnet-denoise: 2×8×8 input, widths 4/6, 5 classes.
pub fn tiny_config(variant: DenoiseVariant, placement: Placement) -> ResnetDenoiseConfig {
    ResnetDenoiseConfig {
        in_channels: 2,
        image_size: [8, 8],
        num_classes: 5,
        stem_width: 4,
        widths: vec![4, 6],
        blocks: vec![1, 1],
        denoise: variant,
        placement,
        denoise_stages: None,
        mean: vec![0.4, 0.6],
        std: vec![0.5, 0.25],
        block: Default::default(),
        stem: Default::default(),
        cardinality: 1,
        bottleneck_factor: 1,
        channel_order: vec![],
        eval_resize: None,
    }
}

/// A network with every parameter random (batch-norm gammas included, so that fresh denoise
/// blocks are not the identity and every path carries gradient).
pub fn randomized(cfg: ResnetDenoiseConfig, seed: u64) -> Network {
    let mut net = Network::random(ArchConfig::ResnetDenoise(cfg), seed).unwrap();
    randomize_weights(&mut net, seed);
    net
}

/// Overwrites every weight with random values of a sensible scale.
pub fn randomize_weights(net: &mut Network, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(99));
    for (name, a) in net.weights.iter_mut() {
        let fan_in: usize = a.shape().iter().skip(1).product::<usize>().max(1);
        // tensorpack names and PyTorch's (a 1-D `.weight` is a batch-norm gamma).
        let scale_like = name.ends_with("variance/EMA")
            || name.ends_with("gamma")
            || name.ends_with("running_var")
            || (name.ends_with(".weight") && a.shape().len() == 1);
        let shift_like = name.ends_with("beta")
            || name.ends_with("mean/EMA")
            || name.ends_with("/b")
            || name.ends_with("running_mean")
            || name.ends_with(".bias");
        for v in a.data_mut() {
            *v = if scale_like {
                rng.random_range(0.5..1.5)
            } else if shift_like {
                0.1 * normal(&mut rng)
            } else {
                normal(&mut rng) * (1.5 / fan_in as f32).sqrt()
            };
        }
    }
}

/// A graph with the node types the resnet family does not use: BGR-style reordering, ReLU6,
/// max and average pooling with SAME padding and stride 2, a grouped conv and a depthwise conv
/// (`depthwise` = kernel, stride), on a `[3, H, W]` input with 4 classes, every weight random.
pub fn pooling_graph(input: [usize; 3], depthwise: (usize, usize), seed: u64) -> Network {
    use advlens::model::{ConvSpec, GraphBuilder};
    let mut b = GraphBuilder::new(input, 4);
    let x = b
        .normalize(
            b.input(),
            vec![2, 1, 0],
            vec![0.5, 0.4, 0.3],
            vec![0.5, 0.6, 0.7],
        )
        .unwrap();
    let x = b.conv("conv0", x, ConvSpec::new(6, 3, 2)).unwrap();
    let x = b.bn("conv0/bn", x, false).unwrap();
    let x = b.relu6("conv0/relu6", x);
    let x = b.pool("pool_max", x, 3, 2, true).unwrap();
    let x = b
        .conv("grouped", x, ConvSpec::new(6, 3, 1).groups(3))
        .unwrap();
    let (k, stride) = depthwise;
    let x = b
        .conv("depthwise", x, ConvSpec::new(6, k, stride).groups(6))
        .unwrap();
    let x = b.pool("pool_avg", x, 3, 1, false).unwrap();
    let x = b.global_avg_pool("gap", x).unwrap();
    let x = b.linear("linear", x, 4).unwrap();
    let graph = b.finish(x).unwrap();
    let weights = advlens::model::initialise(&graph, seed);
    let mut net = Network {
        config: advlens::zoo::default_config(),
        class_names: (0..4).map(|k| k.to_string()).collect(),
        graph,
        weights,
        metadata: Default::default(),
    };
    randomize_weights(&mut net, seed);
    net
}

/// Uniform random images in [0, 1].
pub fn random_images(n: usize, chw: [usize; 3], seed: u64) -> Array {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = n * chw.iter().product::<usize>();
    let data = (0..len).map(|_| rng.random::<f32>()).collect();
    Array::new(vec![n, chw[0], chw[1], chw[2]], data).unwrap()
}

/// The synthetic problem: 1×8×8 images of four kinds (horizontal stripes, vertical stripes, a
/// bright centre, a bright border) with noise. Returns images and labels.
pub fn synthetic(n: usize, seed: u64) -> (Array, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 4;
        labels.push(k);
        for y in 0..8 {
            for x in 0..8 {
                let on = match k {
                    0 => y % 2 == 0,
                    1 => x % 2 == 0,
                    2 => (2..6).contains(&x) && (2..6).contains(&y),
                    _ => x == 0 || y == 0 || x == 7 || y == 7,
                };
                let base = if on { 0.75 } else { 0.25 };
                data.push((base + 0.1 * normal(&mut rng)).clamp(0.0, 1.0));
            }
        }
    }
    (Array::new(vec![n, 1, 8, 8], data).unwrap(), labels)
}

fn train_model() -> Network {
    let cfg = ResnetDenoiseConfig {
        in_channels: 1,
        image_size: [8, 8],
        num_classes: 4,
        stem_width: 8,
        widths: vec![8, 16],
        blocks: vec![1, 1],
        denoise: DenoiseVariant::NonlocalGaussian,
        placement: Placement::AfterStage,
        denoise_stages: None,
        mean: vec![0.5],
        std: vec![0.5],
        block: Default::default(),
        stem: Default::default(),
        cardinality: 1,
        bottleneck_factor: 1,
        channel_order: vec![],
        eval_resize: None,
    };
    let net = Network::random(ArchConfig::ResnetDenoise(cfg), 7).unwrap();
    let mut trainer = Trainer::new(net, SgdConfig::default()).unwrap();
    for step in 0..120 {
        let (x, y) = synthetic(32, 1000 + step);
        trainer.step(&x, &y).unwrap();
    }
    trainer.into_network().unwrap()
}

/// A small model trained on [`synthetic`] (trained once per test binary).
pub fn trained() -> Arc<Network> {
    static NET: OnceLock<Arc<Network>> = OnceLock::new();
    NET.get_or_init(|| Arc::new(train_model())).clone()
}

/// Test images of the synthetic problem that the trained model classifies correctly.
pub fn correctly_classified(n: usize) -> (Array, Vec<usize>) {
    use advlens::engine::{Engine, ForwardOptions, cpu::CpuEngine, predictions};
    let (x, y) = synthetic(4 * n, 5);
    let mut e = CpuEngine::new(trained()).unwrap();
    let p = predictions(&e.forward(&x, &ForwardOptions::default()).unwrap().logits);
    let keep: Vec<usize> = (0..x.batch()).filter(|&i| p[i] == y[i]).take(n).collect();
    assert_eq!(keep.len(), n, "the trained model is not accurate enough");
    (x.select(&keep), keep.iter().map(|&i| y[i]).collect())
}

/// Prints a skip note where the person running `cargo test` sees it: libtest captures
/// `eprintln!` of passing tests, but not writes to the stderr handle itself.
pub fn skip_note(note: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{note}");
}

/// Set (to anything) where the optional test inputs must be present: `.ci/run` sets it once
/// scripts/fetch-models.sh has succeeded, so a test that would otherwise skip fails instead.
pub const REQUIRE_FETCHED: &str = "ADVLENS_REQUIRE_FETCHED";

/// A file fetched by a script rather than shipped: the path in the environment variable `var`,
/// else `default` under the crate root. `None` (with a note) when it is missing, unless
/// [`REQUIRE_FETCHED`] is set, in which case a missing file fails the test.
pub fn fetched_file(var: &str, default: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os(var)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(default));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os(REQUIRE_FETCHED).is_none(),
        "{} not found although {REQUIRE_FETCHED} is set (run scripts/fetch-models.sh or set {var})",
        path.display()
    );
    skip_note(&format!(
        "skipped: {} not found (run scripts/fetch-models.sh or set {var})",
        path.display()
    ));
    None
}

/// The released EfficientNet-Lite0 checkpoint, if scripts/fetch-models.sh has fetched it.
pub fn efficientnet_lite0() -> Option<std::path::PathBuf> {
    fetched_file("ADVLENS_EFFLITE0_PTH", "data/models/efficientnet-lite0.pth")
}

/// Set (to anything) where a wgpu adapter must exist: `.ci/run` sets it after installing
/// mesa-vulkan-drivers, so a test that would otherwise skip for want of an adapter fails instead.
pub const REQUIRE_GPU: &str = "ADVLENS_REQUIRE_GPU";

/// The wgpu device the gpu tests share (software adapters such as lavapipe allowed), or `None`
/// with a one-line note when the machine has no adapter, unless [`REQUIRE_GPU`] is set, in which
/// case the test fails.
pub fn gpu_context() -> Option<advlens::engine::gpu::GpuContext> {
    use advlens::engine::gpu::{AdapterPolicy, GpuContext};
    static CTX: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    let found = CTX.get_or_init(|| {
        GpuContext::headless(AdapterPolicy::AllowSoftware).map_err(|e| e.to_string())
    });
    match found {
        Ok(ctx) => Some(ctx.clone()),
        Err(e) => {
            assert!(
                std::env::var_os(REQUIRE_GPU).is_none(),
                "no wgpu adapter although {REQUIRE_GPU} is set: {e}"
            );
            skip_note(
                "skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe, or run on a GPU)",
            );
            None
        }
    }
}

/// Steps the app until its slow run reports progress in `stage`, and returns the slowest frame
/// (the UI must stay responsive while the worker runs). Fails after two minutes.
pub fn step_until_progress(
    harness: &mut egui_kittest::Harness<'_, advlens::app::AdvlensApp>,
    stage: &str,
) -> std::time::Duration {
    use std::time::{Duration, Instant};
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !harness
        .state()
        .slow_run()
        .is_some_and(|r| r.stage == Some(stage) && r.done > 0.0)
    {
        assert!(Instant::now() < deadline, "no progress arrived");
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        harness.step();
        slowest = slowest.max(t.elapsed());
    }
    slowest
}
