//! The command line: `advlens` alone opens the app; subcommands run headless.

pub mod attack;
pub mod bench;
pub mod bench_app;
pub mod eval;
pub mod inspect;
pub mod maps;
pub mod new_model;
pub mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Clean and robust accuracy on Fashion-MNIST for a list of attacks and budgets.
    Eval(eval::EvalArgs),
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

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => crate::app::run(),
        Some(Command::Attack(a)) => attack::run(&a),
        Some(Command::Eval(a)) => eval::run(&a),
        Some(Command::Inspect(a)) => inspect::run(&a),
        Some(Command::Maps(a)) => maps::run(&a),
        Some(Command::NewModel(a)) => new_model::run(&a),
        Some(Command::Bench(a)) => bench::run(&a),
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
    let opened = crate::engine::open_engine(net, choice)
        .with_context(|| format!("cannot open the {choice} engine"))?;
    if let Some(n) = opened.notice {
        eprintln!("note: {n}");
    }
    Ok(opened.engine)
}

/// Parses a pixel-unit number: `0.03`, `8/255` or `8/255.0`.
pub fn parse_fraction(s: &str) -> Result<f32, String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<f32>()
            .map_err(|_| format!("{s:?} is not a number or a fraction like 8/255"))
    };
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let d = parse(b)?;
            if d == 0.0 {
                return Err(format!("{s:?} divides by zero"));
            }
            parse(a)? / d
        }
        None => parse(s)?,
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s:?} is not finite"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions() {
        assert!((parse_fraction("8/255").unwrap() - 8.0 / 255.0).abs() < 1e-9);
        assert_eq!(parse_fraction("0.1").unwrap(), 0.1);
        assert!(parse_fraction("1/0").is_err());
        assert!(parse_fraction("abc").is_err());
        assert!(parse_fraction("inf").is_err());
    }
}
