//! Clean and robust accuracy of a model on a labelled set, for a list of attacks and budgets.
//! Robust accuracy is always re-predicted on the adversarial images the attack returns, never
//! taken from the attack's own bookkeeping. Optionally, the mean feature amplification
//! `‖A(x_adv) − A(x)‖ / ‖A(x)‖` per tap.

use serde::{Deserialize, Serialize};

use super::amplification;
use crate::attack::{self, AttackConfig, AttackError, Stage, TargetMode};
use crate::cancel::Cancel;
use crate::data::Labelled;
use crate::engine::{Engine, ForwardOptions, TapSelection, predictions};

/// One attack setting's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// The attack settings (ε, steps, seed, target mode, …).
    pub attack: AttackConfig,
    /// Images attacked.
    pub images: usize,
    /// Images still classified correctly after the attack.
    pub correct: usize,
    /// For targeted attacks: images classified as their target.
    pub target_hits: Option<usize>,
    /// For AutoAttack: each component's counts, summed over the batches.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

impl EvalRow {
    /// Robust accuracy in percent.
    pub fn accuracy(&self) -> f64 {
        percent(self.correct, self.images)
    }
}

/// Mean amplification at one tap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TapAmplification {
    /// Tap name.
    pub tap: String,
    /// Mean of `‖A(x_adv) − A(x)‖₂ / ‖A(x)‖₂` over the images.
    pub mean: f64,
}

/// The outcome of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Images evaluated (fewer than asked when cancelled).
    pub images: usize,
    /// Images classified correctly without attack.
    pub clean_correct: usize,
    /// One row per attack setting.
    pub rows: Vec<EvalRow>,
    /// Per-tap amplification under the first attack setting, if asked for.
    pub amplification: Vec<TapAmplification>,
    /// Whether every requested image was evaluated.
    pub complete: bool,
}

fn percent(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

impl EvalReport {
    /// Clean accuracy in percent.
    pub fn clean_accuracy(&self) -> f64 {
        percent(self.clean_correct, self.images)
    }

    /// A markdown table of the results.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| attack | norm | ε | steps | target | images | accuracy % | target success % |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| clean | – | 0 | – | – | {} | {:.2} | – |",
            self.images,
            self.clean_accuracy()
        );
        for r in &self.rows {
            let a = &r.attack;
            let steps = a.steps.map_or("default".to_string(), |n| n.to_string());
            let target = match &a.target {
                TargetMode::Untargeted => "none".to_string(),
                TargetMode::Class(c) => c.to_string(),
                TargetMode::Random => "random".to_string(),
                TargetMode::LeastLikely => "least likely".to_string(),
            };
            let hits = r.target_hits.map_or("–".to_string(), |h| {
                format!("{:.2}", percent(h, r.images))
            });
            let _ = writeln!(
                s,
                "| {} | {:?} | {:.4} | {steps} | {target} | {} | {:.2} | {hits} |",
                a.kind,
                a.norm,
                a.eps,
                r.images,
                r.accuracy()
            );
            for st in &r.stages {
                let _ = writeln!(
                    s,
                    "| ↳ after {} | | | | | {} attacked, {} fooled | {:.2} | {:.0} s |",
                    st.attack,
                    st.attacked,
                    st.fooled,
                    percent(st.robust_after, r.images),
                    st.seconds
                );
            }
        }
        if !self.amplification.is_empty() {
            let _ = writeln!(s, "\n| tap | mean ‖ΔA‖/‖A‖ |");
            let _ = writeln!(s, "|---|---|");
            for t in &self.amplification {
                let _ = writeln!(s, "| {} | {:.4} |", t.tap, t.mean);
            }
        }
        if !self.complete {
            let _ = writeln!(s, "\n(partial: cancelled after {} images)", self.images);
        }
        s
    }
}

/// Adds one batch's AutoAttack stages to the running totals.
fn add_stages(total: &mut Vec<Stage>, batch: Vec<Stage>) {
    if total.is_empty() {
        *total = batch;
        return;
    }
    for (t, b) in total.iter_mut().zip(batch) {
        t.attacked += b.attacked;
        t.fooled += b.fooled;
        t.robust_after += b.robust_after;
        t.seconds += b.seconds;
    }
}

/// Evaluates `engine` on `data` in batches of `batch`, for every attack in `attacks`.
/// `progress(done, total)` is called after every batch. Cancelling returns the partial report.
pub fn evaluate(
    engine: &mut dyn Engine,
    data: &Labelled,
    attacks: &[AttackConfig],
    batch: usize,
    with_amplification: bool,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, AttackError> {
    let total = data.len();
    let mut report = EvalReport {
        images: 0,
        clean_correct: 0,
        rows: attacks
            .iter()
            .map(|a| EvalRow {
                attack: a.clone(),
                images: 0,
                correct: 0,
                target_hits: (a.target != TargetMode::Untargeted).then_some(0),
                stages: vec![],
            })
            .collect(),
        amplification: vec![],
        complete: false,
    };
    let mut amp_sums: Vec<(String, f64)> = Vec::new();
    let batch = batch.max(1);
    let mut start = 0;
    while start < total {
        if cancel.is_cancelled() {
            break;
        }
        let idx: Vec<usize> = (start..(start + batch).min(total)).collect();
        let part = data.select(&idx);
        let n = idx.len();
        let opts = ForwardOptions::default();
        let clean = engine.forward(&part.images, &opts)?;
        let clean_pred = predictions(&clean.logits);
        let mut rows_done = Vec::with_capacity(attacks.len());
        // This batch's amplification sums, added to the report only once the batch is complete.
        let mut batch_amp: Vec<(String, f64)> = Vec::new();
        for (k, cfg) in attacks.iter().enumerate() {
            let result = match attack::run(engine, &part.images, Some(&part.labels), cfg, cancel) {
                Err(AttackError::Cancelled) => break,
                other => other?,
            };
            let adv_opts = cfg.forward_options();
            let adv = engine.forward(&result.x_adv, &adv_opts)?;
            let pred = predictions(&adv.logits);
            let correct = pred
                .iter()
                .zip(&part.labels)
                .filter(|(p, y)| p == y)
                .count();
            let hits = result
                .targets
                .as_ref()
                .map(|t| pred.iter().zip(t).filter(|(p, t)| p == t).count());
            if with_amplification && k == 0 {
                let all = ForwardOptions {
                    taps: TapSelection::All,
                    ..adv_opts.clone()
                };
                let c = engine.forward(&part.images, &all)?;
                let a = engine.forward(&result.x_adv, &all)?;
                batch_amp = c
                    .taps
                    .iter()
                    .zip(&a.taps)
                    .map(|((name, ct), (_, at))| {
                        let sum = amplification(ct, at).iter().map(|&v| v as f64).sum::<f64>();
                        (name.clone(), sum)
                    })
                    .collect();
            }
            rows_done.push((correct, hits, result.stages));
        }
        if rows_done.len() < attacks.len() {
            break; // cancelled mid-batch: count only complete batches
        }
        if amp_sums.is_empty() {
            amp_sums = batch_amp;
        } else {
            for ((_, sum), (_, add)) in amp_sums.iter_mut().zip(batch_amp) {
                *sum += add;
            }
        }
        report.images += n;
        report.clean_correct += clean_pred
            .iter()
            .zip(&part.labels)
            .filter(|(p, y)| p == y)
            .count();
        for (row, (correct, hits, stages)) in report.rows.iter_mut().zip(rows_done) {
            row.images += n;
            row.correct += correct;
            add_stages(&mut row.stages, stages);
            if let (Some(h), Some(add)) = (row.target_hits.as_mut(), hits) {
                *h += add;
            }
        }
        start += n;
        progress(report.images, total);
    }
    report.complete = report.images == total;
    report.amplification = amp_sums
        .into_iter()
        .map(|(tap, sum)| TapAmplification {
            tap,
            mean: if report.images > 0 {
                sum / report.images as f64
            } else {
                0.0
            },
        })
        .collect();
    Ok(report)
}
