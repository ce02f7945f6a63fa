//! `advlens bench`: latency of forward, forward + input gradient and a PGD-10 attack on a
//! network, for the cpu engines `--executor` picks (by default stock candle, the old path, and
//! the planned executor, the new path) in the same run, with `--gpu` the gpu engine too, and with
//! `--conv`, per-op convolution throughput for candle's conv against advlens's (`--robust`,
//! `--defense`, `--data` and `--app` time other things, in their own files).
//! Numbers are medians; compare ratios from one run, not absolute times across runs.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use clap::Args;

use super::timing::{bench_batch, median_ms};
use crate::attack::{AttackConfig, AttackKind};
use crate::cancel::Cancel;
use crate::engine::cpu::conv::Conv2dOp;
use crate::engine::cpu::conv_kernel::{self, ConvGeom};
use crate::engine::cpu::{CpuEngine, Executor, Kernels};
use crate::engine::gpu::{AdapterPolicy, GpuContext, GpuEngine};
use crate::engine::{Engine, ForwardOptions, Loss};
use crate::model::Padding;

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Batch sizes, comma separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Model to time (default: the untrained 28×28 network with non-local blocks after every
    /// stage, the first at 28×28; `builtin:default` is the shipped model).
    #[arg(long, default_value = crate::zoo::UNTRAINED_MODEL)]
    pub model: String,
    /// Cpu executors to time.
    #[arg(long, value_enum, default_value_t = ExecutorChoice::Both)]
    pub executor: ExecutorChoice,
    /// Also time single convolutions (GFLOP/s), candle's against advlens's.
    #[arg(long)]
    pub conv: bool,
    /// Skip the PGD-10 column.
    #[arg(long)]
    pub no_attack: bool,
    /// Also time training steps (images/s): candle's conv against advlens's on clean steps, and
    /// each training mode (clean, FGSM mix, PGD-7, ALP) with advlens's.
    #[arg(long)]
    pub train: bool,
    /// Also time `advlens eval` (images/s): clean accuracy, with PGD-10, and with amplification.
    #[arg(long)]
    pub eval: bool,
    /// Time the reliable-evaluation attacks instead (images/s): APGD-CE-100, Square-5000 and
    /// AutoAttack on the first N bundled test images with the shipped default model.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "100")]
    pub robust: Option<usize>,
    /// Time the input-transformation defences instead: each transform's cost per image (and
    /// its gradient map back) on the default model's input, and PGD-10 with EOT 1 and 10 behind
    /// random resize and pad on the default model (cpu engine).
    #[arg(long)]
    pub defense: bool,
    /// Also time the gpu engine (best adapter, software ones included), in the same table.
    #[arg(long)]
    pub gpu: bool,
    /// With `--gpu`: profile the gpu engine instead: launches per attack step, wall time
    /// against the kernels' device time (timestamp queries) and the time per shader, entry
    /// point and node, at each `--batch`.
    #[arg(long, requires = "gpu")]
    pub profile: bool,
    /// Time the app instead (headless): ε change → updated views latency and frame time while
    /// dragging, FGSM and PGD-10 on the default model.
    #[arg(long)]
    pub app: bool,
    /// Only time loading this model file and report the process's peak memory (run it as its
    /// own process, so the peak belongs to the load).
    #[arg(long)]
    pub load: Option<std::path::PathBuf>,
    /// Time an evaluation on this data set instead (any `eval --data`, e.g. an image folder):
    /// decoding alone, the engine alone (forward + input gradient, and PGD-10 unless
    /// `--no-attack`), and both together with batches decoded ahead of the engine; batches of
    /// the largest `--batch`.
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// With `--data`: only the first N images; with `--make-jpegs`: how many to write (1000).
    #[arg(long)]
    pub n: Option<usize>,
    /// Write a folder of JPEGs made from the shipped photos (crops at ImageNet-like sizes, one
    /// sub-folder per photo) for `--data`, and stop.
    #[arg(long, value_name = "DIR")]
    pub make_jpegs: Option<std::path::PathBuf>,
}

/// Which cpu engines `bench` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorChoice {
    /// advlens's planned executor.
    Planned,
    /// Candle's autograd with advlens's convolution.
    Autograd,
    /// Candle's autograd with candle's convolution: stock candle.
    Stock,
    /// Stock and planned.
    Both,
    /// Stock, autograd and planned.
    All,
}

impl ExecutorChoice {
    /// The engines to time: a row label, the executor and its kernels.
    fn engines(self) -> &'static [(&'static str, Executor, Kernels)] {
        const PLANNED: (&str, Executor, Kernels) =
            ("cpu Planned", Executor::Planned, Kernels::Advlens);
        const AUTOGRAD: (&str, Executor, Kernels) =
            ("cpu Autograd", Executor::Autograd, Kernels::Advlens);
        // Stock candle is the autograd executor with the kernels candle runs on CUDA and Metal.
        const STOCK: (&str, Executor, Kernels) = ("cpu Stock", Executor::Autograd, Kernels::Candle);
        match self {
            Self::Planned => &[PLANNED],
            Self::Autograd => &[AUTOGRAD],
            Self::Stock => &[STOCK],
            Self::Both => &[STOCK, PLANNED],
            Self::All => &[STOCK, AUTOGRAD, PLANNED],
        }
    }
}

/// The process's peak resident memory in MiB (Linux), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn load_table(path: &std::path::Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)?.len() as f64 / (1 << 20) as f64;
    let before = peak_rss_mib();
    let t = Instant::now();
    let net = crate::model::weights::load(path)?;
    let secs = t.elapsed().as_secs_f64();
    let after = peak_rss_mib();
    let show = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0}"));
    println!("| file | MiB | load s | peak RSS before MiB | peak RSS after MiB | peak / file |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {size:.0} | {secs:.2} | {} | {} | {} |",
        path.display(),
        show(before),
        show(after),
        after.map_or("n/a".into(), |a| format!("{:.2}", a / size.max(1e-9)))
    );
    println!("\nloaded: {}", net.config.summary());
    Ok(())
}

/// Runs the benchmark and prints markdown tables; `bench_app` is the app's own benchmark
/// (`--app`), handed in by `main`.
pub fn run(
    args: &BenchArgs,
    bench_app: fn(usize, bool) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(path) = &args.load {
        return load_table(path);
    }
    if let Some(dir) = &args.make_jpegs {
        return super::bench_data::make_jpegs(dir, args.n.unwrap_or(1000));
    }
    if let Some(data) = &args.data {
        return super::bench_data::data_table(&super::bench_data::DataBench {
            data: data.clone(),
            model: args.model.clone(),
            batch: args.batch.iter().copied().max().unwrap_or(64),
            n: args.n,
            reps: args.reps,
            gpu: args.gpu,
            attack: !args.no_attack,
        });
    }
    if args.app {
        return bench_app(args.reps, args.gpu);
    }
    if let Some(n) = args.robust {
        return super::bench_robust::robust_table(n, args.gpu);
    }
    if args.defense {
        return super::bench_defense::defense_table(args.reps);
    }
    let net = Arc::new(crate::zoo::load_model(&args.model)?);
    if args.profile {
        return super::bench_gpu_profile::profile_tables(&net, &args.batch, args.reps);
    }
    println!("model: {}", net.config.summary());
    println!("threads: {}\n", rayon::current_num_threads());
    println!(
        "| engine | batch | forward ms | forward+input-grad ms | PGD-10 ms | PGD-10 per image ms |"
    );
    println!("|---|---|---|---|---|---|");
    for &b in &args.batch {
        let (x, _) = bench_batch(&net, b)?;
        let mut engines: Vec<(String, Box<dyn Engine>)> = Vec::new();
        for &(name, executor, kernels) in args.executor.engines() {
            let e = CpuEngine::new(net.clone())?
                .with_executor(executor)
                .with_kernels(kernels);
            engines.push((name.to_owned(), Box::new(e)));
        }
        if args.gpu {
            let ctx = GpuContext::headless(AdapterPolicy::AllowSoftware)?;
            let name = format!("gpu {}", ctx.adapter_name());
            engines.push((name, Box::new(GpuEngine::new(net.clone(), ctx)?)));
        }
        for (name, engine) in &mut engines {
            let engine = engine.as_mut();
            let opts = ForwardOptions::default();
            let fwd = median_ms(args.reps, || {
                engine.forward(&x, &opts)?;
                Ok(())
            })?;
            let loss = Loss::CrossEntropy {
                classes: vec![0; b],
            };
            let grad = median_ms(args.reps, || {
                engine.input_grad(&x, &loss, &opts)?;
                Ok(())
            })?;
            let pgd = if args.no_attack {
                f64::NAN
            } else {
                let cfg = AttackConfig {
                    kind: AttackKind::Pgd,
                    steps: Some(10),
                    ..AttackConfig::default()
                };
                median_ms(args.reps.div_ceil(3), || {
                    crate::attack::run(engine, &x, None, &cfg, &Cancel::new())?;
                    Ok(())
                })?
            };
            println!(
                "| {name} | {b} | {fwd:.2} | {grad:.2} | {pgd:.1} | {:.2} |",
                pgd / b as f64
            );
        }
    }
    if args.conv {
        conv_table(args.reps)?;
    }
    if args.train {
        train_table(&net, &args.batch, args.reps)?;
        train_modes_table(&net, &args.batch, args.reps)?;
    }
    if args.eval {
        eval_table(&net, args.reps)?;
    }
    Ok(())
}

/// Training throughput of each mode (clean, FGSM mix, PGD-7, ALP at ε = 0.1) with advlens's conv:
/// the adversarial examples made on a snapshot of the weights, then one SGD step, as `advlens
/// train` does per batch.
fn train_modes_table(
    net: &crate::model::Network,
    batches: &[usize],
    reps: usize,
) -> anyhow::Result<()> {
    use crate::train::{AdvSettings, Objective, TrainMode};
    use crate::train::{SgdConfig, Trainer};
    println!("\n| training mode | batch | step ms | images/s |");
    println!("|---|---|---|---|");
    let adv = AdvSettings {
        eps: 0.1,
        step_size: crate::attack::madry_step_size(0.1, 7),
        steps: 7,
    };
    let modes = [
        TrainMode::Clean,
        TrainMode::FgsmMix { alpha: 0.5 },
        TrainMode::Pgd,
        TrainMode::Alp { lambda: 0.5 },
    ];
    for &b in batches {
        let (x, labels) = bench_batch(net, b)?;
        for mode in modes {
            let mut t = Trainer::new(net.clone(), SgdConfig::default())?;
            let ms = median_ms(reps.div_ceil(2), || {
                let snapshot = Arc::new(t.network()?);
                let o =
                    Objective::build(mode, adv, Some(&snapshot), &x, &labels, 0, &Cancel::new())?;
                t.step_with(&o.x, &o.labels, |z| o.evaluate(z))?;
                Ok(())
            })?;
            let name = mode.id();
            println!("| {name} | {b} | {ms:.1} | {:.0} |", b as f64 * 1e3 / ms);
        }
    }
    Ok(())
}

/// `advlens eval` throughput on 200 images (batches of 100, the cpu engine).
fn eval_table(net: &Arc<crate::model::Network>, reps: usize) -> anyhow::Result<()> {
    use crate::analysis::evaluate;
    use crate::data::Labelled;
    println!("\n| eval | images | ms | images/s |");
    println!("|---|---|---|---|");
    let n = 200;
    let (images, labels) = bench_batch(net, n)?;
    let data = Labelled { images, labels };
    let pgd = AttackConfig {
        kind: AttackKind::Pgd,
        eps: 0.1,
        steps: Some(10),
        ..AttackConfig::default()
    };
    let cases: [(&str, Vec<AttackConfig>, bool); 3] = [
        ("clean", vec![], false),
        ("clean + PGD-10", vec![pgd.clone()], false),
        ("clean + PGD-10 + amplification", vec![pgd], true),
    ];
    let mut engine = CpuEngine::new(net.clone())?;
    for (name, attacks, amplification) in cases {
        let ms = median_ms(reps.div_ceil(3), || {
            evaluate(
                &mut engine,
                &data,
                &attacks,
                100,
                amplification,
                &Cancel::new(),
                &mut |_, _| {},
            )?;
            Ok(())
        })?;
        println!("| {name} | {n} | {ms:.0} | {:.0} |", n as f64 * 1e3 / ms);
    }
    Ok(())
}

/// Training throughput (SGD steps on clean cross-entropy) with candle's conv and with advlens's.
fn train_table(net: &crate::model::Network, batches: &[usize], reps: usize) -> anyhow::Result<()> {
    use crate::train::{SgdConfig, Trainer};
    println!("\n| training conv | batch | step ms | images/s |");
    println!("|---|---|---|---|");
    for &b in batches {
        let (x, labels) = bench_batch(net, b)?;
        for (name, kernels) in [("candle", Kernels::Candle), ("advlens", Kernels::Advlens)] {
            let mut t = Trainer::new(net.clone(), SgdConfig::default())?.with_kernels(kernels);
            let ms = median_ms(reps.div_ceil(2), || {
                t.step(&x, &labels)?;
                Ok(())
            })?;
            println!("| {name} | {b} | {ms:.1} | {:.0} |", b as f64 * 1e3 / ms);
        }
    }
    Ok(())
}

/// Per-op convolution throughput: candle's conv (forward; forward+backward through autograd,
/// which also forms the kernel gradient) against advlens's kernels (forward; input gradient).
fn conv_table(reps: usize) -> anyhow::Result<()> {
    println!(
        "\n| conv | batch | candle fwd ms (GFLOP/s) | advlens fwd ms (GFLOP/s) | candle fwd+backward ms | advlens fwd+input-grad ms (GFLOP/s) |"
    );
    println!("|---|---|---|---|---|---|");
    // (name, c_in, size, c_out, kernel, stride)
    let cases = [
        ("3x3 64->64 56² s1", 64, 56, 64, 3, 1),
        ("1x1 256->64 56²", 256, 56, 64, 1, 1),
        ("3x3 128->128 28² s2", 128, 28, 128, 3, 2),
    ];
    for (name, ci, s, co, k, stride) in cases {
        for b in [1usize, 16] {
            let pads = Padding::Same.resolve(s, s, [k, k], stride);
            let g = ConvGeom::new([b, ci, s, s], [co, ci, k, k], stride, pads, 1)
                .map_err(anyhow::Error::msg)?;
            let flops = 2.0 * (b * co * g.ohw() * ci * k * k) as f64;
            let xs: Vec<f32> = (0..b * ci * s * s)
                .map(|i| (i % 17) as f32 / 17.0)
                .collect();
            let ws: Vec<f32> = (0..co * ci * k * k)
                .map(|i| (i % 13) as f32 / 130.0)
                .collect();
            let x = Tensor::from_slice(&xs, (b, ci, s, s), &Device::Cpu)?;
            let w = Tensor::from_slice(&ws, (co, ci, k, k), &Device::Cpu)?;
            let op = Conv2dOp {
                stride,
                pads,
                groups: 1,
                kernel_grad: false,
            };
            let candle_fwd = median_ms(reps, || {
                op.forward_plain(&x, &w)?;
                Ok(())
            })?;
            let candle_fb = median_ms(reps.div_ceil(2), || {
                let xv = Var::from_tensor(&x)?;
                op.forward_plain(xv.as_tensor(), &w)?
                    .sum_all()?
                    .backward()?;
                Ok(())
            })?;
            let mut y = vec![0f32; b * co * g.ohw()];
            let ours_fwd = median_ms(reps, || {
                conv_kernel::forward(&g, &xs, &ws, &mut y);
                Ok(())
            })?;
            let mut dx = vec![0f32; xs.len()];
            let ours_fb = median_ms(reps, || {
                conv_kernel::forward(&g, &xs, &ws, &mut y);
                conv_kernel::input_grad(&g, &y, &ws, &mut dx, false);
                Ok(())
            })?;
            let gf = |ms: f64, mult: f64| mult * flops / (ms * 1e6);
            println!(
                "| {name} | {b} | {candle_fwd:.2} ({:.0}) | {ours_fwd:.2} ({:.0}) | {candle_fb:.2} | {ours_fb:.2} ({:.0}) |",
                gf(candle_fwd, 1.0),
                gf(ours_fwd, 1.0),
                gf(ours_fb, 2.0)
            );
        }
    }
    Ok(())
}
