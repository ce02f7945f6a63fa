//! `advlens transfer`: the source × target matrix of accuracies for adversarial images crafted on
//! each of several models and classified by every one of them (black-box transfer; the diagonal
//! is white-box).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::eval::{open_examples, parse_attack, progress_bar};
use crate::analysis::transfer_matrix;
use crate::attack::{AttackConfig, AttackKind, Norm};
use crate::cancel::Cancel;
use crate::data::Prefetch;

/// Arguments of `transfer`.
#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The models, comma separated (files or `builtin:NAME`); each is a source and a target.
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    /// The attack run on each source (`pgd10`, `fgsm`, `apgd-ce`, …).
    #[arg(long, default_value = "pgd10")]
    pub attack: String,
    /// The budget (`0.1`, `8/255`, or for L∞ `8` for 8/255).
    #[arg(long, default_value = "0.1", value_parser = super::budget_arg)]
    pub eps: super::BudgetArg,
    /// The threat model's norm.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Norm::Linf)]
    pub norm: Norm,
    /// Labelled data, as for `eval`.
    #[arg(long, default_value = "data/fashion-mnist")]
    pub data: String,
    /// Class order for an image folder or list, as for `eval`.
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,
    /// The first N images (default: all).
    #[arg(long)]
    pub n: Option<usize>,
    /// Engine for every model.
    #[arg(long, default_value = "auto")]
    pub engine: crate::engine::EngineChoice,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Write the matrix as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the transfer matrix.
pub fn run(args: &TransferArgs) -> anyhow::Result<()> {
    if args.models.len() < 2 {
        anyhow::bail!("transfer needs at least two models (--models A,B)");
    }
    let (kind, steps) = parse_attack(&args.attack)?;
    let norm = if kind == AttackKind::Cw {
        Norm::L2
    } else {
        args.norm
    };
    let cfg = AttackConfig {
        kind,
        norm,
        eps: args.eps.value(norm),
        steps,
        seed: args.seed,
        ..AttackConfig::default()
    };
    cfg.validate()?;
    let mut engines = Vec::with_capacity(args.models.len());
    let mut shape = None;
    let mut first = None;
    for m in &args.models {
        let net =
            Arc::new(crate::zoo::load_model(m).with_context(|| format!("cannot open model {m}"))?);
        let s = net.input_shape();
        match shape {
            Some(first) if first != s => anyhow::bail!(
                "{m} takes {s:?} but {} takes {first:?}: transfer needs one input shape",
                args.models[0]
            ),
            _ => shape = Some(s),
        }
        first.get_or_insert_with(|| net.clone());
        engines.push(super::open_engine(net, args.engine)?);
    }
    let (shape, first) = shape.zip(first).context("no models")?;
    // The first model's preprocessing reads the data; every model takes the same input shape.
    let examples = open_examples(&args.data, args.n, args.classes.as_deref(), &first)?;
    let total = examples.len();
    let mut batches = Prefetch::start(examples, (0..total).collect(), args.batch, 2, shape)
        .context("cannot start the decoding thread")?;
    let cancel = Cancel::new();
    let on_ctrl_c = cancel.clone();
    let _ = ctrlc::set_handler(move || on_ctrl_c.cancel());
    let bar = progress_bar(total);
    let m = transfer_matrix(
        &mut engines,
        args.models.clone(),
        &mut batches,
        &cfg,
        &cancel,
        &mut |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "attack: {} on each source; data: {}\n",
        crate::analysis::EvalRow::heading_of(&cfg),
        args.data
    );
    print!("{}", m.markdown());
    if let Some(path) = &args.json {
        crate::io::write_atomic(path, &serde_json::to_vec_pretty(&m)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
