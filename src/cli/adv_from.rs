//! `advlens eval --adv-from DIR`: transfer (black-box) evaluation, a model's accuracy on
//! adversarial images crafted on another model and kept by `eval --save-adv`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use super::defense_args::defend;
use super::eval::{EvalArgs, progress_bar};
use crate::analysis::{
    AdvManifest, EvalOptions, EvalReport, ci_text, evaluate_defended, load_adversarial,
};
use crate::cancel::Cancel;
use crate::defense::{Chain, Defense};

/// The JSON written by `--adv-from`.
#[derive(Serialize)]
struct TransferReport<'a> {
    /// The model evaluated.
    model: &'a str,
    /// Where the images come from.
    crafted: &'a AdvManifest,
    /// One report (no attacks: its clean accuracy is the accuracy on the adversarial images)
    /// per attack setting in the folder.
    results: Vec<(String, EvalReport)>,
}

/// Evaluates `args.model` on every attack setting's images in `dir`.
pub fn run(args: &EvalArgs, dir: &Path) -> anyhow::Result<()> {
    let net = Arc::new(
        crate::zoo::load_model(&args.model)
            .with_context(|| format!("cannot open model {}", args.model))?,
    );
    let (manifest, sets) = load_adversarial(dir)
        .with_context(|| format!("cannot read adversarial images from {}", dir.display()))?;
    let shape = net.input_shape();
    let chain = match args.defenses.as_slice() {
        [] => Chain::default(),
        [one] => one.clone(),
        _ => anyhow::bail!("--adv-from takes one --defense"),
    };
    let defense = Defense {
        chain,
        gradient: args.gradients.first().copied().unwrap_or_default(),
        eot: 1,
        seed: args.seed,
    };
    let engine = super::open_engine(net.clone(), args.engine)?;
    let mut engine = defend(engine, defense, &args.model)?;
    let cancel = Cancel::new();
    let opts = EvalOptions {
        batch: args.batch,
        amplification: false,
        defense_draws: args.defense_draws,
    };
    let mut results = Vec::new();
    for set in sets {
        if set.set.images.shape()[1..] != shape[..] {
            anyhow::bail!(
                "the images in {} are {:?}, {} takes {shape:?}",
                dir.display(),
                &set.set.images.shape()[1..],
                args.model
            );
        }
        let bar = progress_bar(set.set.len());
        let report = evaluate_defended(&mut engine, &set.set, &[], &opts, &cancel, &mut |d, _| {
            bar.set_position(d as u64);
        })?;
        bar.finish_and_clear();
        results.push((set.heading, report));
    }
    println!("model: {} ({})", args.model, net.config.summary());
    println!(
        "adversarial images crafted on {} ({}), from {}\n",
        manifest.source.model,
        manifest.source.data,
        dir.display()
    );
    println!("| images from | images | accuracy % | 95 % CI |");
    println!("|---|---|---|---|");
    for (heading, r) in &results {
        let ci = ci_text(r.clean_ci95);
        println!(
            "| {heading} on {} | {} | {} | {ci} |",
            manifest.source.model,
            r.images,
            r.clean_accuracy_text()
        );
    }
    if let Some(path) = &args.json {
        let report = TransferReport {
            model: &args.model,
            crafted: &manifest,
            results,
        };
        crate::io::write_atomic(path, &serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
