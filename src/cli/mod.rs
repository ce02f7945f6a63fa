//! The command line: `advlens` alone opens the app; subcommands run headless.

mod adv_from;
mod attack;
mod bench;
mod bench_data;
mod bench_defense;
mod bench_gpu_profile;
mod bench_robust;
mod defense_args;
mod eval;
mod inspect;
mod maps;
mod merge;
mod new_model;
mod timing;
mod train;
mod transfer;
mod tuning;
mod values;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::attack::parse_budget;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    name = "advlens",
    version,
    about = "See adversarial attacks flow through image classifiers and feature-denoising blocks"
)]
pub struct Cli {
    /// What to do; none opens the app.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attack images and write the adversarial images, perturbations and a JSON record.
    Attack(attack::AttackArgs),
    /// Clean and robust accuracy on a labelled set for a list of attacks and budgets.
    Eval(eval::EvalArgs),
    /// Transfer matrix: adversarial images crafted on each model, classified by every model.
    Transfer(transfer::TransferArgs),
    /// Combine the JSON reports of `eval --shard I/N` runs into the report of the whole.
    Merge(merge::MergeArgs),
    /// Write the feature maps of a tap, clean vs adversarial, before and after denoising.
    Maps(maps::MapsArgs),
    /// Print a model's architecture, taps and parameter count.
    Inspect(inspect::InspectArgs),
    /// Write a freshly initialised resnet-denoise model to a safetensors file.
    NewModel(new_model::NewModelArgs),
    /// Time forward, forward+input-gradient and a PGD-10 attack.
    Bench(bench::BenchArgs),
    /// Train a resnet-denoise model on Fashion-MNIST (clean, FGSM mix, PGD or ALP).
    Train(Box<train::TrainArgs>),
}

/// The app's entry points, which `main` hands in: the command line sits beside the app (both are
/// front ends over the library) and never imports it.
#[derive(Clone, Copy)]
pub struct AppEntry {
    /// Opens the window and blocks until it closes.
    pub run: fn() -> anyhow::Result<()>,
    /// `bench --app`: the app's responsiveness without a window (`reps`, with the gpu engine).
    pub bench: fn(usize, bool) -> anyhow::Result<()>,
}

/// Entry point used by `main`.
pub fn main(app: AppEntry) -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => (app.run)(),
        Some(Command::Attack(a)) => attack::run(&a),
        Some(Command::Eval(a)) => match &a.adv_from {
            Some(dir) => adv_from::run(&a, dir),
            None => eval::run(&a),
        },
        Some(Command::Merge(a)) => merge::run(&a),
        Some(Command::Transfer(a)) => transfer::run(&a),
        Some(Command::Inspect(a)) => inspect::run(&a),
        Some(Command::Maps(a)) => maps::run(&a),
        Some(Command::NewModel(a)) => new_model::run(&a),
        Some(Command::Bench(a)) => bench::run(&a, app.bench),
        Some(Command::Train(a)) => train::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens `net` on the engine the user chose, saying on stderr when `auto` could not use a GPU
/// it found.
pub fn open_engine(
    net: std::sync::Arc<crate::model::Network>,
    choice: crate::engine::EngineChoice,
) -> anyhow::Result<Box<dyn crate::engine::Engine>> {
    use anyhow::Context as _;
    let opened = crate::engine::open_engine(net, choice, None)
        .with_context(|| format!("cannot open the {choice} engine"))?;
    if let Some(n) = opened.notice {
        eprintln!("note: {n}");
    }
    Ok(opened.engine)
}

/// Parses `--eps`/`--alpha` as [`parse_budget`] does (`0.03`, `8/255`, or `8` for 8/255).
pub fn budget(s: &str) -> Result<f32, String> {
    parse_budget(s).map(|b| b.value)
}

/// A budget as typed on the command line, read once the norm is known: L∞ budgets as
/// [`parse_budget`] reads them (`8` = 8/255), L2 budgets literally (an L2 norm of 1.5 in pixel
/// units is an ordinary budget, not 1.5/255).
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetArg(String);

impl BudgetArg {
    /// The value in pixel units for `norm`.
    pub fn value(&self, norm: crate::attack::Norm) -> f32 {
        match norm {
            // Both parsers accepted the text when it was read.
            crate::attack::Norm::L2 => crate::attack::parse_fraction(&self.0).unwrap_or(f32::NAN),
            crate::attack::Norm::Linf => budget(&self.0).unwrap_or(f32::NAN),
        }
    }
}

/// Reads a [`BudgetArg`], checking that it is a non-negative number or fraction.
pub fn budget_arg(s: &str) -> Result<BudgetArg, String> {
    budget(s)?;
    Ok(BudgetArg(s.trim().to_string()))
}
