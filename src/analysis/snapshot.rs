//! One image analysed: the attack, then clean and adversarial forward passes with every tap, kept
//! as an immutable [`Snapshot`] (the images, each tap's pair of activations with its
//! amplification, and the run record). The app's worker and `advlens maps` both build it here.
//!
//! With a defence the engine is the defended model ([`crate::engine::Defended`] with the job's
//! [`Defense`]): the taps are those of the network after the transformation, and the snapshot
//! keeps what the network saw ([`Seen`]).

use std::sync::Arc;
use std::time::Instant;

use crate::array::Array;
use crate::attack::{
    AttackConfig, AttackError, AttackKind, AttackResult, Diagnostic, Progress, Stage,
};
use crate::attack::{RunRecord, image_records};
use crate::cancel::Cancel;
use crate::defense::Defense;
use crate::engine::{Engine, EngineChoice, ForwardOptions, TapSelection};
use crate::model::Network;
use crate::model::TapKind;

/// One attack-and-analyse request.
#[derive(Clone)]
pub struct AnalyseJob {
    /// Increasing id; replies carry it.
    pub id: u64,
    /// The network.
    pub net: Arc<Network>,
    /// Where the model came from (for the record).
    pub model_name: String,
    /// The image `[1, C, H, W]` in [0, 1], already in the model's input shape.
    pub x: Arc<Array>,
    /// The true label, when known (bundled images).
    pub label: Option<usize>,
    /// Where the image came from (for the record).
    pub source: String,
    /// The attack.
    pub cfg: AttackConfig,
    /// The engine to run it on.
    pub engine: EngineChoice,
    /// The defence in front of the network; the engine given to [`analyse`] must run behind it
    /// (none: the bare engine).
    pub defense: Defense,
    /// Cancels this job.
    pub cancel: Cancel,
}

impl AnalyseJob {
    /// Whether the job takes long enough to run in the background with progress instead of
    /// live on the ε slider: a slow attack ([`crate::attack::AttackKind::is_slow`]) or gradients
    /// averaged over several draws of a random defence (EOT).
    pub fn is_slow(&self) -> bool {
        is_slow_job(&self.cfg, &self.defense)
    }
}

/// Whether `cfg` behind `defense` is a slow job (see [`AnalyseJob::is_slow`]).
pub fn is_slow_job(cfg: &AttackConfig, defense: &Defense) -> bool {
    cfg.kind.is_slow() || eot_draws(cfg, defense) > 1
}

/// The draws of a random defence that each step of the attack averages over, wherever the
/// averaging happens: inside each gradient call (the defence's `eot`), or in the attack's own
/// loop for the APGD family and AutoAttack (`cfg.apgd.eot`; see [`crate::attack::route_eot`]).
/// 1 when the chain draws no randomness.
pub fn eot_draws(cfg: &AttackConfig, defense: &Defense) -> usize {
    if !defense.chain.is_random() {
        return 1;
    }
    let own = cfg.kind.is_apgd()
        || matches!(
            cfg.kind,
            AttackKind::AutoAttack | AttackKind::AutoAttackRand
        );
    let in_attack = if own { cfg.apgd.eot } else { 1 };
    defense.eot.max(in_attack).max(1)
}

/// The clean and adversarial images as the network saw them, after a defence's transformation.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The clean image after the transformation, `[1, C, H, W]`.
    pub clean: Array,
    /// The adversarial image after the transformation, same shape.
    pub adv: Array,
}

/// One tap of the network, clean and adversarial.
#[derive(Clone, Debug)]
pub struct TapPair {
    /// Tap name.
    pub name: String,
    /// What it shows.
    pub kind: TapKind,
    /// Clean activation, as the engine returned it (`[1, C, H, W]` or `[1, F]`).
    pub clean: Array,
    /// Adversarial activation, same shape.
    pub adv: Array,
    /// ||A(x_adv) − A(x)|| / ||A(x)||.
    pub amplification: f32,
}

impl TapPair {
    /// `[C, H, W]` for spatial taps, `None` for flat ones (logits).
    pub fn chw(&self) -> Option<[usize; 3]> {
        match self.clean.shape() {
            &[_, c, h, w] => Some([c, h, w]),
            _ => None,
        }
    }
}

/// Everything the views show for one job: immutable once built.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The job's id.
    pub id: u64,
    /// The attack that produced it.
    pub cfg: AttackConfig,
    /// The defence the network ran behind.
    pub defense: Defense,
    /// What the network saw when a defence transformed its input (`None` without one): the
    /// taps and the predictions are those of these images.
    pub seen: Option<Seen>,
    /// The clean image `[1, C, H, W]`.
    pub x: Arc<Array>,
    /// The adversarial image, same shape.
    pub x_adv: Array,
    /// Every tap in network order.
    pub taps: Vec<TapPair>,
    /// The record, in the format `advlens attack` writes.
    pub record: RunRecord,
    /// For AutoAttack: the robust count after each component (empty otherwise).
    pub stages: Vec<Stage>,
    /// The attack's warnings (signs that the attack, not the model, failed).
    pub diagnostics: Vec<Diagnostic>,
    /// Wall time of the job, milliseconds.
    pub elapsed_ms: f64,
}

impl Snapshot {
    /// The tap called `name`.
    pub fn tap(&self, name: &str) -> Option<&TapPair> {
        self.taps.iter().find(|t| t.name == name)
    }

    /// The perturbation `x_adv − x`.
    pub fn delta(&self) -> Vec<f32> {
        self.x_adv
            .data()
            .iter()
            .zip(self.x.data())
            .map(|(a, b)| a - b)
            .collect()
    }
}

/// Runs the attack of `job` and the clean and adversarial forward passes with every tap.
pub fn analyse(engine: &mut dyn Engine, job: &AnalyseJob) -> Result<Snapshot, AttackError> {
    let started = Instant::now();
    let result = attack_job(engine, job, &|_| {})?;
    analyse_result(engine, job, result, started)
}

/// The first half of [`analyse`]: the attack of `job`, calling `progress` between the steps of
/// the long attacks (the app's progress bar). The app's worker checks the result between the
/// halves.
pub fn attack_job(
    engine: &mut dyn Engine,
    job: &AnalyseJob,
    progress: &dyn Fn(Progress),
) -> Result<AttackResult, AttackError> {
    check_defense(engine, job)?;
    let labels = job.label.map(|l| vec![l]);
    crate::attack::run_with_progress(
        engine,
        &job.x,
        labels.as_deref(),
        &job.cfg,
        &job.cancel,
        progress,
    )
}

/// The second half of [`analyse`]: the clean and adversarial forward passes of `job` and
/// `result` with every tap. `started` is when the job began (for [`Snapshot::elapsed_ms`]).
pub fn analyse_result(
    engine: &mut dyn Engine,
    job: &AnalyseJob,
    result: AttackResult,
    started: Instant,
) -> Result<Snapshot, AttackError> {
    job.cancel.check()?;
    let opts = ForwardOptions {
        taps: TapSelection::All,
        bypass_denoise: job.cfg.bypass_denoise,
    };
    check_defense(engine, job)?;
    let mut clean = engine.forward(&job.x, &opts)?;
    let mut adv = engine.forward(&result.x_adv, &opts)?;
    let seen = match (clean.seen.take(), adv.seen.take()) {
        (Some(clean), Some(adv)) => Some(Seen { clean, adv }),
        _ => None,
    };
    let net = engine.network();
    let taps = clean
        .taps
        .into_iter()
        .zip(adv.taps)
        .map(|((name, c), (_, a))| {
            let kind = net.graph.tap(&name).map_or(TapKind::Block, |t| t.kind);
            let amplification = super::amplification(&c, &a).first().copied().unwrap_or(0.0);
            TapPair {
                name,
                kind,
                clean: c,
                adv: a,
                amplification,
            }
        })
        .collect();
    let images = image_records(
        net,
        &job.x,
        std::slice::from_ref(&job.source),
        &result,
        &clean.logits,
        &adv.logits,
    );
    let record = RunRecord {
        advlens_version: env!("CARGO_PKG_VERSION").into(),
        engine: engine.describe(),
        model: job.model_name.clone(),
        architecture: net.config.summary(),
        attack: job.cfg.clone(),
        defense: engine.active_defense().cloned(),
        attack_name: job.cfg.kind.name().into(),
        stages: result.stages.clone(),
        images,
        diagnostics: result.diagnostics.clone(),
    };
    Ok(Snapshot {
        id: job.id,
        cfg: job.cfg.clone(),
        defense: job.defense.clone(),
        seen,
        x: job.x.clone(),
        x_adv: result.x_adv,
        taps,
        record,
        stages: result.stages,
        diagnostics: result.diagnostics,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Checks that `engine` runs the job's defence (a defended engine under an undefended job, or
/// the reverse, is a caller's mistake worth an error rather than a mislabelled view or record).
fn check_defense(engine: &dyn Engine, job: &AnalyseJob) -> Result<(), AttackError> {
    let wanted = (!job.defense.is_none()).then_some(&job.defense);
    if engine.active_defense() == wanted {
        return Ok(());
    }
    Err(AttackError::Config(format!(
        "the engine does not run the job's defence ({}); it runs {}",
        job.defense.describe(),
        engine
            .active_defense()
            .map_or("none".into(), Defense::describe)
    )))
}
