//! Clean and robust accuracy of a model on a labelled set, for a list of attacks and budgets.
//! Robust accuracy is always re-predicted on the adversarial images the attack returns, never
//! taken from the attack's own bookkeeping; behind a defence, through the real (randomised)
//! defence, and for a random one as the mean over independent draws of its randomness, with
//! their spread. Optionally, the mean feature amplification `‖A(x_adv) − A(x)‖ / ‖A(x)‖` per tap,
//! and per denoise block at its input, operation output and output.

use serde::{Deserialize, Serialize};

use super::DrawStats;
use super::amplification;
use super::block_noise::{BlockNoise, block_noise, block_noise_markdown};
use crate::array::Array;
use crate::attack::{
    self, AttackConfig, AttackError, AttackKind, DiagnoseOptions, Diagnostic, Flag, Stage,
    TargetMode, diagnose, merge_batches, route_eot, square_beats_white_box,
};
use crate::cancel::Cancel;
use crate::data::Labelled;
use crate::defense::Defense;
use crate::engine::{Defended, Engine, ForwardOptions, TapSelection, predictions};

/// Draws of a random defence's randomness that clean and robust accuracy are averaged over, by
/// default.
pub const DEFAULT_DEFENSE_DRAWS: usize = 10;

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

impl EvalRow {
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
    fn absorb(&mut self, n: usize, b: BatchRow) {
        self.images += n;
        self.correct += b.correct.first().copied().unwrap_or(0);
        if let Some(d) = self.draws.as_mut() {
            d.add(&b.correct);
        }
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
        if let Some(d) = self.draws.as_mut() {
            d.finish(self.images);
        }
        self.diagnostics
            .retain(|d| d.images > 0 && d.flag != Flag::SquareBeatsWhiteBox);
        if let Some(d) = square_beats_white_box(&self.stages, self.images) {
            self.diagnostics.push(d);
        }
    }
}

/// One attack's outcome on one batch.
struct BatchRow {
    /// Correct predictions under each draw of the defence (one for a deterministic model).
    correct: Vec<usize>,
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
            "| attack | norm | ε | steps | target | images | accuracy % | target success % |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| clean | – | 0 | – | – | {} | {} | – |",
            self.images,
            self.clean_accuracy_text()
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
                "| {} | {:?} | {:.4} | {steps} | {target} | {} | {} | {hits} |",
                r.name(),
                a.norm,
                a.eps,
                r.images,
                r.accuracy_text()
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

/// How [`evaluate_with`] and [`evaluate_defended`] run.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// Images per batch.
    pub batch: usize,
    /// Also measure the mean amplification per tap under the first attack.
    pub amplification: bool,
    /// Behind a random defence: independent draws of its randomness that clean and robust
    /// accuracy are re-predicted under (at least 1; [`DEFAULT_DEFENSE_DRAWS`] by default).
    pub defense_draws: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch: 100,
            amplification: false,
            defense_draws: DEFAULT_DEFENSE_DRAWS,
        }
    }
}

/// What the evaluation loop attacks: an engine, and how an attack's EOT meets the defence.
trait Subject {
    /// The engine (a [`Defended`] one behind a defence).
    fn engine(&mut self) -> &mut dyn Engine;
    /// The settings `cfg` runs with here, and the defence as its attack uses it.
    fn route(&self, cfg: &AttackConfig) -> (AttackConfig, Option<Defense>);
    /// Sets the engine up for an attack routed to `defense`.
    fn prepare(&mut self, defense: Option<&Defense>) -> Result<(), AttackError>;
}

/// Any engine, attacked as it is (a defence in it keeps its own EOT).
struct Plain<'a>(&'a mut dyn Engine);

impl Subject for Plain<'_> {
    fn engine(&mut self) -> &mut dyn Engine {
        self.0
    }
    fn route(&self, cfg: &AttackConfig) -> (AttackConfig, Option<Defense>) {
        (cfg.clone(), self.0.active_defense().cloned())
    }
    fn prepare(&mut self, _: Option<&Defense>) -> Result<(), AttackError> {
        Ok(())
    }
}

/// A defended engine whose EOT draws `eot` are split per attack by [`route_eot`].
struct Routed<'a> {
    engine: &'a mut Defended,
    eot: usize,
}

impl Subject for Routed<'_> {
    fn engine(&mut self) -> &mut dyn Engine {
        self.engine
    }
    fn route(&self, cfg: &AttackConfig) -> (AttackConfig, Option<Defense>) {
        let mut cfg = cfg.clone();
        let mut defense = self.engine.defense().clone();
        route_eot(&mut cfg, &mut defense, self.eot);
        (cfg, (!defense.is_none()).then_some(defense))
    }
    fn prepare(&mut self, defense: Option<&Defense>) -> Result<(), AttackError> {
        let eot = defense.map_or(1, |d| d.eot);
        Ok(self.engine.set_eot(eot)?)
    }
}

/// Evaluates `engine` on `data` in batches of `batch`, for every attack in `attacks`.
/// `progress(done, total)` is called after every batch. Cancelling returns the partial report.
/// A defence inside `engine` is attacked as it is set; see [`evaluate_defended`] to split EOT
/// per attack.
pub fn evaluate(
    engine: &mut dyn Engine,
    data: &Labelled,
    attacks: &[AttackConfig],
    batch: usize,
    with_amplification: bool,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, AttackError> {
    let opts = EvalOptions {
        batch,
        amplification: with_amplification,
        ..EvalOptions::default()
    };
    evaluate_with(engine, data, attacks, &opts, cancel, progress)
}

/// [`evaluate`] with every option.
pub fn evaluate_with(
    engine: &mut dyn Engine,
    data: &Labelled,
    attacks: &[AttackConfig],
    opts: &EvalOptions,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, AttackError> {
    run(&mut Plain(engine), data, attacks, opts, cancel, progress)
}

/// Evaluates a defended engine: the defence's `eot` draws per gradient are split per attack by
/// [`route_eot`] (APGD and AutoAttack average their own calls, the others average inside the
/// defence), and its `eot` is restored afterwards. Otherwise as [`evaluate_with`].
pub fn evaluate_defended(
    engine: &mut Defended,
    data: &Labelled,
    attacks: &[AttackConfig],
    opts: &EvalOptions,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, AttackError> {
    let eot = engine.defense().eot;
    let report = run(
        &mut Routed {
            engine: &mut *engine,
            eot,
        },
        data,
        attacks,
        opts,
        cancel,
        progress,
    );
    engine.set_eot(eot)?;
    report
}

/// The evaluation loop behind [`evaluate_with`] and [`evaluate_defended`].
fn run(
    subject: &mut dyn Subject,
    data: &Labelled,
    attacks: &[AttackConfig],
    opts: &EvalOptions,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, AttackError> {
    let total = data.len();
    let defense = subject.engine().active_defense().cloned();
    let random = defense.as_ref().is_some_and(|d| d.chain.is_random());
    let draws = if random { opts.defense_draws.max(1) } else { 1 };
    let routed: Vec<(AttackConfig, Option<Defense>)> =
        attacks.iter().map(|a| subject.route(a)).collect();
    let mut report = EvalReport {
        images: 0,
        clean_correct: 0,
        defense,
        clean_draws: random.then(|| DrawStats::new(draws)),
        rows: routed
            .iter()
            .map(|(a, d)| EvalRow {
                attack: a.clone(),
                images: 0,
                correct: 0,
                target_hits: (a.target != TargetMode::Untargeted).then_some(0),
                defense: d.clone(),
                draws: random.then(|| DrawStats::new(draws)),
                diagnostics: vec![],
                stages: vec![],
            })
            .collect(),
        amplification: vec![],
        block_noise: vec![],
        complete: false,
    };
    let mut amp_sums: Vec<(String, f64)> = Vec::new();
    let batch = opts.batch.max(1);
    let mut start = 0;
    while start < total {
        if cancel.is_cancelled() {
            break;
        }
        let idx: Vec<usize> = (start..(start + batch).min(total)).collect();
        let part = data.select(&idx);
        let n = idx.len();
        let clean = correct_per_draw(subject.engine(), &part.images, &part.labels, draws)?;
        let mut rows_done = Vec::with_capacity(attacks.len());
        // This batch's amplification sums, added to the report only once the batch is complete.
        let mut batch_amp: Vec<(String, f64)> = Vec::new();
        for (k, (cfg, defense)) in routed.iter().enumerate() {
            subject.prepare(defense.as_ref())?;
            let engine = subject.engine();
            let unbounded = (start == 0).then_some(EVAL_UNBOUNDED_IMAGES);
            let (row, x_adv) = match attack_batch(engine, &part, cfg, unbounded, draws, cancel) {
                Err(AttackError::Cancelled) => break,
                other => other?,
            };
            if opts.amplification && k == 0 {
                batch_amp = amplification_sums(engine, &part.images, &x_adv, cfg)?;
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
        report.clean_correct += clean.first().copied().unwrap_or(0);
        if let Some(d) = report.clean_draws.as_mut() {
            d.add(&clean);
        }
        for (row, done) in report.rows.iter_mut().zip(rows_done) {
            row.absorb(n, done);
        }
        start += n;
        progress(report.images, total);
    }
    report.complete = report.images == total;
    if let Some(d) = report.clean_draws.as_mut() {
        d.finish(report.images);
    }
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
    report.block_noise = block_noise(&subject.engine().network().graph, |tap| {
        report
            .amplification
            .iter()
            .find(|a| a.tap == tap)
            .map(|a| a.mean)
    });
    Ok(report)
}

/// The correct predictions on `x` under each of `draws` forward passes (through a random
/// defence, each pass is a fresh draw of its randomness).
fn correct_per_draw(
    engine: &mut dyn Engine,
    x: &Array,
    labels: &[usize],
    draws: usize,
) -> Result<Vec<usize>, AttackError> {
    correct_and_hits(engine, x, labels, None, &ForwardOptions::default(), draws).map(|(c, _)| c)
}

/// The correct predictions on `x` under each of `draws` forward passes, and the target hits
/// under the first.
fn correct_and_hits(
    engine: &mut dyn Engine,
    x: &Array,
    labels: &[usize],
    targets: Option<&[usize]>,
    opts: &ForwardOptions,
    draws: usize,
) -> Result<(Vec<usize>, Option<usize>), AttackError> {
    let mut correct = Vec::with_capacity(draws);
    let mut hits = None;
    for d in 0..draws.max(1) {
        let pred = predictions(&engine.forward(x, opts)?.logits);
        correct.push(pred.iter().zip(labels).filter(|(p, y)| p == y).count());
        if d == 0 {
            hits = targets.map(|t| pred.iter().zip(t).filter(|(p, t)| p == t).count());
        }
    }
    Ok((correct, hits))
}

/// Per tap, the sum over the batch of `‖A(x_adv) − A(x)‖ / ‖A(x)‖`.
fn amplification_sums(
    engine: &mut dyn Engine,
    x: &Array,
    x_adv: &Array,
    cfg: &AttackConfig,
) -> Result<Vec<(String, f64)>, AttackError> {
    let all = ForwardOptions {
        taps: TapSelection::All,
        ..cfg.forward_options()
    };
    let c = engine.forward(x, &all)?;
    let a = engine.forward(x_adv, &all)?;
    Ok(c.taps
        .iter()
        .zip(&a.taps)
        .map(|((name, ct), (_, at))| {
            let sum = amplification(ct, at).iter().map(|&v| v as f64).sum::<f64>();
            (name.clone(), sum)
        })
        .collect())
}

/// Runs one attack on one batch, re-predicts its images (under `draws` draws of a random
/// defence) and runs the diagnostics on it (the unbounded re-attack on up to `unbounded` images,
/// when given). Returns the batch's row and the adversarial images.
fn attack_batch(
    engine: &mut dyn Engine,
    part: &Labelled,
    cfg: &AttackConfig,
    unbounded: Option<usize>,
    draws: usize,
    cancel: &Cancel,
) -> Result<(BatchRow, Array), AttackError> {
    let result = attack::run(engine, &part.images, Some(&part.labels), cfg, cancel)?;
    let (correct, hits) = correct_and_hits(
        engine,
        &result.x_adv,
        &part.labels,
        result.targets.as_deref(),
        &cfg.forward_options(),
        draws,
    )?;
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
