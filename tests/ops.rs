//! The cpu engine's building blocks against direct reference computations: the convolution op
//! (forward, input gradient and kernel gradient) against candle's own convolution, the denoise
//! operations and the `<block>/op` taps against naive loops, and the denoise blocks' structural
//! properties.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use advlens::engine::cpu::conv::{Conv2dOp, pad_nchw};
use advlens::engine::cpu::conv_kernel::{self, ConvGeom};
use advlens::engine::cpu::{CpuEngine, denoise};
use advlens::engine::{Engine, ForwardOptions, TapSelection};
use advlens::model::Padding;
use advlens::model::{ArchConfig, DenoiseVariant, Network, Placement};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every stride/padding/group combination the shipped and ImageNet architectures use: 3×3/1
/// SAME, 3×3/2 SAME (asymmetric), 7×7/2, 1×1/2 shortcuts, 32-group 3×3, depthwise 3×3 and 5×5.
#[test]
fn conv_op_matches_candle_forward_and_both_gradients() {
    let cases: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
        // (n, c_in, size, c_out, kernel, stride, groups)
        (2, 3, 9, 4, 3, 1, 1),
        (2, 4, 8, 6, 3, 2, 1),
        (1, 3, 15, 4, 7, 2, 1),
        (2, 4, 8, 6, 1, 2, 1),
        (1, 64, 6, 64, 3, 1, 32),
        (2, 6, 7, 6, 3, 2, 6),
        (1, 4, 9, 4, 5, 2, 4),
        // A kernel wider than the map: some kernel columns see only padding.
        (2, 4, 2, 4, 5, 1, 4),
        (1, 3, 1, 5, 5, 1, 1),
        (1, 3, 2, 5, 7, 2, 1),
        // Single images, one group, stride 1: the input gradient runs as a transposed forward
        // convolution when there are more threads than images (odd, even and asymmetric SAME).
        (1, 5, 9, 6, 3, 1, 1),
        (1, 3, 8, 4, 4, 1, 1),
        (1, 2, 7, 3, 2, 1, 1),
    ];
    // One thread: a task per (image, group). Four threads: the row-tiled and channel-blocked
    // paths taken when there are fewer images × groups than threads.
    for threads in [1, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| check_conv_cases(cases));
    }
}

fn check_conv_cases(cases: &[(usize, usize, usize, usize, usize, usize, usize)]) {
    for (i, &(n, c, s, o, k, stride, groups)) in cases.iter().enumerate() {
        let x = rand_tensor(&[n, c, s, s], i as u64);
        let w = rand_tensor(&[o, c / groups, k, k], 100 + i as u64);
        let pads = Padding::Same.resolve(s, s, [k, k], stride);
        let op = Conv2dOp {
            stride,
            pads,
            groups,
            kernel_grad: true,
        };
        // Reference: candle's conv on the explicitly padded input, with autograd on both.
        let xv = Var::from_tensor(&x).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let y_ref = pad_nchw(xv.as_tensor(), pads)
            .unwrap()
            .conv2d(wv.as_tensor(), 0, stride, 1, groups)
            .unwrap();
        let seed = rand_tensor(y_ref.dims(), 200 + i as u64);
        let g_ref = (&y_ref * &seed)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // Ours.
        let xo = Var::from_tensor(&x).unwrap();
        let wo = Var::from_tensor(&w).unwrap();
        let y = xo
            .as_tensor()
            .apply_op2(wo.as_tensor(), op.clone())
            .unwrap();
        assert!(max_diff(&y, &y_ref) < 1e-4, "case {i}: forward");
        let g = (&y * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = g.get(xo.as_tensor()).unwrap();
        let dw = g.get(wo.as_tensor()).unwrap();
        assert!(
            max_diff(dx, g_ref.get(xv.as_tensor()).unwrap()) < 1e-4,
            "case {i}: input gradient"
        );
        assert!(
            max_diff(dw, g_ref.get(wv.as_tensor()).unwrap()) < 1e-3,
            "case {i}: kernel gradient"
        );
        // Frozen weights: no kernel gradient is computed at all.
        let frozen = Conv2dOp {
            kernel_grad: false,
            ..op
        };
        let xf = Var::from_tensor(&x).unwrap();
        let wf = Var::from_tensor(&w).unwrap();
        let yf = xf.as_tensor().apply_op2(wf.as_tensor(), frozen).unwrap();
        let gf = (&yf * &seed)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(
            gf.get(wf.as_tensor()).is_none(),
            "case {i}: kernel gradient computed"
        );
        assert!(gf.get(xf.as_tensor()).is_some());
        // The planned executor adds input gradients into a buffer that already holds others.
        let g = ConvGeom::new([n, c, s, s], [o, c / groups, k, k], stride, pads, groups).unwrap();
        let mut dx_acc = vec![1f32; n * c * s * s];
        conv_kernel::input_grad(&g, &to_vec(&seed), &to_vec(&w), &mut dx_acc, true);
        for (a, b) in dx_acc.iter().zip(to_vec(dx)) {
            assert!(
                (a - 1.0 - b).abs() < 1e-4,
                "case {i}: accumulated input gradient"
            );
        }
    }
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Naive non-local Gaussian: y_i = Σ_j softmax_j(θ_i·φ_j/√d) x_j, with θ = Wθ x, φ = Wφ x.
fn naive_nonlocal(x: &[f32], c: usize, p: usize, th: &[f32], ph: &[f32], d: usize) -> Vec<f32> {
    let emb = |w: &[f32], j: usize| -> Vec<f32> {
        (0..d)
            .map(|o| (0..c).map(|ci| w[o * c + ci] * x[ci * p + j]).sum())
            .collect()
    };
    let mut y = vec![0f32; c * p];
    for i in 0..p {
        let ti = emb(th, i);
        let logits: Vec<f32> = (0..p)
            .map(|j| {
                let pj = emb(ph, j);
                ti.iter().zip(&pj).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
            })
            .collect();
        let w = advlens::array::softmax(&logits);
        for ci in 0..c {
            y[ci * p + i] = (0..p).map(|j| w[j] * x[ci * p + j]).sum();
        }
    }
    y
}

/// The `C × C` identity: the "embedding" of the Gaussian without embedding.
fn identity(c: usize) -> Vec<f32> {
    (0..c * c)
        .map(|k| if k / c == k % c { 1.0 } else { 0.0 })
        .collect()
}

/// Naive dot product: y_i = (1/HW) Σ_j (x_i·x_j) x_j.
fn naive_dot_product(x: &[f32], c: usize, p: usize) -> Vec<f32> {
    let mut y = vec![0f32; c * p];
    for i in 0..p {
        for ci in 0..c {
            y[ci * p + i] = (0..p)
                .map(|j| {
                    let dot: f32 = (0..c).map(|k| x[k * p + i] * x[k * p + j]).sum();
                    dot * x[ci * p + j]
                })
                .sum::<f32>()
                / p as f32;
        }
    }
    y
}

/// The cells of the 3×3 window around `(yy, xx)` that lie inside an `h × w` map.
fn window(yy: usize, xx: usize, h: usize, w: usize) -> Vec<usize> {
    let mut js = vec![];
    for dy in -1i32..=1 {
        for dx in -1i32..=1 {
            let (sy, sx) = (yy as i32 + dy, xx as i32 + dx);
            if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                js.push(sy as usize * w + sx as usize);
            }
        }
    }
    js
}

/// Naive 3×3 mean (`median` false) or lower median (`median` true) over the in-map window.
fn naive_local(x: &[f32], [c, h, w]: [usize; 3], median: bool) -> Vec<f32> {
    let p = h * w;
    let mut y = vec![0f32; c * p];
    for ci in 0..c {
        for yy in 0..h {
            for xx in 0..w {
                let mut win: Vec<f32> = window(yy, xx, h, w)
                    .into_iter()
                    .map(|j| x[ci * p + j])
                    .collect();
                y[ci * p + yy * w + xx] = if median {
                    win.sort_by(f32::total_cmp);
                    win[(win.len() - 1) / 2]
                } else {
                    win.iter().sum::<f32>() / win.len() as f32
                };
            }
        }
    }
    y
}

/// Naive bilateral: y_i = Σ_{j ∈ 3×3(i), in map} softmax_j(θ_i·φ_j / √d) x_j, θ = Wθ x, φ = Wφ x.
fn naive_bilateral(x: &[f32], [c, h, w]: [usize; 3], th: &[f32], ph: &[f32], d: usize) -> Vec<f32> {
    let p = h * w;
    let emb = |wm: &[f32], pos: usize| -> Vec<f32> {
        (0..d)
            .map(|o| (0..c).map(|ci| wm[o * c + ci] * x[ci * p + pos]).sum())
            .collect()
    };
    let mut y = vec![0f32; c * p];
    for yy in 0..h {
        for xx in 0..w {
            let i = yy * w + xx;
            let ti = emb(th, i);
            let js = window(yy, xx, h, w);
            let logits: Vec<f32> = js
                .iter()
                .map(|&j| {
                    let pj = emb(ph, j);
                    ti.iter().zip(&pj).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
                })
                .collect();
            let wts = advlens::array::softmax(&logits);
            for ci in 0..c {
                y[ci * p + i] = js.iter().zip(&wts).map(|(&j, wt)| wt * x[ci * p + j]).sum();
            }
        }
    }
    y
}

/// The denoising operation `variant` on one example `x` (`[C, H, W]`) by the naive loops above;
/// `embed` holds the `[d, C]` θ and φ of the embedded variants.
fn naive_op(
    variant: DenoiseVariant,
    x: &[f32],
    chw: [usize; 3],
    embed: Option<(&[f32], &[f32])>,
) -> Vec<f32> {
    let [c, h, w] = chw;
    let p = h * w;
    match (variant, embed) {
        (DenoiseVariant::NonlocalGaussian, Some((th, ph))) => {
            naive_nonlocal(x, c, p, th, ph, th.len() / c)
        }
        (DenoiseVariant::GaussianNoEmbed, _) => {
            naive_nonlocal(x, c, p, &identity(c), &identity(c), c)
        }
        (DenoiseVariant::DotProduct, _) => naive_dot_product(x, c, p),
        (DenoiseVariant::Mean, _) => naive_local(x, chw, false),
        (DenoiseVariant::Median, _) => naive_local(x, chw, true),
        (DenoiseVariant::Bilateral, Some((th, ph))) => {
            naive_bilateral(x, chw, th, ph, th.len() / c)
        }
        (v, None) => panic!("{v} needs its embeddings"),
    }
}

fn assert_all_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol, "{what}: {a} vs {b} at {i}");
    }
}

#[test]
fn denoise_ops_match_naive_definitions() {
    let (c, h, w) = (4usize, 3usize, 5usize);
    let p = h * w;
    let x = rand_tensor(&[1, c, h, w], 1);
    let xs = to_vec(&x);
    let th = rand_tensor(&[c / 2, c], 2);
    let ph = rand_tensor(&[c / 2, c], 3);
    let (tw, pw) = (to_vec(&th), to_vec(&ph));
    let embed = Some((tw.as_slice(), pw.as_slice()));
    for variant in DenoiseVariant::ALL {
        let (t, f) = if variant.embedded() {
            (Some(&th), Some(&ph))
        } else {
            (None, None)
        };
        let y = to_vec(&denoise::apply(variant, &x, t, f).unwrap());
        let want = naive_op(variant, &xs, [c, h, w], embed);
        // The median picks an element: exact.
        let tol = if variant == DenoiseVariant::Median {
            0.0
        } else {
            1e-5
        };
        assert_all_close(&y, &want, tol, variant.id());
    }
    // The Gaussian without embedding is the embedded one with identity embeddings and d = C.
    let y = to_vec(&denoise::apply(DenoiseVariant::GaussianNoEmbed, &x, None, None).unwrap());
    let want = naive_nonlocal(&xs, c, p, &identity(c), &identity(c), c);
    assert_all_close(&y, &want, 1e-5, "gaussian no embed");
    // Bilateral on a constant map returns the constant (weights are a convex combination).
    let ones = Tensor::ones((1, c, h, w), candle_core::DType::F32, &Device::Cpu).unwrap();
    let b =
        to_vec(&denoise::apply(DenoiseVariant::Bilateral, &ones, Some(&th), Some(&ph)).unwrap());
    assert!(b.iter().all(|v| (v - 1.0).abs() < 1e-5));
}

/// The `<block>/op` tap of every denoise block, on both cpu executors, is the block's operation
/// applied to the block's input tap, computed here by the naive loops; with the bypass it is the
/// block's input, as the block's output is.
#[test]
fn op_taps_are_the_operation_applied_to_the_block_input() {
    use advlens::engine::cpu::Executor;
    use advlens::model::{Op, TapKind};
    for (seed, variant) in DenoiseVariant::ALL.into_iter().enumerate() {
        let mut cfg = common::tiny_config(variant, Placement::AfterEveryBlock);
        cfg.image_size = [7, 6];
        let net = Arc::new(common::randomized(cfg, 40 + seed as u64));
        let g = &net.graph;
        assert!(g.denoise_blocks.len() >= 2);
        let x = common::random_images(2, net.input_shape(), 41 + seed as u64);
        for executor in [Executor::Planned, Executor::Autograd] {
            let mut e = CpuEngine::new(net.clone()).unwrap().with_executor(executor);
            for (b, block) in g.denoise_blocks.iter().enumerate() {
                let name =
                    |kind: TapKind| g.taps.iter().find(|t| t.kind == kind).unwrap().name.clone();
                let (before, op) = (name(TapKind::DenoiseBefore(b)), name(TapKind::DenoiseOp(b)));
                assert_eq!(op, format!("{}/op", block.name));
                let Op::DenoiseOp { theta, phi, .. } = &g.nodes[block.op].op else {
                    panic!("{op} is not a denoise operation");
                };
                let weight = |n: &Option<String>| {
                    n.as_ref().map(|n| net.weights[n.as_str()].data().to_vec())
                };
                let (th, ph) = (weight(theta), weight(phi));
                let embed = th.as_deref().zip(ph.as_deref());
                for bypass in [false, true] {
                    let opts = ForwardOptions {
                        taps: TapSelection::Names(vec![op.clone(), before.clone()]),
                        bypass_denoise: bypass,
                    };
                    let f = e.forward(&x, &opts).unwrap();
                    assert_eq!(f.taps[0].0, op);
                    let (got, input) = (&f.taps[0].1, &f.taps[1].1);
                    assert_eq!(got.shape(), input.shape());
                    let &[_, c, h, w] = input.shape() else {
                        panic!("{before} is not a map");
                    };
                    let what = format!("{variant} {executor:?} {op} bypass={bypass}");
                    for i in 0..x.batch() {
                        let want = if bypass {
                            input.example(i).to_vec()
                        } else {
                            naive_op(variant, input.example(i), [c, h, w], embed)
                        };
                        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                        assert_all_close(got.example(i), &want, 1e-5 * scale, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn fresh_denoise_blocks_are_identity_and_bypass_removes_them() {
    use advlens::model::ResnetDenoiseConfig;
    // Fresh network: BN gamma = 0 in every denoise block, so after == before.
    let cfg = common::tiny_config(DenoiseVariant::NonlocalGaussian, Placement::AfterStage);
    let net = Arc::new(Network::random(ArchConfig::ResnetDenoise(cfg.clone()), 3).unwrap());
    let mut e = CpuEngine::new(net.clone()).unwrap();
    let x = common::random_images(2, [2, 8, 8], 4);
    let opts = ForwardOptions {
        taps: TapSelection::All,
        ..Default::default()
    };
    let f = e.forward(&x, &opts).unwrap();
    let tap = |name: &str| f.taps.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(tap("group0_denoise/before"), tap("group0_denoise/after"));

    // Randomised weights: the block changes the features, and bypassing it gives exactly the
    // logits of the same network built without denoise blocks.
    let net = Arc::new(common::randomized(cfg.clone(), 5));
    let mut e = CpuEngine::new(net.clone()).unwrap();
    let f = e.forward(&x, &opts).unwrap();
    let tap = |name: &str| f.taps.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_ne!(tap("group0_denoise/before"), tap("group0_denoise/after"));
    let bypass = ForwardOptions {
        bypass_denoise: true,
        ..Default::default()
    };
    let bypassed = e.forward(&x, &bypass).unwrap().logits;
    let plain_cfg = ResnetDenoiseConfig {
        placement: Placement::None,
        ..cfg
    };
    let graph = plain_cfg.build().unwrap();
    let weights = net
        .weights
        .iter()
        .filter(|(k, _)| graph.params.iter().any(|p| &p.name == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let plain = Network::from_weights(ArchConfig::ResnetDenoise(plain_cfg), weights, None).unwrap();
    let mut pe = CpuEngine::new(Arc::new(plain)).unwrap();
    let plain_logits = pe.forward(&x, &ForwardOptions::default()).unwrap().logits;
    assert_eq!(bypassed, plain_logits);
    let with = e.forward(&x, &ForwardOptions::default()).unwrap().logits;
    assert_ne!(with, plain_logits);
}

#[test]
fn forward_is_batch_independent_and_rejects_bad_input() {
    let net = Arc::new(common::randomized(
        common::tiny_config(DenoiseVariant::Bilateral, Placement::AfterEveryBlock),
        8,
    ));
    let mut e = CpuEngine::new(net).unwrap();
    let x = common::random_images(3, [2, 8, 8], 9);
    let all = e.forward(&x, &ForwardOptions::default()).unwrap().logits;
    let one = e
        .forward(&x.select(&[1]), &ForwardOptions::default())
        .unwrap()
        .logits;
    for (a, b) in all.example(1).iter().zip(one.example(0)) {
        assert!((a - b).abs() < 1e-5);
    }
    let wrong = common::random_images(1, [1, 8, 8], 1);
    let err = e.forward(&wrong, &ForwardOptions::default()).unwrap_err();
    assert!(err.to_string().contains("expects [N, 2, 8, 8]"), "{err}");
    let mut nan = x.clone();
    nan.data_mut()[5] = f32::NAN;
    assert!(e.forward(&nan, &ForwardOptions::default()).is_err());
    let taps = ForwardOptions {
        taps: TapSelection::Names(vec!["nope".into()]),
        ..Default::default()
    };
    assert!(
        e.forward(&x, &taps)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}
