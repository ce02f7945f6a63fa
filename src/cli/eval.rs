//! `advlens eval`: clean and robust accuracy on a labelled set for a list of attacks and
//! budgets, as a markdown table and JSON, with a progress bar; Ctrl-C stops after the current
//! batch and still prints (and writes) the partial table. Per-image results (`--per-image`),
//! resumable; one shard of many (`--shard I/N`, combined by `advlens merge`); adversarial images
//! kept for transfer (`--save-adv`) and another model evaluated on them (`--adv-from`). With
//! several defences (or gradient modes, or EOT settings), one table with a row per combination.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::defense_args::{check_defense, defend, parse_chain, parse_gradient};
use crate::analysis::{
    AdvStore, BatchLine, DefenseSuite, EvalInput, EvalLog, EvalOptions, EvalReport, EvalRow,
    EvalSink, EvalSource, LogHeader, defense_grid, evaluate_defended_stream,
};
use crate::attack::{AttackConfig, AttackKind, Norm, TargetMode};
use crate::cancel::Cancel;
use crate::data::{self, DataOptions, Examples, Prefetch};
use crate::defense::{Chain, Defense, GradientMode};
use crate::model::Network;

/// Arguments of `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Engine: auto (a hardware GPU when there is one, else the cpu), cpu, or gpu (any adapter,
    /// software renderers such as lavapipe included).
    #[arg(long, default_value = "auto")]
    pub engine: crate::engine::EngineChoice,
    /// A model file (advlens safetensors, Xie et al.'s .npz, a PyTorch .pth) or `builtin:NAME`.
    #[arg(long, default_value = crate::zoo::DEFAULT_MODEL)]
    pub model: String,
    /// Labelled data: a Fashion-MNIST folder made by scripts/fetch-data.sh, `bundled` (the 500
    /// test images in assets/), an image folder (one sub-folder per class), a CSV/TSV list of
    /// `path,label`, an `.npz` with `x` and `y`, or `x.npy` with its labels in `y.npy` beside it.
    /// Images go through the model's preprocessing.
    #[arg(long, default_value = "data/fashion-mnist")]
    pub data: String,
    /// Class order for an image folder or a list with class names: one class per line, the
    /// first word the folder name (ImageNet synsets: `n01440764 tench`). Default: sorted
    /// folder names.
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,
    /// Evaluate the first N test images (default: all).
    #[arg(long)]
    pub n: Option<usize>,
    /// Attacks, comma separated; a number after the name sets the steps (`fgsm,pgd10,pgd50`).
    #[arg(long, default_value = "fgsm,pgd10", value_delimiter = ',')]
    pub attacks: Vec<String>,
    /// Budgets, comma separated (`0.1`, `8/255`, or for L∞ `8` for 8/255; L2 budgets are read as
    /// written, e.g. `1.5`).
    #[arg(long, default_value = "0.1", value_delimiter = ',', value_parser = super::budget_arg)]
    pub eps: Vec<super::BudgetArg>,
    /// The threat model's norm (C&W is always l2).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Norm::Linf)]
    pub norm: Norm,
    /// Targeting for every attack: none, random, least-likely or a class.
    #[arg(long, default_value = "none", value_parser = super::values::parse_target)]
    pub target: TargetMode,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Also report mean feature amplification ‖ΔA‖/‖A‖ per tap under the first attack, and for
    /// each denoise block at its input, its operation's output (`<block>/op`) and its output.
    #[arg(long)]
    pub amplification: bool,
    /// Write the JSON report here: one report, or with several defence rows
    /// `{"reports": [...]}`, one report per row.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Restarts of PGD and APGD (AutoAttack's standard version uses 1).
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// APGD, Square and AutoAttack settings.
    #[command(flatten)]
    pub tuning: super::tuning::TuningArgs,
    /// Input-transformation defence in front of the model (`jpeg[:Q]`, `bits[:B]`,
    /// `median[:K]`, `resize-pad[:S]`, chained with commas, or `none`); repeat for one table over
    /// several (`--defense none --defense jpeg:75`).
    #[arg(long = "defense", value_name = "CHAIN", value_parser = parse_chain)]
    pub defenses: Vec<Chain>,
    /// How gradients pass the defences, comma separated for a row each (`naive,bpda`); a chain
    /// whose modes agree (resize and pad alone, or none) gets one row, with the first.
    #[arg(long = "gradient", value_name = "MODES", default_value = "bpda",
          value_delimiter = ',', value_parser = parse_gradient)]
    pub gradients: Vec<GradientMode>,
    /// Expectation over transformation, draws per gradient step (see `attack --help`), comma
    /// separated for a row each on random defences (`1,10`); other rows take the first.
    #[arg(
        long = "eot",
        value_name = "K",
        default_value = "1",
        value_delimiter = ','
    )]
    pub eots: Vec<usize>,
    /// Random defences: clean and robust accuracy are the mean (± standard deviation) over this
    /// many independent draws of the randomness, every image re-predicted under each.
    #[arg(long, value_name = "D", default_value_t = crate::analysis::DEFAULT_DEFENSE_DRAWS,
          value_parser = parse_draws)]
    pub defense_draws: usize,
    /// Evaluate only shard I of N (0-based, `2/8`): a contiguous 1/N of the images. Each image's
    /// randomness comes from the seed and the image, so the N shards together are the unsharded
    /// run, image for image; combine their `--json` reports with `advlens merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::analysis::Shard>,
    /// Write one JSON line per image and attack here (index, path, label, clean and adversarial
    /// prediction, fooled, L∞, L2, final loss, steps), with `NAME.batches.jsonl` beside it; run
    /// the same command again with the same file to resume an interrupted run. With several
    /// defence rows, each row has its own file, `NAME.ROW.jsonl` (`run.jpeg-75-bpda.jsonl`).
    #[arg(long, value_name = "FILE.jsonl")]
    pub per_image: Option<PathBuf>,
    /// Keep the adversarial images in this folder (lossless: float32 `.npz` per batch, with
    /// labels and indices) for `--adv-from` or another tool.
    #[arg(long, value_name = "DIR")]
    pub save_adv: Option<PathBuf>,
    /// Transfer: evaluate this model on adversarial images saved by `--save-adv` (crafted on
    /// another model) instead of attacking it; `--data` and `--attacks` are not used.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["save_adv", "per_image", "shard"])]
    pub adv_from: Option<PathBuf>,
}

/// Reads `--defense-draws`: 2 to 1000 (a spread needs two).
fn parse_draws(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|d| (2..=1000).contains(d))
        .ok_or_else(|| format!("{s:?}: use 2 to 1000 draws"))
}

/// Parses `pgd50` into (pgd, Some(50)).
pub fn parse_attack(s: &str) -> anyhow::Result<(AttackKind, Option<usize>)> {
    let split = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
    let (name, steps) = s.split_at(split);
    let kind: AttackKind = name.parse()?;
    let steps = if steps.is_empty() {
        None
    } else {
        Some(
            steps
                .parse()
                .with_context(|| format!("bad step count in {s:?}"))?,
        )
    };
    Ok((kind, steps))
}

/// Opens `--data` for `net` (its input shape, resize and classes), the first `n` examples.
pub(super) fn open_examples(
    spec: &str,
    n: Option<usize>,
    classes: Option<&Path>,
    net: &Network,
) -> anyhow::Result<Arc<dyn Examples>> {
    let opts = DataOptions {
        classes_file: classes.map(Path::to_path_buf),
        n,
        ..DataOptions::for_model(net)
    };
    data::open_data(spec, &opts).with_context(|| format!("cannot read --data {spec}"))
}

/// The attack settings of every attack × budget asked for, checked.
fn attack_configs(args: &EvalArgs) -> anyhow::Result<Vec<AttackConfig>> {
    let mut attacks = Vec::new();
    for a in &args.attacks {
        let (kind, steps) = parse_attack(a)?;
        let norm = if kind == AttackKind::Cw {
            Norm::L2
        } else {
            args.norm
        };
        for eps in &args.eps {
            let mut cfg = AttackConfig {
                kind,
                norm,
                eps: eps.value(norm),
                steps,
                target: args.target.clone(),
                seed: args.seed,
                restarts: args.restarts,
                ..AttackConfig::default()
            };
            args.tuning.apply(&mut cfg);
            cfg.validate()?;
            attacks.push(cfg);
        }
    }
    Ok(attacks)
}

/// The (defence, gradient mode, EOT) rows asked for, each checked against the model.
fn defenses(args: &EvalArgs, input: [usize; 3]) -> anyhow::Result<Vec<Defense>> {
    let chains = if args.defenses.is_empty() {
        vec![Chain::default()]
    } else {
        args.defenses.clone()
    };
    let grid = defense_grid(&chains, &args.gradients, &args.eots, args.seed);
    for d in &grid {
        check_defense(d, input, &args.model)?;
    }
    Ok(grid)
}

/// Runs the evaluation.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let net = Arc::new(
        crate::zoo::load_model(&args.model)
            .with_context(|| format!("cannot open model {}", args.model))?,
    );
    let attacks = attack_configs(args)?;
    let grid = defenses(args, net.input_shape())?;
    if grid.len() > 1 && (args.shard.is_some() || args.save_adv.is_some()) {
        anyhow::bail!(
            "--shard and --save-adv take one defence row; this command asks for {} (defences × \
             gradient modes × EOT settings): run one eval per row",
            grid.len()
        );
    }
    let rows = grid.len();
    let examples = open_examples(&args.data, args.n, args.classes.as_deref(), &net)?;
    let engine = super::open_engine(net.clone(), args.engine)?;
    let engine_name = engine.describe();
    let mut engine = defend(engine, Defense::default(), &args.model)?;
    let cancel = Cancel::new();
    let on_ctrl_c = cancel.clone();
    // Without a handler (e.g. one is already installed), Ctrl-C simply ends the process.
    let _ = ctrlc::set_handler(move || on_ctrl_c.cancel());
    let source = EvalSource {
        model: args.model.clone(),
        data: args.data.clone(),
        examples: examples.len(),
        shard: args.shard,
    };
    let mut reports = Vec::with_capacity(grid.len());
    for defense in grid {
        if cancel.is_cancelled() {
            break;
        }
        let per_image = args.per_image.as_deref().map(|p| match rows {
            1 => p.to_path_buf(),
            _ => row_file(p, &defense),
        });
        engine.set_defense(defense)?;
        let run = RowRun {
            per_image,
            attacks: &attacks,
            source: &source,
            cancel: &cancel,
        };
        let mut report = run_one(args, &mut engine, &examples, &run)?;
        report.source = Some(source.clone());
        reports.push(report);
    }
    println!("model: {} ({})", args.model, net.config.summary());
    println!("engine: {engine_name}");
    println!("data: {}", examples.describe());
    if let Some(s) = args.shard {
        println!("shard: {s} (images {:?})", s.range(examples.len()));
    }
    println!();
    print_and_write(args, reports)
}

/// Prints the table (or the defences' table) and its warnings, and writes the JSON.
fn print_and_write(args: &EvalArgs, reports: Vec<EvalReport>) -> anyhow::Result<()> {
    let suite = DefenseSuite { reports };
    let single = match suite.reports.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    match single {
        Some(report) => print!("{}", report.markdown()),
        None => print!("{}", suite.markdown()),
    }
    for report in &suite.reports {
        for row in &report.rows {
            for w in row.warnings() {
                eprintln!("{w}");
            }
        }
    }
    if let Some(path) = &args.json {
        let json = match single {
            Some(report) => serde_json::to_vec_pretty(report)?,
            None => serde_json::to_vec_pretty(&suite)?,
        };
        crate::io::write_atomic(path, &json)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// A progress bar over `total` images with images/s and the time left.
pub(super) fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The per-image file of one defence row of several: `run.jsonl` becomes
/// `run.jpeg-75-bpda.jsonl`, the row's description with every run of other characters a dash.
fn row_file(path: &Path, defense: &Defense) -> PathBuf {
    let described = defense.describe().to_ascii_lowercase();
    let slug = described
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    let name = match (stem, ext) {
        (Some(stem), Some(ext)) => format!("{stem}.{slug}.{ext}"),
        (Some(stem), None) => format!("{stem}.{slug}"),
        _ => format!("{slug}.jsonl"),
    };
    path.with_file_name(name)
}

/// What one defence row runs: its per-image file, the attacks, where the images come from, and
/// the flag Ctrl-C sets.
struct RowRun<'a> {
    per_image: Option<PathBuf>,
    attacks: &'a [AttackConfig],
    source: &'a EvalSource,
    cancel: &'a Cancel,
}

/// One defence row: this shard's images, less those a resumed per-image file already has,
/// decoded ahead of the engine, with the per-image file and the saved images as sinks.
fn run_one(
    args: &EvalArgs,
    engine: &mut crate::engine::Defended,
    examples: &Arc<dyn Examples>,
    run: &RowRun<'_>,
) -> anyhow::Result<EvalReport> {
    let RowRun {
        attacks,
        source,
        cancel,
        ..
    } = *run;
    let range = args
        .shard
        .map_or(0..examples.len(), |s| s.range(examples.len()));
    let mut resumed = vec![];
    let mut log = match &run.per_image {
        Some(path) => {
            let defense = Some(engine.defense().clone()).filter(|d| !d.is_none());
            let header = LogHeader::new(
                source.clone(),
                attacks.to_vec(),
                defense,
                args.defense_draws,
            );
            let (log, lines) = EvalLog::open(path, &header)?;
            if !lines.is_empty() {
                let done: usize = lines.iter().map(|l| l.done().count()).sum();
                eprintln!("resuming {}: {done} images done", path.display());
            }
            resumed = lines;
            Some(log)
        }
        None => None,
    };
    let headings: Vec<String> = attacks.iter().map(EvalRow::heading_of).collect();
    let mut store = match &args.save_adv {
        Some(dir) => Some(AdvStore::create(dir, source, &headings)?),
        None => None,
    };
    let done: BTreeSet<usize> = resumed.iter().flat_map(BatchLine::done).collect();
    let order: Vec<usize> = range.clone().filter(|i| !done.contains(i)).collect();
    let shape = crate::engine::Engine::network(engine).input_shape();
    let mut batches = Prefetch::start(examples.clone(), order, args.batch, 2, shape)
        .context("cannot start the decoding thread")?;
    let mut sinks: Vec<&mut dyn EvalSink> = Vec::new();
    if let Some(l) = log.as_mut() {
        sinks.push(l);
    }
    if let Some(s) = store.as_mut() {
        sinks.push(s);
    }
    let opts = EvalOptions {
        batch: args.batch,
        amplification: args.amplification,
        defense_draws: args.defense_draws,
    };
    let bar = progress_bar(range.len());
    let input = EvalInput {
        batches: &mut batches,
        total: range.len(),
        resumed,
        sinks: &mut sinks,
    };
    let report =
        evaluate_defended_stream(engine, input, attacks, &opts, cancel, &mut |done, _| {
            bar.set_position(done as u64);
        })?;
    bar.finish_and_clear();
    Ok(report)
}
