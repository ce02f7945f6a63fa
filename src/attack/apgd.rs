//! Auto-PGD (Croce & Hein, ICML 2020), L∞ and L2, as AutoAttack runs it: step size 2ε per
//! image, momentum 0.75 (none on the first step), step-size checks after a shrinking window of
//! steps (for 100 steps: after steps 22, 41, 57, 70, 80, 87, 93 and 99) that halve the step and
//! restart from the best point where the loss oscillated or stalled, and restarts that only
//! re-attack images not yet fooled.
//!
//! Losses: cross-entropy (`apgd-ce`), DLR (`apgd-dlr`) and targeted DLR towards the classes
//! ranked 2nd, 3rd, … by the clean logits (`apgd-t`, success = any misclassification, as in
//! AutoAttack). With a user target (`--target`), success means reaching that class and the loss
//! is −CE(z, t) (`apgd-ce`) or the targeted DLR towards t (`apgd-dlr`, `apgd-t`).
//!
//! Every quantity is per image (step size, counters, best point), so an image's result never
//! depends on its batch. An image that was fooled returns the latest fooling iterate; one that
//! was not returns its highest-loss point. Where AutoAttack differs from the paper, this follows
//! AutoAttack's code: the oscillation count uses `≤ ρ·k`, and the first step of the first window
//! is compared with AutoAttack's `loss_steps[-1]`, an empty (zero) slot unless the run has one step. One deliberate deviation: with EOT the loss used by the
//! checks is the mean over the samples, not the last sample's.

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::apgd_host::HostSession;
use super::diagnostics::{Diagnostic, Flag};
use super::project::{l2, linf};
use super::{AttackError, AttackKind, Context, Norm, Progress, StepRecord, record_with};
use crate::array::Array;
use crate::engine::{ApgdSession, ApgdSpec, Engine, ForwardOptions, Loss, Probe};
use crate::model::normal;

/// The steps after which APGD checks its step size, for a run of `steps` steps (1-based: 22
/// means after the 22nd step).
pub fn checkpoints(steps: usize) -> Vec<usize> {
    let (mut window, min, decrease) = windows(steps);
    let mut out = Vec::new();
    let mut at = window;
    while at <= steps {
        out.push(at);
        window = window.saturating_sub(decrease).max(min);
        at += window;
    }
    out
}

/// The first window, the smallest window and the decrease per check for `steps` steps.
fn windows(steps: usize) -> (usize, usize, usize) {
    let part = |f: f64| ((f * steps as f64).floor() as usize).max(1);
    (part(0.22), part(0.06), part(0.03))
}

/// What APGD maximises for one run, and what counts as success.
#[derive(Clone, Debug)]
pub struct Objective {
    /// The loss; its value is maximised (`sign` times the engine's loss).
    pub loss: Loss,
    /// +1 to ascend the engine's loss, −1 to descend it.
    pub sign: f32,
    /// The class each image must reach to count as fooled (`None`: any wrong class).
    pub reach: Option<Vec<usize>>,
}

impl Objective {
    fn succeeded(&self, i: usize, labels: &[usize], logits: &[f32]) -> bool {
        let pred = crate::array::argmax(logits).unwrap_or(0);
        match &self.reach {
            Some(t) => pred == t[i],
            None => pred != labels[i],
        }
    }

    fn select(&self, idx: &[usize], k: usize) -> Objective {
        let pick = |v: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let loss = self.loss.select(idx, k);
        Objective {
            loss,
            sign: self.sign,
            reach: self.reach.as_deref().map(pick),
        }
    }
}

/// The settings of one APGD run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Budget.
    pub eps: f32,
    /// Norm.
    pub norm: Norm,
    /// Steps.
    pub steps: usize,
    /// Oscillation threshold ρ.
    pub rho: f32,
    /// Gradient samples averaged per step.
    pub eot: usize,
}

/// One APGD run from given start points.
#[derive(Clone, Debug)]
pub struct SingleRun {
    /// Per image: the latest fooling iterate, or the highest-loss point when none fooled.
    pub x_adv: Array,
    /// Per image: whether some iterate (the start included) fooled the model.
    pub fooled: Vec<bool>,
    /// Per image: the highest loss reached.
    pub best_loss: Vec<f32>,
    /// Per image: the loss after every step (`steps` values; the start is in `history`).
    pub loss_trace: Vec<Vec<f32>>,
    /// Per image: the step size at the end.
    pub step_size: Vec<f32>,
    /// Per image: the history, the start point first.
    pub history: Vec<Vec<StepRecord>>,
    /// Per image: the L1 norm of the gradient at the start point.
    pub start_grad_l1: Vec<f32>,
}

/// The random start AutoAttack uses: L∞ `x + ε·u/‖u‖∞` with `u ~ U[−1, 1]ⁿ` (one coordinate
/// exactly at ±ε); L2 `x + ε·n/‖n‖₂` with `n ~ N(0, I)`; both clipped to [0, 1].
pub fn random_start(x: &[f32], eps: f32, norm: Norm, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let u: Vec<f32> = match norm {
        Norm::Linf => x.iter().map(|_| rng.random_range(-1.0f32..=1.0)).collect(),
        Norm::L2 => x.iter().map(|_| normal(rng)).collect(),
    };
    let scale = match norm {
        Norm::Linf => linf(&u),
        Norm::L2 => l2(&u),
    }
    .max(f32::MIN_POSITIVE);
    x.iter()
        .zip(&u)
        .map(|(&v, &d)| (v + eps * d / scale).clamp(0.0, 1.0))
        .collect()
}

/// The images one APGD run starts from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// Clean images.
    pub x: &'a Array,
    /// True labels.
    pub labels: &'a [usize],
    /// Start points (in the ε ball around `x` and in [0, 1]).
    pub start: &'a Array,
}

/// Runs APGD once on every image of `inp.x` from `inp.start`; `progress(steps done)` after every
/// step. The points and gradients stay on the engine's device when it offers an
/// [`ApgdSession`] (single-sample gradients only), else on the host.
pub fn single_run(
    engine: &mut dyn Engine,
    inp: Inputs<'_>,
    obj: &Objective,
    s: &RunSettings,
    opts: &ForwardOptions,
    cancel: &crate::cancel::Cancel,
    progress: &mut dyn FnMut(usize),
) -> Result<SingleRun, AttackError> {
    let spec = ApgdSpec {
        eps: s.eps,
        l2: s.norm == Norm::L2,
    };
    if s.eot <= 1 {
        let device = engine.apgd_session(inp.x, inp.start, &obj.loss, obj.sign, spec, opts);
        if let Some(session) = device {
            return drive(&mut *session?, inp, obj, s, cancel, progress);
        }
    }
    let budget = (s.eps, s.norm);
    let mut host = HostSession::new(
        engine, inp.x, inp.start, &obj.loss, obj.sign, s.eot, budget, opts,
    );
    drive(&mut host, inp, obj, s, cancel, progress)
}

/// APGD's schedule, wherever its vectors live: the one implementation of the step sizes,
/// momentum weights, best-point tracking and checkpoints.
fn drive(
    session: &mut dyn ApgdSession,
    inp: Inputs<'_>,
    obj: &Objective,
    s: &RunSettings,
    cancel: &crate::cancel::Cancel,
    progress: &mut dyn FnMut(usize),
) -> Result<SingleRun, AttackError> {
    let Inputs { x, labels, .. } = inp;
    let n = x.batch();
    let target = |i: usize| obj.reach.as_ref().map(|t| t[i]);
    let rec = |step: usize, p: &Probe, i: usize| {
        let logits = p.logits.example(i);
        record_with(
            step,
            p.loss[i],
            logits,
            labels[i],
            target(i),
            p.linf[i],
            p.l2[i],
        )
    };
    let mut probe = session.evaluate()?;
    let start_grad_l1 = session.grad_l1()?;
    let mut history: Vec<Vec<StepRecord>> = (0..n)
        .map(|i| {
            let mut h = Vec::with_capacity(s.steps + 1);
            h.push(rec(0, &probe, i));
            h
        })
        .collect();
    let mut fooled: Vec<bool> = (0..n)
        .map(|i| obj.succeeded(i, labels, probe.logits.example(i)))
        .collect();
    session.keep(&vec![true; n], &fooled)?;
    let mut best_loss = probe.loss.clone();
    let mut eta = vec![2.0 * s.eps; n];
    let mut trace: Vec<Vec<f32>> = vec![Vec::with_capacity(s.steps); n];
    let (mut window, min_window, decrease) = windows(s.steps);
    let mut since_check = 0;
    let mut best_at_last_check = best_loss.clone();
    let mut halved_at_last_check = vec![true; n];
    for it in 0..s.steps {
        cancel.check()?;
        let a = if it == 0 { 1.0 } else { 0.75 };
        session.step(&eta, a)?;
        probe = session.evaluate()?;
        let mut improved = vec![false; n];
        let mut fooled_now = vec![false; n];
        for i in 0..n {
            if obj.succeeded(i, labels, probe.logits.example(i)) {
                fooled[i] = true;
                fooled_now[i] = true;
            }
            trace[i].push(probe.loss[i]);
            history[i].push(rec(it + 1, &probe, i));
            if probe.loss[i] > best_loss[i] {
                best_loss[i] = probe.loss[i];
                improved[i] = true;
            }
        }
        session.keep(&improved, &fooled_now)?;
        since_check += 1;
        if since_check == window {
            let mut halve = vec![false; n];
            for i in 0..n {
                let t = &trace[i];
                // AutoAttack reads `loss_steps[j - 1]`, which for j = 0 wraps to the last slot:
                // still zero, unless this is the last step (a one-step run).
                let before = |j: usize| match j {
                    0 => t.get(s.steps - 1).copied().unwrap_or(0.0),
                    _ => t[j - 1],
                };
                let increases = (it + 1 - window..=it).filter(|&j| t[j] > before(j)).count();
                let oscillates = increases as f32 <= s.rho * window as f32;
                let stalled = !halved_at_last_check[i] && best_at_last_check[i] >= best_loss[i];
                halve[i] = oscillates || stalled;
                if halve[i] {
                    eta[i] /= 2.0;
                }
                halved_at_last_check[i] = halve[i];
                best_at_last_check[i] = best_loss[i];
            }
            session.restore(&halve)?;
            window = window.saturating_sub(decrease).max(min_window);
            since_check = 0;
        }
        progress(it + 1);
    }
    let x_adv = session.finish(&fooled)?;
    Ok(SingleRun {
        x_adv,
        fooled,
        best_loss,
        loss_trace: trace,
        step_size: eta,
        history,
        start_grad_l1,
    })
}

/// What an APGD attack (all restarts and targets) produced.
pub struct Outcome {
    /// Adversarial images.
    pub x_adv: Array,
    /// Per-example history of the run that produced the returned point.
    pub history: Vec<Vec<StepRecord>>,
    /// Flags raised along the way (zero or non-finite gradients at the start).
    pub diagnostics: Vec<Diagnostic>,
}

/// The APGD defaults: 100 steps.
pub const DEFAULT_STEPS: usize = 100;

/// Runs the APGD variant `ctx.cfg.kind` (`apgd-ce`, `apgd-dlr`, `apgd-t`) with its restarts.
/// `clean_logits` rank the targets of `apgd-t`; `rngs` are the per-example random streams.
pub fn run(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
    clean_logits: &Array,
    rngs: &mut [ChaCha8Rng],
) -> Result<Outcome, AttackError> {
    let cfg = ctx.cfg;
    let n = ctx.x.batch();
    let k = clean_logits.example_len();
    let user_target = ctx.targets.map(<[usize]>::to_vec);
    let settings = RunSettings {
        eps: cfg.eps,
        norm: cfg.norm,
        steps: cfg.steps.unwrap_or(DEFAULT_STEPS),
        rho: cfg.apgd.rho,
        eot: cfg.apgd.eot,
    };
    let labels = ctx.labels.to_vec();
    // The objectives, in the order they are tried.
    let objectives: Vec<Objective> = match (cfg.kind, user_target) {
        (AttackKind::ApgdCe, None) => vec![Objective {
            loss: Loss::CrossEntropy { classes: labels },
            sign: 1.0,
            reach: None,
        }],
        (AttackKind::ApgdCe, Some(t)) => vec![Objective {
            loss: Loss::CrossEntropy { classes: t.clone() },
            sign: -1.0,
            reach: Some(t),
        }],
        (AttackKind::ApgdDlr, None) => {
            need_classes(k, 3, "apgd-dlr")?;
            vec![Objective {
                loss: Loss::Dlr { classes: labels },
                sign: 1.0,
                reach: None,
            }]
        }
        (AttackKind::ApgdDlr | AttackKind::ApgdT, Some(t)) => {
            need_classes(k, 4, cfg.kind.id())?;
            vec![Objective {
                loss: Loss::DlrTargeted {
                    classes: labels,
                    targets: t.clone(),
                },
                sign: 1.0,
                reach: Some(t),
            }]
        }
        (AttackKind::ApgdT, None) => {
            need_classes(k, 4, "apgd-t")?;
            let ranked: Vec<Vec<usize>> =
                (0..n).map(|i| ranking(clean_logits.example(i))).collect();
            (1..=cfg.apgd.targets.min(k - 1))
                .map(|r| Objective {
                    loss: Loss::DlrTargeted {
                        classes: labels.clone(),
                        targets: ranked.iter().map(|o| o[r]).collect(),
                    },
                    sign: 1.0,
                    reach: None,
                })
                .collect()
        }
        (other, _) => {
            return Err(AttackError::Config(format!(
                "{other} is not an APGD attack"
            )));
        }
    };
    let runs = objectives.len() * cfg.restarts;
    let mut done_runs = 0;
    let mut state = State::new(ctx.x, settings.steps);
    for obj in &objectives {
        for _ in 0..cfg.restarts {
            let active: Vec<usize> = (0..n).filter(|&i| !state.fooled[i]).collect();
            if active.is_empty() {
                break;
            }
            let base = done_runs;
            let mut report = |step: usize| {
                let done = (base * settings.steps + step) as f32 / (runs * settings.steps) as f32;
                (ctx.progress)(Progress {
                    stage: cfg.kind.id(),
                    done,
                });
            };
            let run = restart(engine, ctx, &active, obj, &settings, rngs, k, &mut report)?;
            state.absorb(&active, run);
            done_runs += 1;
        }
    }
    (ctx.progress)(Progress {
        stage: cfg.kind.id(),
        done: 1.0,
    });
    let diagnostics = state.diagnostics();
    Ok(Outcome {
        x_adv: state.x_adv,
        history: state.history,
        diagnostics,
    })
}

/// One restart on the images `active`: fresh random starts from their own streams.
#[allow(clippy::too_many_arguments)]
fn restart(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
    active: &[usize],
    obj: &Objective,
    settings: &RunSettings,
    rngs: &mut [ChaCha8Rng],
    k: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<SingleRun, AttackError> {
    let x = ctx.x.select(active);
    let mut start = x.clone();
    for (j, &i) in active.iter().enumerate() {
        let s = random_start(ctx.x.example(i), settings.eps, settings.norm, &mut rngs[i]);
        start.example_mut(j).copy_from_slice(&s);
    }
    let labels: Vec<usize> = active.iter().map(|&i| ctx.labels[i]).collect();
    let sub = obj.select(active, k);
    let inp = Inputs {
        x: &x,
        labels: &labels,
        start: &start,
    };
    single_run(engine, inp, &sub, settings, ctx.opts, ctx.cancel, progress)
}

/// The best point of each image over restarts and targets.
struct State {
    x_adv: Array,
    fooled: Vec<bool>,
    best_loss: Vec<f32>,
    history: Vec<Vec<StepRecord>>,
    zero_grad: usize,
    non_finite: usize,
    checked: usize,
}

impl State {
    fn new(x: &Array, steps: usize) -> Self {
        let n = x.batch();
        Self {
            x_adv: x.clone(),
            fooled: vec![false; n],
            best_loss: vec![f32::NEG_INFINITY; n],
            history: vec![Vec::with_capacity(steps + 1); n],
            zero_grad: 0,
            non_finite: 0,
            checked: 0,
        }
    }

    fn absorb(&mut self, active: &[usize], run: SingleRun) {
        let first = self.checked == 0;
        for (j, &i) in active.iter().enumerate() {
            if first {
                self.checked += 1;
                let g = run.start_grad_l1[j];
                if !g.is_finite() {
                    self.non_finite += 1;
                } else if g == 0.0 {
                    self.zero_grad += 1;
                }
            }
            let better = run.fooled[j] || run.best_loss[j] > self.best_loss[i];
            if better {
                self.fooled[i] = run.fooled[j];
                self.best_loss[i] = run.best_loss[j];
                self.x_adv
                    .example_mut(i)
                    .copy_from_slice(run.x_adv.example(j));
                self.history[i] = run.history[j].clone();
            }
        }
    }

    fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        if self.zero_grad > 0 {
            out.push(Diagnostic {
                flag: Flag::ZeroGradient,
                images: self.zero_grad,
                of: self.checked,
                detail: format!(
                    "‖∇loss‖₁ = 0 at the random start for {} of {} images",
                    self.zero_grad, self.checked
                ),
            });
        }
        if self.non_finite > 0 {
            out.push(Diagnostic {
                flag: Flag::NonFinite,
                images: self.non_finite,
                of: self.checked,
                detail: format!(
                    "non-finite gradient at the random start for {} of {} images",
                    self.non_finite, self.checked
                ),
            });
        }
        out
    }
}

/// Class indices by decreasing logit.
fn ranking(z: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
    order
}

fn need_classes(k: usize, min: usize, attack: &str) -> Result<(), AttackError> {
    if k < min {
        let loss = if min == 3 { "DLR" } else { "targeted DLR" };
        return Err(AttackError::Config(format!(
            "{attack} uses the {loss} loss, which needs at least {min} classes; this model has \
             {k}. Use apgd-ce instead."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_match_autoattack() {
        assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
        assert_eq!(checkpoints(200), vec![44, 82, 114, 140, 160, 174, 186, 198]);
        assert_eq!(checkpoints(10), (2..=10).collect::<Vec<_>>());
    }
}
