//! Clean and robust accuracy of a model on a labelled set, for a list of attacks and budgets.
//! Robust accuracy is always re-predicted on the adversarial images the attack returns, never
//! taken from the attack's own bookkeeping. Optionally, the mean feature amplification
//! `‖A(x_adv) − A(x)‖ / ‖A(x)‖` per tap, and per denoise block at its input, operation output and
//! output.

use serde::{Deserialize, Serialize};

use super::amplification;
use super::block_noise::{BlockNoise, block_noise, block_noise_markdown};
use crate::array::Array;
use crate::attack::{
    self, AttackConfig, AttackError, AttackKind, DiagnoseOptions, Diagnostic, Flag, Stage,
    TargetMode, diagnose, merge_batches, square_beats_white_box,
};
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
    /// Flags raised on any batch, counts summed over the batches (the detail is the first
    /// batch's that raised it).
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    /// For AutoAttack: each component's counts and seconds summed over the batches.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

impl EvalRow {
    /// Robust accuracy in percent.
    pub fn accuracy(&self) -> f64 {
        percent(self.correct, self.images)
    }

    /// The attack's name in tables: AutoAttack's says which components it lacks.
    pub fn name(&self) -> String {
        match self.attack.kind {
            AttackKind::AutoAttack => attack::AUTOATTACK_STANDARD_NAME.to_string(),
            k => k.id().to_string(),
        }
    }

    /// One warning line per flag raised: `warning: <attack> ε=<ε>: <flag id>: <n>/<of> images:
    /// <detail> — <explanation>`.
    pub fn warnings(&self) -> Vec<String> {
        self.diagnostics
            .iter()
            .map(|d| {
                format!(
                    "warning: {} ε={:.4}: {}: {}/{} images: {} — {}",
                    self.name(),
                    self.attack.eps,
                    d.flag.id(),
                    d.images,
                    d.of,
                    d.detail,
                    d.flag.explanation()
                )
            })
            .collect()
    }

    /// Adds one batch's outcome.
    fn absorb(&mut self, n: usize, b: BatchRow) {
        self.images += n;
        self.correct += b.correct;
        if let (Some(h), Some(add)) = (self.target_hits.as_mut(), b.hits) {
            *h += add;
        }
        merge_batches(&mut self.diagnostics, b.diagnostics);
        if self.stages.is_empty() {
            self.stages = b.stages;
        } else {
            for (s, add) in self.stages.iter_mut().zip(b.stages) {
                s.attacked += add.attacked;
                s.fooled += add.fooled;
                s.robust_after += add.robust_after;
                s.seconds += add.seconds;
            }
        }
    }

    /// Drops the checks that passed on every batch and judges Square against the white-box
    /// attacks on the whole set rather than per batch.
    fn finish(&mut self) {
        self.diagnostics
            .retain(|d| d.images > 0 && d.flag != Flag::SquareBeatsWhiteBox);
        if let Some(d) = square_beats_white_box(&self.stages, self.images) {
            self.diagnostics.push(d);
        }
    }
}

/// One attack's outcome on one batch.
struct BatchRow {
    correct: usize,
    hits: Option<usize>,
    diagnostics: Vec<Diagnostic>,
    stages: Vec<Stage>,
}

/// Images re-attacked without a budget by the unbounded check, on the first batch only (the check
/// costs a second attack).
pub const EVAL_UNBOUNDED_IMAGES: usize = 16;

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
    /// The same at each denoise block's input, operation output and output (empty without
    /// amplification or denoise blocks).
    #[serde(default)]
    pub block_noise: Vec<BlockNoise>,
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
                r.name(),
                a.norm,
                a.eps,
                r.images,
                r.accuracy()
            );
            for st in &r.stages {
                let _ = writeln!(
                    s,
                    "| ↳ after {} (fooled {} of {}, {:.1} s) | | | | | {} | {:.2} | – |",
                    st.attack,
                    st.fooled,
                    st.attacked,
                    st.seconds,
                    r.images,
                    percent(st.robust_after, r.images)
                );
            }
        }
        let warnings: Vec<String> = self.rows.iter().flat_map(EvalRow::warnings).collect();
        if !warnings.is_empty() {
            let _ = writeln!(s, "\nwarnings:");
            for w in &warnings {
                let _ = writeln!(s, "- {}", w.trim_start_matches("warning: "));
            }
        }
        if !self.amplification.is_empty() {
            let _ = writeln!(s, "\n| tap | mean ‖ΔA‖/‖A‖ |");
            let _ = writeln!(s, "|---|---|");
            for t in &self.amplification {
                let _ = writeln!(s, "| {} | {:.4} |", t.tap, t.mean);
            }
        }
        if !self.block_noise.is_empty() {
            let _ = write!(s, "\n{}", block_noise_markdown(&self.block_noise));
        }
        if !self.complete {
            let _ = writeln!(s, "\n(partial: cancelled after {} images)", self.images);
        }
        s
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
                diagnostics: vec![],
                stages: vec![],
            })
            .collect(),
        amplification: vec![],
        block_noise: vec![],
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
            let unbounded = (start == 0).then_some(EVAL_UNBOUNDED_IMAGES);
            let (row, x_adv) = match attack_batch(engine, &part, cfg, unbounded, cancel) {
                Err(AttackError::Cancelled) => break,
                other => other?,
            };
            if with_amplification && k == 0 {
                let all = ForwardOptions {
                    taps: TapSelection::All,
                    ..cfg.forward_options()
                };
                let c = engine.forward(&part.images, &all)?;
                let a = engine.forward(&x_adv, &all)?;
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
            rows_done.push(row);
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
        for (row, done) in report.rows.iter_mut().zip(rows_done) {
            row.absorb(n, done);
        }
        start += n;
        progress(report.images, total);
    }
    report.complete = report.images == total;
    for row in &mut report.rows {
        row.finish();
    }
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
    report.block_noise = block_noise(&engine.network().graph, |tap| {
        report
            .amplification
            .iter()
            .find(|a| a.tap == tap)
            .map(|a| a.mean)
    });
    Ok(report)
}

/// Runs one attack on one batch, re-predicts its images and runs the diagnostics on it (the
/// unbounded re-attack on up to `unbounded` images, when given). Returns the batch's row and the
/// adversarial images.
fn attack_batch(
    engine: &mut dyn Engine,
    part: &Labelled,
    cfg: &AttackConfig,
    unbounded: Option<usize>,
    cancel: &Cancel,
) -> Result<(BatchRow, Array), AttackError> {
    let result = attack::run(engine, &part.images, Some(&part.labels), cfg, cancel)?;
    let adv = engine.forward(&result.x_adv, &cfg.forward_options())?;
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
    let opts = DiagnoseOptions {
        unbounded,
        keep_passed: true,
        cancel: cancel.clone(),
    };
    let mut diagnostics = diagnose(engine, &part.images, &result, cfg, &opts)?;
    for d in &mut diagnostics {
        if d.flag == Flag::UnboundedFailure {
            d.detail.push_str(" (checked on the first batch only)");
        }
    }
    let row = BatchRow {
        correct,
        hits,
        diagnostics,
        stages: result.stages,
    };
    Ok((row, result.x_adv))
}
