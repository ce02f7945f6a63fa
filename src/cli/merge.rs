//! `advlens merge OUT.json SHARD.json...`: the reports of `eval --shard I/N` runs combined into
//! the report of the whole run.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::analysis::{EvalReport, merge_reports};

/// Arguments of `merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Where to write the merged JSON report.
    pub out: PathBuf,
    /// The shards' JSON reports (`eval --shard I/N --json FILE`), in any order.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// Merges the reports and prints the table.
pub fn run(args: &MergeArgs) -> anyhow::Result<()> {
    let mut reports = Vec::with_capacity(args.reports.len());
    for path in &args.reports {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let report: EvalReport = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a report of one eval run (written by eval --json with one defence row)",
                path.display()
            )
        })?;
        reports.push(report);
    }
    let merged = merge_reports(reports).context("cannot merge the reports")?;
    if let Some(s) = &merged.source {
        println!(
            "model: {}\ndata: {} ({} examples)\n",
            s.model, s.data, s.examples
        );
    }
    print!("{}", merged.markdown());
    if !merged.complete {
        eprintln!("warning: some shards are missing or incomplete: the merged report is partial");
    }
    crate::io::write_atomic(&args.out, &serde_json::to_vec_pretty(&merged)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
