//! Clean and robust accuracy of a model on a labelled set, for a list of attacks and budgets.
//! Robust accuracy is always re-predicted on the adversarial images the attack returns, never
//! taken from the attack's own bookkeeping; behind a defence, through the real (randomised)
//! defence, and for a random one as the mean over independent draws of its randomness, with
//! their spread. Optionally, the mean feature amplification `‖A(x_adv) − A(x)‖ / ‖A(x)‖` per tap,
//! and per denoise block at its input, operation output and output.

use serde::{Deserialize, Serialize};

use super::DrawStats;
use super::batch_line::{BatchLine, BatchRow};
use super::block_noise::{BlockNoise, block_noise_markdown};
use crate::attack::{
    self, AttackConfig, AttackKind, Diagnostic, Flag, Stage, TargetMode, merge_batches,
    square_beats_white_box,
};
use crate::data::Unreadable;
use crate::defense::Defense;

/// One attack setting's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// The attack settings (ε, steps, seed, target mode, …).
    pub attack: AttackConfig,
    /// Images attacked.
    pub images: usize,
    /// Images still classified correctly after the attack (behind a random defence, under the
    /// first of the draws; `draws` holds them all).
    pub correct: usize,
    /// For targeted attacks: images classified as their target (under the first draw).
    pub target_hits: Option<usize>,
    /// The defence as this row's attack used it, its EOT split by [`route_eot`]; `None`
    /// without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defense: Option<Defense>,
    /// Behind a random defence: the robust accuracy under each independent draw, re-predicted
    /// on the same adversarial images, with mean and spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draws: Option<DrawStats>,
    /// Flags raised on any batch, counts summed over the batches (the detail is the first
    /// batch's that raised it).
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    /// For AutoAttack: each component's counts and seconds summed over the batches.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Robust accuracy in percent, as [`EvalRow::accuracy`] computes it (written for readers
    /// of the JSON).
    #[serde(default)]
    pub accuracy: f64,
    /// Its 95 % Wilson score interval in percent (`None` behind a random defence, whose spread
    /// over draws is in `draws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<(f64, f64)>,
}

/// Accuracy in percent: the mean over a random defence's draws, else `correct` of `images`.
fn accuracy(draws: Option<&DrawStats>, correct: usize, images: usize) -> f64 {
    draws.map_or_else(|| percent(correct, images), |d| d.mean)
}

/// [`accuracy`] as written in tables: `71.20`, or `71.20 ± 0.80` over the draws.
fn accuracy_text(draws: Option<&DrawStats>, correct: usize, images: usize) -> String {
    draws.map_or_else(
        || format!("{:.2}", percent(correct, images)),
        DrawStats::text,
    )
}

/// The 95 % Wilson score interval of `correct` successes in `n` trials, in percent (`(0, 100)`
/// for no trials).
pub fn wilson95(correct: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 100.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, correct as f64 / n as f64);
    let centre = p + z * z / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    let scale = 1.0 + z * z / n;
    (
        (100.0 * (centre - half) / scale).max(0.0),
        (100.0 * (centre + half) / scale).min(100.0),
    )
}

/// Adds AutoAttack's per-component counts and seconds of another batch or shard.
fn add_stages(into: &mut Vec<Stage>, more: Vec<Stage>) {
    if into.is_empty() {
        *into = more;
        return;
    }
    for (s, add) in into.iter_mut().zip(more) {
        s.attacked += add.attacked;
        s.fooled += add.fooled;
        s.robust_after += add.robust_after;
        s.seconds += add.seconds;
    }
}

/// An interval as written in tables: `[70.31, 72.07]`, or `–` when there is none.
pub fn ci_text(ci: Option<(f64, f64)>) -> String {
    ci.map_or("–".into(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}]"))
}

impl EvalRow {
    /// No images yet for `attack` behind `defense`, with `draws` draws of a random defence.
    pub(crate) fn empty(
        attack: AttackConfig,
        defense: Option<Defense>,
        draws: Option<usize>,
    ) -> Self {
        Self {
            target_hits: (attack.target != TargetMode::Untargeted).then_some(0),
            attack,
            images: 0,
            correct: 0,
            defense,
            draws: draws.map(DrawStats::new),
            diagnostics: vec![],
            stages: vec![],
            accuracy: 0.0,
            ci95: None,
        }
    }

    /// The attack setting as a column heading and in per-image records: `pgd-50 ε=0.1`.
    pub fn heading(&self) -> String {
        Self::heading_of(&self.attack)
    }

    /// [`EvalRow::heading`] of an attack setting.
    pub fn heading_of(a: &AttackConfig) -> String {
        let name = match a.kind {
            AttackKind::AutoAttack => attack::AUTOATTACK_STANDARD_NAME.to_string(),
            k => k.id().to_string(),
        };
        let steps = a.steps.map_or(String::new(), |n| format!("-{n}"));
        format!("{name}{steps} ε={}", a.eps)
    }

    /// Robust accuracy in percent (behind a random defence, the mean over the draws).
    pub fn accuracy(&self) -> f64 {
        accuracy(self.draws.as_ref(), self.correct, self.images)
    }

    /// Robust accuracy as written in tables: `71.20`, or `71.20 ± 0.80` over a random
    /// defence's draws.
    pub fn accuracy_text(&self) -> String {
        accuracy_text(self.draws.as_ref(), self.correct, self.images)
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
    pub(crate) fn absorb(&mut self, n: usize, b: BatchRow) {
        self.images += n;
        self.correct += b.correct.first().copied().unwrap_or(0);
        if let Some(d) = self.draws.as_mut() {
            d.add(&b.correct);
        }
        if let (Some(h), Some(add)) = (self.target_hits.as_mut(), b.hits) {
            *h += add;
        }
        merge_batches(&mut self.diagnostics, b.diagnostics);
        add_stages(&mut self.stages, b.stages);
    }

    /// Adds another shard's counts for the same attack setting.
    pub(crate) fn add(&mut self, other: EvalRow) {
        self.images += other.images;
        self.correct += other.correct;
        if let (Some(h), Some(add)) = (self.target_hits.as_mut(), other.target_hits) {
            *h += add;
        }
        if let (Some(d), Some(add)) = (self.draws.as_mut(), &other.draws) {
            d.add(&add.correct);
        }
        merge_batches(&mut self.diagnostics, other.diagnostics);
        add_stages(&mut self.stages, other.stages);
    }

    /// Drops the checks that passed on every batch, judges Square against the white-box
    /// attacks on the whole set rather than per batch, and writes the accuracy and its interval.
    /// Running it again (after merging shards) gives the same result.
    pub(crate) fn finish(&mut self) {
        if let Some(d) = self.draws.as_mut() {
            d.finish(self.images);
        }
        self.accuracy = self.accuracy();
        self.ci95 = self
            .draws
            .is_none()
            .then(|| wilson95(self.correct, self.images));
        self.diagnostics
            .retain(|d| d.images > 0 && d.flag != Flag::SquareBeatsWhiteBox);
        if let Some(d) = square_beats_white_box(&self.stages, self.images) {
            self.diagnostics.push(d);
        }
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
    /// Images classified correctly without attack (behind a random defence, under the first
    /// draw; `clean_draws` holds them all).
    pub clean_correct: usize,
    /// The defence in front of the model, with the EOT draws asked for (each row's `defense`
    /// says how its attack used them); `None` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defense: Option<Defense>,
    /// Behind a random defence: clean accuracy under each independent draw, with mean and
    /// spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_draws: Option<DrawStats>,
    /// One row per attack setting.
    pub rows: Vec<EvalRow>,
    /// Per-tap amplification under the first attack setting, if asked for.
    pub amplification: Vec<TapAmplification>,
    /// The same at each denoise block's input, operation output and output (empty without
    /// amplification or denoise blocks).
    #[serde(default)]
    pub block_noise: Vec<BlockNoise>,
    /// Clean accuracy in percent, as [`EvalReport::clean_accuracy`] computes it.
    #[serde(default)]
    pub clean_accuracy: f64,
    /// Its 95 % Wilson score interval (`None` behind a random defence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_ci95: Option<(f64, f64)>,
    /// With several attack settings: the per-image worst case, images classified correctly
    /// under every one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_robust: Option<WorstCase>,
    /// Examples that could not be read (they count in no accuracy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
    /// The model, data and shard the report is about (set by the command line), so that shards
    /// of one run can be told from shards of different runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EvalSource>,
    /// Whether every requested image was evaluated.
    pub complete: bool,
}

/// Images classified correctly under every attack setting of a report: robust accuracy as the
/// per-image worst case over the attacks (never an average of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorstCase {
    /// Images robust under every attack (behind a random defence, under the first draw).
    pub correct: usize,
    /// Behind a random defence: the same under each draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draws: Option<DrawStats>,
    /// In percent (the mean over draws behind a random defence).
    pub accuracy: f64,
    /// 95 % Wilson score interval (`None` behind a random defence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<(f64, f64)>,
}

/// What an evaluation ran on: recorded so that `advlens merge` combines only shards of one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSource {
    /// The model as given (`builtin:default`, a path).
    pub model: String,
    /// The data as given (`bundled`, a folder, a CSV).
    pub data: String,
    /// Examples in the data set before sharding (after `--n`).
    pub examples: usize,
    /// This run's shard, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<super::Shard>,
}

/// `a` of `b` in percent (0 for `b = 0`).
pub(crate) fn percent(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

impl EvalReport {
    /// Adds one batch's line; `amp_sums` collects the amplification sums.
    pub(crate) fn absorb(&mut self, line: BatchLine, amp_sums: &mut Vec<(String, f64)>) {
        let n = line.indices.len();
        self.images += n;
        self.clean_correct += line.clean.first().copied().unwrap_or(0);
        if let Some(d) = self.clean_draws.as_mut() {
            d.add(&line.clean);
        }
        for (row, done) in self.rows.iter_mut().zip(line.rows) {
            row.absorb(n, done);
        }
        if self.rows.len() > 1 {
            let draws = line.all_robust.len();
            let w = self.all_robust.get_or_insert_with(|| WorstCase {
                correct: 0,
                draws: (draws > 1).then(|| DrawStats::new(draws)),
                accuracy: 0.0,
                ci95: None,
            });
            w.correct += line.all_robust.first().copied().unwrap_or(0);
            if let Some(d) = w.draws.as_mut() {
                d.add(&line.all_robust);
            }
        }
        if amp_sums.is_empty() {
            *amp_sums = line.amplification;
        } else {
            for ((_, sum), (_, add)) in amp_sums.iter_mut().zip(line.amplification) {
                *sum += add;
            }
        }
        self.unreadable.extend(line.unreadable);
    }

    /// Turns the sums into accuracies, intervals and mean amplifications (`blocks` reads the
    /// per-block noise off the means by tap name). Idempotent on the counts, so a merged report
    /// can be finished again.
    pub(crate) fn finish(
        &mut self,
        amp_sums: Vec<(String, f64)>,
        blocks: impl Fn(&dyn Fn(&str) -> Option<f64>) -> Vec<BlockNoise>,
    ) {
        if let Some(d) = self.clean_draws.as_mut() {
            d.finish(self.images);
        }
        self.clean_accuracy = self.clean_accuracy();
        self.clean_ci95 = self
            .clean_draws
            .is_none()
            .then(|| wilson95(self.clean_correct, self.images));
        for row in &mut self.rows {
            row.finish();
        }
        if let Some(w) = self.all_robust.as_mut() {
            if let Some(d) = w.draws.as_mut() {
                d.finish(self.images);
            }
            w.accuracy = accuracy(w.draws.as_ref(), w.correct, self.images);
            w.ci95 = w.draws.is_none().then(|| wilson95(w.correct, self.images));
        }
        let images = self.images;
        self.amplification = amp_sums
            .into_iter()
            .map(|(tap, sum)| TapAmplification {
                tap,
                mean: if images > 0 { sum / images as f64 } else { 0.0 },
            })
            .collect();
        let amp = &self.amplification;
        self.block_noise = blocks(&|tap: &str| amp.iter().find(|a| a.tap == tap).map(|a| a.mean));
    }

    /// Clean accuracy in percent (behind a random defence, the mean over the draws).
    pub fn clean_accuracy(&self) -> f64 {
        accuracy(self.clean_draws.as_ref(), self.clean_correct, self.images)
    }

    /// Clean accuracy as written in tables: `90.00`, or `90.00 ± 0.50` over a random
    /// defence's draws.
    pub fn clean_accuracy_text(&self) -> String {
        accuracy_text(self.clean_draws.as_ref(), self.clean_correct, self.images)
    }

    /// What the accuracies were measured through, for a line above a table: the defence and,
    /// for a random one, how many draws the accuracies average over. `None` without a defence.
    pub fn defense_line(&self) -> Option<String> {
        let d = self.defense.as_ref()?;
        let mut s = format!("defence: {}", d.describe());
        if let Some(draws) = &self.clean_draws {
            s.push_str(&format!(
                "; clean and robust accuracy re-predicted through it under {} independent draws \
                 of its randomness, mean ± standard deviation",
                draws.correct.len()
            ));
        }
        Some(s)
    }

    /// A markdown table of the results.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if let Some(line) = self.defense_line() {
            let _ = writeln!(s, "{line}\n");
        }
        let _ = writeln!(
            s,
            "| attack | norm | ε | steps | target | images | accuracy % | 95 % CI | target success % |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| clean | – | 0 | – | – | {} | {} | {} | – |",
            self.images,
            self.clean_accuracy_text(),
            ci_text(self.clean_ci95)
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
                "| {} | {:?} | {:.4} | {steps} | {target} | {} | {} | {} | {hits} |",
                r.name(),
                a.norm,
                a.eps,
                r.images,
                r.accuracy_text(),
                ci_text(r.ci95)
            );
            for st in &r.stages {
                let _ = writeln!(
                    s,
                    "| ↳ after {} (fooled {} of {}, {:.1} s) | | | | | {} | {:.2} | | – |",
                    st.attack,
                    st.fooled,
                    st.attacked,
                    st.seconds,
                    r.images,
                    percent(st.robust_after, r.images)
                );
            }
        }
        if let Some(w) = &self.all_robust {
            let _ = writeln!(
                s,
                "| every attack above (per-image worst case) | | | | | {} | {} | {} | – |",
                self.images,
                accuracy_text(w.draws.as_ref(), w.correct, self.images),
                ci_text(w.ci95)
            );
        }
        if !self.unreadable.is_empty() {
            let _ = writeln!(
                s,
                "\n{} example(s) could not be read and count in no accuracy:",
                self.unreadable.len()
            );
            for u in self.unreadable.iter().take(10) {
                let _ = writeln!(s, "- {} (#{}): {}", u.path, u.index, u.error);
            }
            if self.unreadable.len() > 10 {
                let _ = writeln!(
                    s,
                    "- … and {} more (all in the JSON report)",
                    self.unreadable.len() - 10
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
