//! The evaluation loop: batches in (from memory, or decoded ahead from the user's files),
//! attacks run on each, every image re-predicted, one [`BatchLine`] per batch folded into the
//! [`EvalReport`] and handed to the [`EvalSink`]s (the per-image file, the saved adversarial
//! images). A run resumed from a per-image file starts from the batch lines it had written.

use super::DrawStats;
use super::amplification;
use super::batch_line::{BatchLine, BatchRow};
use super::block_noise::block_noise;
use super::eval::{EvalReport, EvalRow};
use super::per_image::ImageResult;
use crate::array::Array;
use crate::attack::{
    self, AttackConfig, AttackError, DiagnoseOptions, Flag, StepRecord, TargetMode, diagnose,
    route_eot,
};
use crate::cancel::Cancel;
use crate::data::{Batch, Labelled};
use crate::defense::Defense;
use crate::engine::{Defended, Engine, ForwardOptions, TapSelection, predictions};

/// Draws of a random defence's randomness that clean and robust accuracy are averaged over, by
/// default.
pub const DEFAULT_DEFENSE_DRAWS: usize = 10;

/// Images re-attacked without a budget by the unbounded check, on the data set's first batch only
/// (the check costs a second attack).
pub const EVAL_UNBOUNDED_IMAGES: usize = 16;

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

/// Why an evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An attack or the engine failed.
    #[error(transparent)]
    Attack(#[from] AttackError),
    /// Writing the per-image results or the adversarial images failed.
    #[error("{0}")]
    Output(String),
}

/// One batch as it was evaluated, for the [`EvalSink`]s.
pub struct BatchOutcome<'a> {
    /// The batch as read.
    pub batch: &'a Batch,
    /// One record per image and attack setting, image-major.
    pub records: &'a [ImageResult],
    /// The adversarial images of each attack setting.
    pub adversarial: &'a [Array],
    /// What the batch adds to the report.
    pub line: &'a BatchLine,
}

/// Somewhere each evaluated batch goes besides the report: the per-image file, the saved
/// adversarial images. Called once per complete batch, in order; a batch cut short by cancelling
/// is never handed over.
pub trait EvalSink {
    /// Takes one batch's outcome.
    fn batch(&mut self, outcome: &BatchOutcome<'_>) -> Result<(), EvalError>;
}

/// An evaluation's inputs beyond the engine and the attacks.
pub struct EvalInput<'a> {
    /// Batches to evaluate, in order.
    pub batches: &'a mut dyn Iterator<Item = Batch>,
    /// Examples the whole run accounts for, resumed ones included (for progress and `complete`).
    pub total: usize,
    /// Lines of earlier batches of this run, from the file it resumes.
    pub resumed: Vec<BatchLine>,
    /// Where each new batch goes besides the report.
    pub sinks: &'a mut [&'a mut dyn EvalSink],
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
    in_memory(data, opts.batch, |input| {
        evaluate_stream(engine, input, attacks, opts, cancel, progress)
    })
}

/// [`evaluate_with`] on batches from anywhere ([`crate::data::Prefetch`] over the user's files),
/// resuming from earlier lines and handing every batch to `sinks`.
pub fn evaluate_stream(
    engine: &mut dyn Engine,
    input: EvalInput<'_>,
    attacks: &[AttackConfig],
    opts: &EvalOptions,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    run(&mut Plain(engine), input, attacks, opts, cancel, progress)
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
    in_memory(data, opts.batch, |input| {
        evaluate_defended_stream(engine, input, attacks, opts, cancel, progress)
    })
}

/// [`evaluate_defended`] on batches from anywhere, as [`evaluate_stream`].
pub fn evaluate_defended_stream(
    engine: &mut Defended,
    input: EvalInput<'_>,
    attacks: &[AttackConfig],
    opts: &EvalOptions,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    let eot = engine.defense().eot;
    let report = run(
        &mut Routed {
            engine: &mut *engine,
            eot,
        },
        input,
        attacks,
        opts,
        cancel,
        progress,
    );
    engine.set_eot(eot).map_err(AttackError::from)?;
    report
}

/// A run without sinks can only fail in an attack.
fn attack_errors(r: Result<EvalReport, EvalError>) -> Result<EvalReport, AttackError> {
    r.map_err(|e| match e {
        EvalError::Attack(a) => a,
        EvalError::Output(m) => AttackError::Config(m),
    })
}

/// Runs `eval` on `data` in batches of `batch`, with nothing resumed and no sinks (so it can only
/// fail in an attack).
fn in_memory(
    data: &Labelled,
    batch: usize,
    eval: impl FnOnce(EvalInput<'_>) -> Result<EvalReport, EvalError>,
) -> Result<EvalReport, AttackError> {
    let mut batches = in_memory_batches(data, batch);
    attack_errors(eval(EvalInput {
        batches: &mut batches,
        total: data.len(),
        resumed: vec![],
        sinks: &mut [],
    }))
}

/// `data` in batches of `batch`, in order.
fn in_memory_batches(data: &Labelled, batch: usize) -> impl Iterator<Item = Batch> + '_ {
    let n = data.len();
    (0..n).step_by(batch.max(1)).map(move |start| {
        let indices: Vec<usize> = (start..(start + batch.max(1)).min(n)).collect();
        let part = data.select(&indices);
        Batch {
            paths: vec![None; indices.len()],
            indices,
            images: part.images,
            labels: part.labels,
            unreadable: vec![],
        }
    })
}

/// An empty report for `routed` attack settings behind `defense` under `draws` draws.
fn empty_report(
    routed: &[(AttackConfig, Option<Defense>)],
    defense: Option<Defense>,
    draws: usize,
) -> EvalReport {
    let random = draws > 1;
    EvalReport {
        images: 0,
        clean_correct: 0,
        defense,
        clean_draws: random.then(|| DrawStats::new(draws)),
        rows: routed
            .iter()
            .map(|(a, d)| EvalRow::empty(a.clone(), d.clone(), random.then_some(draws)))
            .collect(),
        all_robust: None,
        amplification: vec![],
        block_noise: vec![],
        clean_accuracy: 0.0,
        clean_ci95: None,
        unreadable: vec![],
        source: None,
        complete: false,
    }
}

/// The evaluation loop behind every `evaluate*` function.
fn run(
    subject: &mut dyn Subject,
    input: EvalInput<'_>,
    attacks: &[AttackConfig],
    opts: &EvalOptions,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    let defense = subject.engine().active_defense().cloned();
    let random = defense.as_ref().is_some_and(|d| d.chain.is_random());
    let draws = if random { opts.defense_draws.max(1) } else { 1 };
    let routed: Vec<(AttackConfig, Option<Defense>)> =
        attacks.iter().map(|a| subject.route(a)).collect();
    let mut report = empty_report(&routed, defense, draws);
    let mut amp_sums: Vec<(String, f64)> = Vec::new();
    let mut done = 0;
    for line in input.resumed {
        done += line.done().count();
        report.absorb(line, &mut amp_sums);
    }
    for batch in input.batches {
        if cancel.is_cancelled() {
            break;
        }
        let Some((line, records, adversarial)) = evaluate_batch(
            subject,
            &batch,
            &routed,
            opts.amplification,
            draws,
            holds_first_image(&batch).then_some(EVAL_UNBOUNDED_IMAGES),
            cancel,
        )?
        else {
            break; // cancelled mid-batch: count only complete batches
        };
        let outcome = BatchOutcome {
            batch: &batch,
            records: &records,
            adversarial: &adversarial,
            line: &line,
        };
        for sink in input.sinks.iter_mut() {
            sink.batch(&outcome)?;
        }
        done += line.done().count();
        report.absorb(line, &mut amp_sums);
        progress(done, input.total);
    }
    report.complete = done == input.total && !cancel.is_cancelled();
    let graph = &subject.engine().network().graph;
    report.finish(amp_sums, |means| block_noise(graph, means));
    Ok(report)
}

/// Whether `batch` is the one that starts the data set (image 0), where the diagnostics' costly
/// unbounded re-attack runs: the same batch whether the run is sharded, resumed or whole.
fn holds_first_image(batch: &Batch) -> bool {
    batch.indices.first() == Some(&0) || batch.unreadable.iter().any(|u| u.index == 0)
}

/// One batch evaluated: its line, its per-image records and each attack's adversarial images.
type Evaluated = (BatchLine, Vec<ImageResult>, Vec<Array>);

/// Every attack on one batch. `None` when cancelled before the batch was complete.
fn evaluate_batch(
    subject: &mut dyn Subject,
    batch: &Batch,
    routed: &[(AttackConfig, Option<Defense>)],
    with_amplification: bool,
    draws: usize,
    unbounded: Option<usize>,
    cancel: &Cancel,
) -> Result<Option<Evaluated>, EvalError> {
    let mut line = BatchLine {
        indices: batch.indices.clone(),
        clean: vec![0; draws],
        rows: vec![],
        all_robust: vec![],
        amplification: vec![],
        unreadable: batch.unreadable.clone(),
    };
    if batch.is_empty() {
        line.rows = routed
            .iter()
            .map(|(a, _)| BatchRow {
                correct: vec![0; draws],
                hits: (a.target != TargetMode::Untargeted).then_some(0),
                diagnostics: vec![],
                stages: vec![],
            })
            .collect();
        return Ok(Some((line, vec![], vec![])));
    }
    let part = batch.labelled();
    let clean = predict_draws(
        subject.engine(),
        &part.images,
        &ForwardOptions::default(),
        draws,
    )?;
    line.clean = count_correct(&clean, &part.labels);
    let mut outcomes = Vec::with_capacity(routed.len());
    for (k, (cfg, defense)) in routed.iter().enumerate() {
        subject.prepare(defense.as_ref())?;
        let engine = subject.engine();
        let outcome = match attack_batch(engine, &part, cfg, unbounded, draws, cancel) {
            Err(AttackError::Cancelled) => return Ok(None),
            other => other?,
        };
        if with_amplification && k == 0 {
            line.amplification = amplification_sums(engine, &part.images, &outcome.x_adv, cfg)?;
        }
        outcomes.push(outcome);
    }
    if outcomes.len() > 1 {
        line.all_robust = (0..draws)
            .map(|d| {
                (0..part.len())
                    .filter(|&i| outcomes.iter().all(|o| o.preds[d][i] == part.labels[i]))
                    .count()
            })
            .collect();
    }
    let records = image_records(batch, routed, &clean, &outcomes);
    let mut adversarial = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        line.rows.push(o.row);
        adversarial.push(o.x_adv);
    }
    Ok(Some((line, records, adversarial)))
}

/// One attack setting's outcome on one batch, per image as well as counted.
struct RowOutcome {
    row: BatchRow,
    x_adv: Array,
    /// Predictions under each draw, `[draw][image]`.
    preds: Vec<Vec<usize>>,
    targets: Option<Vec<usize>>,
    norms: Vec<(f32, f32)>,
    last: Vec<Option<StepRecord>>,
}

/// The records of one batch, image-major.
fn image_records(
    batch: &Batch,
    routed: &[(AttackConfig, Option<Defense>)],
    clean: &[Vec<usize>],
    outcomes: &[RowOutcome],
) -> Vec<ImageResult> {
    let many = clean.len() > 1;
    let mut records = Vec::with_capacity(batch.len() * outcomes.len());
    for (i, &index) in batch.indices.iter().enumerate() {
        let label = batch.labels[i];
        for (k, (o, (cfg, _))) in outcomes.iter().zip(routed).enumerate() {
            let (clean_pred, adv_pred) = (clean[0][i], o.preds[0][i]);
            let (linf, l2) = o.norms[i];
            records.push(ImageResult {
                index,
                path: batch.paths.get(i).cloned().flatten(),
                attack: EvalRow::heading_of(cfg),
                row: k,
                label,
                target: o.targets.as_ref().map(|t| t[i]),
                clean_pred,
                adv_pred,
                robust: adv_pred == label,
                fooled: clean_pred == label && adv_pred != label,
                linf,
                l2,
                loss: o.last[i].as_ref().map(|r| r.loss),
                steps: o.last[i].as_ref().map(|r| r.step),
                clean_draws: many.then(|| clean.iter().map(|p| p[i]).collect()),
                adv_draws: many.then(|| o.preds.iter().map(|p| p[i]).collect()),
            });
        }
    }
    records
}

/// Predictions on `x` under each of `draws` forward passes (through a random defence, each pass
/// is a fresh draw of its randomness), `[draw][image]`.
fn predict_draws(
    engine: &mut dyn Engine,
    x: &Array,
    opts: &ForwardOptions,
    draws: usize,
) -> Result<Vec<Vec<usize>>, AttackError> {
    (0..draws.max(1))
        .map(|_| Ok(predictions(&engine.forward(x, opts)?.logits)))
        .collect()
}

/// Correct predictions under each draw.
fn count_correct(preds: &[Vec<usize>], labels: &[usize]) -> Vec<usize> {
    preds
        .iter()
        .map(|p| p.iter().zip(labels).filter(|(p, y)| p == y).count())
        .collect()
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
/// when given).
fn attack_batch(
    engine: &mut dyn Engine,
    part: &Labelled,
    cfg: &AttackConfig,
    unbounded: Option<usize>,
    draws: usize,
    cancel: &Cancel,
) -> Result<RowOutcome, AttackError> {
    let result = attack::run(engine, &part.images, Some(&part.labels), cfg, cancel)?;
    let preds = predict_draws(engine, &result.x_adv, &cfg.forward_options(), draws)?;
    let hits = result
        .targets
        .as_ref()
        .map(|t| preds[0].iter().zip(t).filter(|(p, t)| p == t).count());
    let opts = DiagnoseOptions {
        unbounded,
        keep_passed: true,
        cancel: cancel.clone(),
    };
    let mut diagnostics = diagnose(engine, &part.images, &result, cfg, &opts)?;
    for d in &mut diagnostics {
        if d.flag == Flag::UnboundedFailure {
            d.detail
                .push_str(" (checked on the data set's first batch only)");
        }
    }
    Ok(RowOutcome {
        row: BatchRow {
            correct: count_correct(&preds, &part.labels),
            hits,
            diagnostics,
            stages: result.stages.clone(),
        },
        norms: result.norms(&part.images),
        last: result.history.iter().map(|h| h.last().cloned()).collect(),
        targets: result.targets,
        preds,
        x_adv: result.x_adv,
    })
}
