//! The attacks: FGSM, I-FGSM/BIM, PGD (L∞ and L2, random start, restarts), MI-FGSM, C&W L2,
//! DeepFool, APGD (CE, DLR, targeted DLR), Square and AutoAttack, untargeted or targeted. All work in pixel space ([0, 1]); a model's normalisation
//! lives inside the model. Every attack records a per-step history per example and can be
//! cancelled between steps. Examples never interact: an image's result does not depend on the
//! batch it is in, and every random choice comes from the seed and the image itself.

mod apgd;
mod apgd_host;
mod autoattack;
mod budget;
mod cw;
mod deepfool;
mod diagnostics;
mod eot;
mod fgsm;
mod iterative;
mod mifgsm;
mod pgd;
mod project;
mod report;
mod square;
mod target;

pub use apgd::{
    Inputs as ApgdInputs, Objective as ApgdObjective, RunSettings as ApgdSettings,
    SingleRun as ApgdRun, checkpoints as apgd_checkpoints, random_start as apgd_random_start,
    single_run as apgd_single_run,
};
pub use autoattack::{STANDARD_NAME as AUTOATTACK_STANDARD_NAME, Stage, square_beats_white_box};
pub use budget::{Budget, parse_budget, parse_fraction};
pub use diagnostics::{DiagnoseOptions, Diagnostic, Flag, diagnose, merge_batches, still_rising};
pub use eot::route_eot;
pub use pgd::madry_step_size;
pub use project::{distances, linf};
pub use report::{ClassProb, ImageRecord, RunRecord, image_records, top5};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::array::Array;
use crate::cancel::{Cancel, Cancelled};
use crate::engine::best_other;
use crate::engine::{Engine, EngineError, ForwardOptions};

/// Errors raised by attacks.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The configuration is not usable.
    #[error("invalid attack settings: {0}")]
    Config(String),
    /// The attack was cancelled between steps.
    #[error("attack cancelled")]
    Cancelled,
}

impl From<Cancelled> for AttackError {
    fn from(_: Cancelled) -> Self {
        AttackError::Cancelled
    }
}

/// Which attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// Fast gradient sign method (one step of size ε).
    Fgsm,
    /// Basic iterative method / I-FGSM (no random start).
    Bim,
    /// Projected gradient descent with random start and restarts.
    Pgd,
    /// Momentum iterative FGSM.
    MiFgsm,
    /// Carlini–Wagner L2.
    Cw,
    /// DeepFool (multi-class).
    Deepfool,
    /// APGD on the cross-entropy (Croce & Hein 2020).
    ApgdCe,
    /// APGD on the DLR loss (invariant to shifting and scaling the logits).
    ApgdDlr,
    /// APGD on the targeted DLR loss towards the 9 classes ranked highest after the label, one
    /// after the other on the images still robust; success is any misclassification.
    ApgdT,
    /// Square attack (Andriushchenko et al. 2020): random search with forward passes only.
    Square,
    /// AutoAttack `standard`: APGD-CE, APGD-T, (FAB-T: not implemented), Square, per-image worst
    /// case.
    AutoAttack,
    /// AutoAttack `rand` for randomised models: APGD-CE and APGD-DLR with EOT over 20 draws.
    AutoAttackRand,
}

impl AttackKind {
    /// Every attack, in display order.
    pub const ALL: [AttackKind; 12] = [
        AttackKind::Fgsm,
        AttackKind::Bim,
        AttackKind::Pgd,
        AttackKind::MiFgsm,
        AttackKind::Cw,
        AttackKind::Deepfool,
        AttackKind::ApgdCe,
        AttackKind::ApgdDlr,
        AttackKind::ApgdT,
        AttackKind::Square,
        AttackKind::AutoAttack,
        AttackKind::AutoAttackRand,
    ];

    /// Identifier used on the command line and in records.
    pub fn id(self) -> &'static str {
        match self {
            AttackKind::Fgsm => "fgsm",
            AttackKind::Bim => "bim",
            AttackKind::Pgd => "pgd",
            AttackKind::MiFgsm => "mifgsm",
            AttackKind::Cw => "cw",
            AttackKind::Deepfool => "deepfool",
            AttackKind::ApgdCe => "apgd-ce",
            AttackKind::ApgdDlr => "apgd-dlr",
            AttackKind::ApgdT => "apgd-t",
            AttackKind::Square => "square",
            AttackKind::AutoAttack => "autoattack",
            AttackKind::AutoAttackRand => "autoattack-rand",
        }
    }

    /// The attack's full name for records and tables; AutoAttack's says that FAB-T is missing.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::AutoAttack => autoattack::STANDARD_NAME,
            AttackKind::AutoAttackRand => "AutoAttack rand (APGD-CE, APGD-DLR with EOT)",
            other => other.id(),
        }
    }

    /// Whether the attack is one of the APGD variants.
    pub fn is_apgd(self) -> bool {
        matches!(
            self,
            AttackKind::ApgdCe | AttackKind::ApgdDlr | AttackKind::ApgdT
        )
    }

    /// Whether the attack takes long enough (thousands of passes per image) that the app runs it
    /// as a background job with progress instead of live on the ε slider.
    pub fn is_slow(self) -> bool {
        matches!(
            self,
            AttackKind::Square | AttackKind::AutoAttack | AttackKind::AutoAttackRand
        )
    }

    /// Whether the attack minimises the perturbation instead of working inside a fixed ε ball.
    pub fn is_minimum_norm(self) -> bool {
        matches!(self, AttackKind::Cw | AttackKind::Deepfool)
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for AttackKind {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let plain = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
        let s = plain(s);
        let alias = match s.as_str() {
            "ifgsm" => "bim",
            "mi" | "mim" => "mifgsm",
            "cwl2" | "carliniwagner" => "cw",
            "apgd" => "apgdce",
            "apgdtarget" | "apgdtargeted" => "apgdt",
            "aa" | "autoattackstandard" => "autoattack",
            "aarand" => "autoattackrand",
            other => other,
        };
        AttackKind::ALL
            .into_iter()
            .find(|k| plain(k.id()) == alias)
            .ok_or_else(|| {
                let all: Vec<&str> = AttackKind::ALL.iter().map(|k| k.id()).collect();
                AttackError::Config(format!(
                    "unknown attack {s:?}; expected one of {}",
                    all.join(", ")
                ))
            })
    }
}

/// The norm of the threat model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// L∞: every pixel moves at most ε.
    #[default]
    Linf,
    /// L2: the perturbation's Euclidean norm is at most ε.
    L2,
}

impl FromStr for Norm {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linf" | "inf" | "l-inf" => Ok(Norm::Linf),
            "l2" | "2" => Ok(Norm::L2),
            _ => Err(AttackError::Config(format!(
                "unknown norm {s:?}; expected linf or l2"
            ))),
        }
    }
}

/// Whether and how an attack chooses a target class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetMode {
    /// Any wrong class will do.
    #[default]
    Untargeted,
    /// This class for every example.
    Class(usize),
    /// A uniformly random class other than the label, per example.
    Random,
    /// The class with the lowest clean logit, per example.
    LeastLikely,
}

/// Carlini–Wagner settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CwConfig {
    /// Initial trade-off constant c.
    pub initial_const: f32,
    /// Binary-search rounds over c.
    pub search_steps: usize,
    /// Adam steps per round.
    pub steps: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Confidence κ.
    pub kappa: f32,
}

impl Default for CwConfig {
    fn default() -> Self {
        Self {
            initial_const: 1e-2,
            search_steps: 6,
            steps: 100,
            learning_rate: 0.01,
            kappa: 0.0,
        }
    }
}

/// DeepFool settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeepfoolConfig {
    /// Overshoot η.
    pub overshoot: f32,
    /// Most iterations.
    pub max_iter: usize,
    /// Classes considered (the top ones by clean logit, the original class included).
    pub candidates: usize,
}

impl Default for DeepfoolConfig {
    fn default() -> Self {
        Self {
            overshoot: 0.02,
            max_iter: 50,
            candidates: 10,
        }
    }
}

/// APGD settings (AutoAttack's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApgdConfig {
    /// Oscillation threshold ρ of the first halving condition.
    pub rho: f32,
    /// APGD-T: how many target classes (ranked 2nd, 3rd, … by the clean logits), at most the
    /// number of classes − 1.
    pub targets: usize,
    /// Gradient samples averaged per step (expectation over transformation); the loss used by
    /// the step-size checks is averaged over the same samples (AutoAttack keeps the last one).
    pub eot: usize,
}

impl Default for ApgdConfig {
    fn default() -> Self {
        Self {
            rho: 0.75,
            targets: 9,
            eot: 1,
        }
    }
}

/// Square attack settings (AutoAttack's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SquareConfig {
    /// Forward passes per image, the initialisation included.
    pub queries: usize,
    /// The fraction of pixels the first squares cover; the schedule halves it.
    pub p_init: f32,
}

impl Default for SquareConfig {
    fn default() -> Self {
        Self {
            queries: 5000,
            p_init: 0.8,
        }
    }
}

/// Everything that defines an attack run. `None` fields take the attack's documented default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttackConfig {
    /// Which attack.
    pub kind: AttackKind,
    /// Threat-model norm.
    pub norm: Norm,
    /// Budget ε in pixel units (ignored by C&W; DeepFool ignores it too).
    pub eps: f32,
    /// Step size α in pixel units.
    pub alpha: Option<f32>,
    /// Iterations.
    pub steps: Option<usize>,
    /// PGD restarts (each example keeps its best).
    pub restarts: usize,
    /// Random start (PGD default on, others off).
    pub random_start: Option<bool>,
    /// MI-FGSM decay μ.
    pub momentum: f32,
    /// Targeting.
    pub target: TargetMode,
    /// Seed for every random choice.
    pub seed: u64,
    /// C&W settings.
    pub cw: CwConfig,
    /// DeepFool settings.
    pub deepfool: DeepfoolConfig,
    /// APGD settings (also used by AutoAttack).
    pub apgd: ApgdConfig,
    /// Square settings (also used by AutoAttack).
    pub square: SquareConfig,
    /// Attack the network with its denoise blocks bypassed.
    pub bypass_denoise: bool,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            kind: AttackKind::Pgd,
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            alpha: None,
            steps: None,
            restarts: 1,
            random_start: None,
            momentum: 1.0,
            target: TargetMode::Untargeted,
            seed: 0,
            cw: CwConfig::default(),
            deepfool: DeepfoolConfig::default(),
            apgd: ApgdConfig::default(),
            square: SquareConfig::default(),
            bypass_denoise: false,
        }
    }
}

impl AttackConfig {
    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<(), AttackError> {
        let bad = |m: &str| Err(AttackError::Config(m.to_string()));
        if !self.eps.is_finite() || self.eps < 0.0 {
            return bad("epsilon must be a finite number ≥ 0");
        }
        if self.alpha.is_some_and(|a| !a.is_finite() || a <= 0.0) {
            return bad("the step size must be a finite number > 0");
        }
        if self.steps == Some(0) && self.kind != AttackKind::Fgsm {
            return bad("an iterative attack needs at least one step");
        }
        if self.steps.is_some_and(|s| s > 100_000) {
            return bad("at most 100000 steps");
        }
        if self.restarts == 0 || self.restarts > 1000 {
            return bad("restarts must be between 1 and 1000");
        }
        if !self.momentum.is_finite() || self.momentum < 0.0 {
            return bad("momentum must be ≥ 0");
        }
        if self.kind == AttackKind::Cw
            && (self.cw.steps == 0 || self.cw.search_steps == 0 || self.cw.learning_rate <= 0.0)
        {
            return bad("C&W needs steps, search steps and a positive learning rate");
        }
        if self.kind == AttackKind::Deepfool && self.deepfool.candidates < 2 {
            return bad("DeepFool needs at least two candidate classes");
        }
        if self.kind == AttackKind::Cw && self.norm != Norm::L2 {
            return bad("C&W is an L2 attack: use --norm l2");
        }
        if !(self.apgd.rho.is_finite() && self.apgd.rho > 0.0 && self.apgd.rho <= 1.0) {
            return bad("APGD's oscillation threshold ρ must be in (0, 1]");
        }
        if self.apgd.targets == 0 || self.apgd.targets > 1000 {
            return bad("APGD-T needs between 1 and 1000 target classes");
        }
        if self.apgd.eot == 0 || self.apgd.eot > 1000 {
            return bad("EOT samples must be between 1 and 1000");
        }
        if self.square.queries == 0 || self.square.queries > 1_000_000 {
            return bad("Square needs between 1 and 1000000 queries");
        }
        if !(self.square.p_init.is_finite()
            && self.square.p_init > 0.0
            && self.square.p_init <= 1.0)
        {
            return bad("Square's p_init must be in (0, 1]");
        }
        Ok(())
    }

    /// The forward options attacks run with.
    pub fn forward_options(&self) -> ForwardOptions {
        ForwardOptions {
            bypass_denoise: self.bypass_denoise,
            ..ForwardOptions::default()
        }
    }
}

/// One point of an example's attack history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step index (0 = before the first update).
    pub step: usize,
    /// The attack's loss at this point.
    pub loss: f32,
    /// Predicted class.
    pub pred: usize,
    /// Distance from success in logits: `Z_y − max_{i≠y} Z_i` (untargeted) or
    /// `max_{i≠t} Z_i − Z_t` (targeted); negative means the attack has succeeded.
    pub margin: f32,
    /// ‖δ‖∞.
    pub linf: f32,
    /// ‖δ‖₂.
    pub l2: f32,
}

/// The outcome of an attack on a batch.
#[derive(Clone, Debug)]
pub struct AttackResult {
    /// Adversarial images, shaped like the input.
    pub x_adv: Array,
    /// The labels the attack used (given, or the clean predictions).
    pub labels: Vec<usize>,
    /// Targets, for targeted attacks.
    pub targets: Option<Vec<usize>>,
    /// Per-example history.
    pub history: Vec<Vec<StepRecord>>,
    /// For AutoAttack: the robust count after each component, in order (empty otherwise).
    pub stages: Vec<Stage>,
    /// Signs that the attack, not the model, may have failed (see [`Flag`]).
    pub diagnostics: Vec<Diagnostic>,
}

impl AttackResult {
    /// `(L∞, L2)` of each example's perturbation.
    pub fn norms(&self, x: &Array) -> Vec<(f32, f32)> {
        (0..x.batch())
            .map(|i| project::distances(self.x_adv.example(i), x.example(i)))
            .collect()
    }
}

/// The distance from success of one example (see [`StepRecord::margin`]).
pub fn success_margin(logits: &[f32], label: usize, target: Option<usize>) -> f32 {
    match target {
        Some(t) => logits[best_other(logits, t)] - logits[t],
        None => logits[label] - logits[best_other(logits, label)],
    }
}

/// A history record for example `i`.
pub(crate) fn record(
    step: usize,
    loss: f32,
    logits: &[f32],
    label: usize,
    target: Option<usize>,
    x_adv: &[f32],
    x: &[f32],
) -> StepRecord {
    let (linf, l2) = project::distances(x_adv, x);
    record_with(step, loss, logits, label, target, linf, l2)
}

/// A step record from distances computed elsewhere (on the device).
pub(crate) fn record_with(
    step: usize,
    loss: f32,
    logits: &[f32],
    label: usize,
    target: Option<usize>,
    linf: f32,
    l2: f32,
) -> StepRecord {
    StepRecord {
        step,
        loss,
        pred: crate::array::argmax(logits).unwrap_or(0),
        margin: success_margin(logits, label, target),
        linf,
        l2,
    }
}

/// How far a running attack has got, reported between steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// The attack (or AutoAttack's component) running now.
    pub stage: &'static str,
    /// The fraction of the whole run done, in [0, 1].
    pub done: f32,
}

/// Runs the attack `cfg` on `x` (`[N, C, H, W]` in [0, 1]). `labels` are the true classes; when
/// `None`, the clean predictions are used.
pub fn run(
    engine: &mut dyn Engine,
    x: &Array,
    labels: Option<&[usize]>,
    cfg: &AttackConfig,
    cancel: &Cancel,
) -> Result<AttackResult, AttackError> {
    run_with_progress(engine, x, labels, cfg, cancel, &|_| {})
}

/// [`run`], calling `progress` between steps of the iterative attacks (BIM, PGD, MI-FGSM, APGD,
/// Square, AutoAttack).
pub fn run_with_progress(
    engine: &mut dyn Engine,
    x: &Array,
    labels: Option<&[usize]>,
    cfg: &AttackConfig,
    cancel: &Cancel,
    progress: &dyn Fn(Progress),
) -> Result<AttackResult, AttackError> {
    cfg.validate()?;
    let opts = cfg.forward_options();
    let clean = engine.forward(x, &opts)?;
    let k = clean.logits.example_len();
    let labels: Vec<usize> = match labels {
        Some(l) => {
            if l.len() != x.batch() {
                return Err(AttackError::Config(format!(
                    "{} labels for {} images",
                    l.len(),
                    x.batch()
                )));
            }
            if let Some(bad) = l.iter().find(|&&c| c >= k) {
                return Err(AttackError::Config(format!(
                    "label {bad} is out of range: the model has {k} classes"
                )));
            }
            l.to_vec()
        }
        None => crate::engine::predictions(&clean.logits),
    };
    let mut rngs: Vec<_> = (0..x.batch())
        .map(|i| target::example_rng(cfg.seed, x.example(i)))
        .collect();
    let targets = target::choose_targets(&cfg.target, &labels, &clean.logits, &mut rngs)?;
    let ctx = Context {
        x,
        labels: &labels,
        targets: targets.as_deref(),
        cfg,
        opts: &opts,
        cancel,
        progress,
    };
    let mut stages = Vec::new();
    let mut found = Vec::new();
    let (x_adv, history) = match cfg.kind {
        AttackKind::Fgsm => fgsm::run(engine, &ctx)?,
        AttackKind::Bim | AttackKind::Pgd => pgd::run(engine, &ctx, &mut rngs)?,
        AttackKind::MiFgsm => mifgsm::run(engine, &ctx, &mut rngs)?,
        AttackKind::Cw => cw::run(engine, &ctx)?,
        AttackKind::Deepfool => deepfool::run(engine, &ctx)?,
        AttackKind::ApgdCe | AttackKind::ApgdDlr | AttackKind::ApgdT => {
            let out = apgd::run(engine, &ctx, &clean.logits, &mut rngs)?;
            found = out.diagnostics;
            (out.x_adv, out.history)
        }
        AttackKind::Square => square::run(engine, &ctx, &mut rngs)?,
        AttackKind::AutoAttack | AttackKind::AutoAttackRand => {
            let out = autoattack::run(engine, &ctx, &clean.logits)?;
            stages = out.stages;
            found = out.diagnostics;
            (out.x_adv, out.history)
        }
    };
    Ok(AttackResult {
        x_adv,
        labels,
        targets,
        history,
        stages,
        diagnostics: found,
    })
}

/// What every attack implementation receives.
pub struct Context<'a> {
    /// Clean images.
    pub x: &'a Array,
    /// True labels.
    pub labels: &'a [usize],
    /// Targets, for targeted attacks.
    pub targets: Option<&'a [usize]>,
    /// Settings.
    pub cfg: &'a AttackConfig,
    /// Forward options (denoise bypass).
    pub opts: &'a ForwardOptions,
    /// Cancellation flag.
    pub cancel: &'a Cancel,
    /// Called between steps of the long attacks.
    pub progress: &'a dyn Fn(Progress),
}

impl Context<'_> {
    /// The cross-entropy loss the gradient attacks follow, and the direction to move along its
    /// gradient: +1 (ascend, untargeted) or −1 (descend toward the target).
    pub fn ce_loss(&self) -> (crate::engine::Loss, f32) {
        match self.targets {
            Some(t) => (
                crate::engine::Loss::CrossEntropy {
                    classes: t.to_vec(),
                },
                -1.0,
            ),
            None => (
                crate::engine::Loss::CrossEntropy {
                    classes: self.labels.to_vec(),
                },
                1.0,
            ),
        }
    }

    /// The target of example `i`, if any.
    pub fn target(&self, i: usize) -> Option<usize> {
        self.targets.map(|t| t[i])
    }

    /// Whether logits for example `i` count as a success.
    pub fn succeeded(&self, i: usize, logits: &[f32]) -> bool {
        success_margin(logits, self.labels[i], self.target(i)) < 0.0
    }
}
