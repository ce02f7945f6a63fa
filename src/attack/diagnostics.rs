//! Signs that an attack failed rather than the model having won: AutoAttack's checks and Pintor
//! et al.'s indicators of attack failure (NeurIPS 2022), each with the numbers behind it.

use serde::{Deserialize, Serialize};

use super::{AttackConfig, AttackError, AttackKind, AttackResult, Norm, StepRecord};
use crate::array::Array;
use crate::cancel::Cancel;
use crate::engine::{Engine, Loss};

/// One kind of warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The loss gradient is exactly zero for some images at the start point.
    ZeroGradient,
    /// The gradient or the logits contain NaN or infinity.
    NonFinite,
    /// The attack's loss was still improving over its last steps.
    NotConverged,
    /// Repeated forward passes on the same input give different outputs.
    Randomised,
    /// The model's outputs look like probabilities, not logits.
    SoftmaxOutput,
    /// Square (black-box) fooled images that the gradient attacks before it did not.
    SquareBeatsWhiteBox,
    /// An iterate on the attack's path was adversarial but the returned point is not.
    SilentSuccess,
    /// The attack's own forward pass found the returned point adversarial, but a fresh forward
    /// pass of the model on it does not: what the attack optimised against is not the model
    /// that is evaluated.
    TransferFailure,
    /// Images survive even without a budget, which a working attack should not allow.
    UnboundedFailure,
}

impl Flag {
    /// Identifier used in records.
    pub fn id(self) -> &'static str {
        match self {
            Flag::ZeroGradient => "zero_gradient",
            Flag::NonFinite => "non_finite",
            Flag::NotConverged => "not_converged",
            Flag::Randomised => "randomised",
            Flag::SoftmaxOutput => "softmax_output",
            Flag::SquareBeatsWhiteBox => "square_beats_white_box",
            Flag::SilentSuccess => "silent_success",
            Flag::TransferFailure => "transfer_failure",
            Flag::UnboundedFailure => "unbounded_failure",
        }
    }

    /// What the flag means and what to try, for tooltips and CLI warnings.
    pub fn explanation(self) -> &'static str {
        match self {
            Flag::ZeroGradient => {
                "the loss gradient is exactly zero at the start point for some images: gradients \
                 are masked (quantisation, a saturated or non-differentiable layer), so gradient \
                 attacks cannot move. Try Square (black-box) or BPDA."
            }
            Flag::NonFinite => {
                "NaN or infinite values in the logits or gradient: the numbers the attack follows \
                 are meaningless. Check the model's inputs and its numerical stability."
            }
            Flag::NotConverged => {
                "the attack's loss was still rising over its last steps: more steps (or a larger \
                 step size) would likely fool more images."
            }
            Flag::Randomised => {
                "the model gives different outputs for the same input: it is randomised, so one \
                 gradient is noise. Use EOT (autoattack-rand) and report accuracy over repeated \
                 draws."
            }
            Flag::SoftmaxOutput => {
                "the outputs look like probabilities (in [0, 1], rows summing to 1), not logits: \
                 cross-entropy on them has vanishing gradients. Remove the final softmax."
            }
            Flag::SquareBeatsWhiteBox => {
                "the black-box Square attack fooled images the white-box attacks could not: a \
                 sign of gradient masking. Try more Square queries and adaptive attacks."
            }
            Flag::SilentSuccess => {
                "the attack passed through an adversarial point but returned one that is not: \
                 the attack should keep the best adversarial iterate."
            }
            Flag::TransferFailure => {
                "the attack's own forward pass found the image it returned adversarial, but a \
                 fresh forward pass of the model classifies it correctly (targeted: not as the \
                 target). What the attack optimised against is not the model evaluated: a random \
                 defence drew differently, an approximation (BPDA, a surrogate) stood in for the \
                 real forward pass, or two passes differ numerically. Use EOT over the \
                 randomness (autoattack-rand, --eot), attack the real forward pass, and trust \
                 the re-predicted accuracy, not the attack's."
            }
            Flag::UnboundedFailure => {
                "images stay correctly classified even with an unlimited budget: the attack, not \
                 the model, is failing (masked gradients, a bug, a broken loss)."
            }
        }
    }
}

/// A raised flag with the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Which check.
    pub flag: Flag,
    /// Images the check found affected.
    pub images: usize,
    /// Images the check looked at.
    pub of: usize,
    /// The measurement, in words and numbers.
    pub detail: String,
}

impl Diagnostic {
    /// The CLI's one-line warning: `warning: <flag id>: <detail> — <explanation>`.
    pub fn warning_line(&self) -> String {
        format!(
            "warning: {}: {} — {}",
            self.flag.id(),
            self.detail,
            self.flag.explanation()
        )
    }
}

/// Adds the flags of one batch to those of earlier batches: counts are summed, the first
/// non-empty detail is kept (it describes the batch it was measured on). Checks that passed
/// (`images == 0`, kept with [`DiagnoseOptions::keep_passed`]) count towards `of` only.
pub fn merge_batches(into: &mut Vec<Diagnostic>, more: Vec<Diagnostic>) {
    for d in more {
        match into.iter_mut().find(|e| e.flag == d.flag) {
            Some(e) => {
                if e.images == 0 && d.images > 0 {
                    e.detail = d.detail;
                }
                e.images += d.images;
                e.of += d.of;
            }
            None => into.push(d),
        }
    }
}

/// What [`diagnose`] checks beyond the cheap tests.
#[derive(Clone, Debug)]
pub struct DiagnoseOptions {
    /// Re-attack up to this many images that survived the attack at an unlimited budget
    /// (Pintor et al.'s unconstrained attack); `None` skips the check, which costs a second run.
    pub unbounded: Option<usize>,
    /// Also return the checks that found nothing, with `images == 0` and `of` the images they
    /// looked at, so that counts can be summed over batches ([`merge_batches`]).
    pub keep_passed: bool,
    /// Cancels the unbounded re-run.
    pub cancel: Cancel,
}

impl Default for DiagnoseOptions {
    fn default() -> Self {
        Self {
            unbounded: Some(16),
            keep_passed: false,
            cancel: Cancel::new(),
        }
    }
}

/// The tolerance AutoAttack's checks use for probabilities (in [0, 1], rows summing to 1).
const PROB_TOL: f32 = 1e-5;
/// Repeated forward passes of the randomness check.
const PASSES: usize = 5;
/// The largest distance between L2-normalised logits of two passes that still counts as equal.
const SAME_LOGITS: f32 = 1e-4;
/// Pintor et al.'s window (last steps looked at) and tolerance for incomplete optimisation.
const CONVERGE_WINDOW: usize = 10;
const CONVERGE_TOL: f32 = 0.05;

/// Runs every check on the attack `result` of `cfg` on the clean images `x` and returns the
/// flags raised: those the attack recorded itself (`result.diagnostics`) followed by softmax
/// output, randomness, non-finite logits, zero gradient (gradient attacks that do not check it
/// themselves), silent success, transfer failure, incomplete optimisation and, with
/// `opts.unbounded`, failure at an unlimited budget. Every flag says how many images it affects
/// out of how many it looked at.
///
/// One fresh forward pass of the returned images decides what counts as fooled (the checks
/// share it, so transfer failure costs no pass of its own); silent success and transfer failure
/// compare it with the attack's own records and split the images the attack fooled by its own
/// account but this pass does not: transfer failure when the attack vouched for the returned
/// point itself (its record of that point has margin < 0), silent success when only some other
/// point on its path was adversarial.
pub fn diagnose(
    engine: &mut dyn Engine,
    x: &Array,
    result: &AttackResult,
    cfg: &AttackConfig,
    opts: &DiagnoseOptions,
) -> Result<Vec<Diagnostic>, AttackError> {
    let fwd = cfg.forward_options();
    let n = x.batch();
    let clean = engine.forward(x, &fwd)?;
    let adv = engine.forward(&result.x_adv, &fwd)?;
    let success: Vec<bool> = (0..n)
        .map(|i| succeeded(result, i, adv.logits.example(i)))
        .collect();
    let mut out = result.diagnostics.clone();
    let mut checks = vec![softmax_output(&clean.logits)];
    checks.push(randomised(engine, x, &clean.logits, &result.labels, cfg)?);
    checks.push(non_finite(&clean.logits, &adv.logits));
    if needs_gradient_check(cfg.kind) {
        let (zero, bad) = zero_gradient(engine, x, &result.labels, &fwd)?;
        checks.push(zero);
        checks.push(bad);
    }
    let claims: Vec<Option<&StepRecord>> = result
        .history
        .iter()
        .map(|h| claimed(cfg.kind, h))
        .collect();
    checks.push(silent_success(result, &success, &claims));
    checks.push(transfer_failure(result, &adv.logits, &success, &claims));
    if let Some(dir) = ascent_direction(cfg, result) {
        checks.push(not_converged(&result.history, &success, dir));
    }
    if let Some(m) = opts.unbounded
        && let Some(d) = unbounded(engine, x, result, cfg, &success, m, &opts.cancel)?
    {
        checks.push(d);
    }
    for d in checks {
        if d.images == 0 && !opts.keep_passed {
            continue;
        }
        match out.iter_mut().find(|e| e.flag == d.flag) {
            // The attack's own measurement and ours look at the same images: keep the larger
            // count and both details.
            Some(e) => {
                if d.images > 0 {
                    e.images = e.images.max(d.images);
                    e.of = e.of.max(d.of);
                    e.detail = format!("{}; {}", e.detail, d.detail);
                }
            }
            None => out.push(d),
        }
    }
    Ok(out)
}

/// Whether re-predicted logits of image `i` count as the attack's success.
fn succeeded(result: &AttackResult, i: usize, logits: &[f32]) -> bool {
    let pred = crate::array::argmax(logits).unwrap_or(0);
    match &result.targets {
        Some(t) => pred == t[i],
        None => pred != result.labels[i],
    }
}

fn diagnostic(flag: Flag, images: usize, of: usize, detail: String) -> Diagnostic {
    Diagnostic {
        flag,
        images,
        of,
        detail,
    }
}

/// AutoAttack's softmax check: every output in [0, 1] and every row summing to 1.
fn softmax_output(logits: &Array) -> Diagnostic {
    let n = logits.batch();
    let (lo, hi) = logits
        .data()
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let max_dev = (0..n)
        .map(|i| (logits.example(i).iter().sum::<f32>() - 1.0).abs())
        .fold(
            0.0f32,
            |a, d| if d.is_nan() { f32::INFINITY } else { a.max(d) },
        );
    let probs = n > 0 && lo > -PROB_TOL && hi < 1.0 + PROB_TOL && max_dev <= PROB_TOL;
    diagnostic(
        Flag::SoftmaxOutput,
        if probs { n } else { 0 },
        n,
        format!(
            "outputs in [{lo:.3e}, {hi:.6}], largest |row sum − 1| {max_dev:.1e}, over {n} images"
        ),
    )
}

/// AutoAttack's randomness check: five forward passes of the clean images; the number of correct
/// predictions differs, or two passes' L2-normalised logits are further apart than 1e−4.
fn randomised(
    engine: &mut dyn Engine,
    x: &Array,
    first: &Array,
    labels: &[usize],
    cfg: &AttackConfig,
) -> Result<Diagnostic, AttackError> {
    let n = x.batch();
    let mut passes = vec![normalised(first)];
    for _ in 1..PASSES {
        passes.push(normalised(
            &engine.forward(x, &cfg.forward_options())?.logits,
        ));
    }
    let correct: Vec<usize> = passes
        .iter()
        .map(|z| {
            (0..n)
                .filter(|&i| crate::array::argmax(&z[i]) == Some(labels[i]))
                .count()
        })
        .collect();
    // Per image, the largest distance between two passes' normalised logits. NaN (non-finite
    // logits) is the non-finite check's business, not randomness.
    let spread: Vec<f32> = (0..n)
        .map(|i| {
            let rows: Vec<&[f32]> = passes.iter().map(|p| p[i].as_slice()).collect();
            let mut d_i = 0.0f32;
            for (a, ra) in rows.iter().enumerate() {
                for rb in &rows[a + 1..] {
                    let d = ra
                        .iter()
                        .zip(*rb)
                        .map(|(p, q)| (p - q) * (p - q))
                        .sum::<f32>()
                        .sqrt();
                    if !d.is_nan() {
                        d_i = d_i.max(d);
                    }
                }
            }
            d_i
        })
        .collect();
    let worst = spread.iter().copied().fold(0.0f32, f32::max);
    let affected = spread.iter().filter(|&&d| d > SAME_LOGITS).count();
    let counts_differ = correct.iter().any(|&c| c != correct[0]);
    let raised = counts_differ || worst > SAME_LOGITS;
    let counts: Vec<String> = correct.iter().map(ToString::to_string).collect();
    Ok(diagnostic(
        Flag::Randomised,
        if raised { affected.max(1) } else { 0 },
        n,
        format!(
            "{PASSES} forward passes of the clean images: correct {} of {n}; largest distance \
             between L2-normalised logits {worst:.2e} (threshold {SAME_LOGITS:.0e})",
            counts.join("/")
        ),
    ))
}

/// Each row of `logits` divided by its L2 norm.
fn normalised(logits: &Array) -> Vec<Vec<f32>> {
    (0..logits.batch())
        .map(|i| {
            let z = logits.example(i);
            let norm = z.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            z.iter().map(|v| v / norm).collect()
        })
        .collect()
}

/// Images with NaN or infinite logits, clean or adversarial.
fn non_finite(clean: &Array, adv: &Array) -> Diagnostic {
    let n = clean.batch();
    let bad = |a: &Array, i: usize| a.example(i).iter().any(|v| !v.is_finite());
    let (c, a) = (
        (0..n).filter(|&i| bad(clean, i)).count(),
        (0..n).filter(|&i| bad(adv, i)).count(),
    );
    let images = (0..n).filter(|&i| bad(clean, i) || bad(adv, i)).count();
    diagnostic(
        Flag::NonFinite,
        images,
        n,
        format!("non-finite logits for {c} clean and {a} adversarial images of {n}"),
    )
}

/// Whether the attack follows gradients and does not check them at its start itself (APGD and
/// AutoAttack do; Square uses none).
fn needs_gradient_check(kind: AttackKind) -> bool {
    !(kind.is_apgd()
        || matches!(
            kind,
            AttackKind::Square | AttackKind::AutoAttack | AttackKind::AutoAttackRand
        ))
}

/// One gradient of the cross-entropy on the labels at the clean images: images whose gradient is
/// exactly zero (‖g‖₁ = 0), and those whose gradient is not finite.
fn zero_gradient(
    engine: &mut dyn Engine,
    x: &Array,
    labels: &[usize],
    fwd: &crate::engine::ForwardOptions,
) -> Result<(Diagnostic, Diagnostic), AttackError> {
    let n = x.batch();
    let loss = Loss::CrossEntropy {
        classes: labels.to_vec(),
    };
    let g = engine.input_grad(x, &loss, fwd)?;
    let l1: Vec<f32> = (0..n)
        .map(|i| g.grad.example(i).iter().map(|v| v.abs()).sum())
        .collect();
    let bad = l1.iter().filter(|v| !v.is_finite()).count();
    let zero = l1.iter().filter(|&&v| v == 0.0).count();
    Ok((
        diagnostic(
            Flag::ZeroGradient,
            zero,
            n,
            format!("‖∇CE‖₁ = 0 at the clean image for {zero} of {n} images"),
        ),
        diagnostic(
            Flag::NonFinite,
            bad,
            n,
            format!("non-finite cross-entropy gradient at the clean image for {bad} of {n} images"),
        ),
    ))
}

/// The record in which the attack itself judged the point it returned adversarial (margin < 0),
/// or `None` when by its own account that point is not adversarial. Which record describes the
/// returned point depends on what the attack returns:
/// - its last iterate, recorded last: FGSM, BIM, PGD (a restart's whole history travels with its
///   point), MI-FGSM, DeepFool (which stops at its first fooling point) and Square (which
///   records only the points it accepts and stops once fooled);
/// - its latest fooling iterate: APGD, and AutoAttack, which keeps the history of the component
///   whose point it returns;
/// - the fooling iterate of smallest L2 distance (the first of equals): C&W.
fn claimed(kind: AttackKind, history: &[StepRecord]) -> Option<&StepRecord> {
    let fooling = || history.iter().filter(|s| s.margin < 0.0);
    match kind {
        AttackKind::Fgsm
        | AttackKind::Bim
        | AttackKind::Pgd
        | AttackKind::MiFgsm
        | AttackKind::Deepfool
        | AttackKind::Square => history.last().filter(|s| s.margin < 0.0),
        AttackKind::ApgdCe
        | AttackKind::ApgdDlr
        | AttackKind::ApgdT
        | AttackKind::AutoAttack
        | AttackKind::AutoAttackRand => fooling().next_back(),
        AttackKind::Cw => fooling().min_by(|a, b| a.l2.total_cmp(&b.l2)),
    }
}

/// Images whose history passed through an adversarial point (margin < 0) although the returned
/// image, re-predicted, is not adversarial, and the attack did not vouch for the returned point
/// (those are transfer failures).
fn silent_success(
    result: &AttackResult,
    success: &[bool],
    claims: &[Option<&StepRecord>],
) -> Diagnostic {
    let n = success.len();
    let silent: Vec<usize> = (0..n)
        .filter(|&i| !success[i] && claims[i].is_none())
        .filter(|&i| result.history[i].iter().any(|s| s.margin < 0.0))
        .collect();
    let steps: Vec<String> = silent
        .iter()
        .take(5)
        .filter_map(|&i| {
            let s = result.history[i].iter().find(|s| s.margin < 0.0)?;
            Some(format!(
                "image {i} at step {}, margin {:.3}",
                s.step, s.margin
            ))
        })
        .collect();
    diagnostic(
        Flag::SilentSuccess,
        silent.len(),
        n,
        format!(
            "{} of {n} images were adversarial on the attack's path but not at the returned \
             point{}{}",
            silent.len(),
            if steps.is_empty() { "" } else { " (" },
            if steps.is_empty() {
                String::new()
            } else {
                format!("{})", steps.join(", "))
            }
        ),
    )
}

/// Pintor et al.'s transfer failure: images the attack's own records call adversarial at the
/// point it returned ([`claimed`]: margin < 0 there) that the fresh forward pass `adv` of that
/// point classifies correctly (untargeted) or not as the target (targeted). Counted out of the
/// images the attack claimed; the detail gives both margins of the first few.
fn transfer_failure(
    result: &AttackResult,
    adv: &Array,
    success: &[bool],
    claims: &[Option<&StepRecord>],
) -> Diagnostic {
    let n = success.len();
    let claimed: Vec<usize> = (0..n).filter(|&i| claims[i].is_some()).collect();
    let failed: Vec<usize> = claimed.iter().copied().filter(|&i| !success[i]).collect();
    let examples: Vec<String> = failed
        .iter()
        .take(5)
        .filter_map(|&i| {
            let s = claims[i]?;
            let target = result.targets.as_ref().map(|t| t[i]);
            let fresh = super::success_margin(adv.example(i), result.labels[i], target);
            Some(format!(
                "image {i}: margin {:.3} at step {} in the attack, {fresh:.3} re-predicted",
                s.margin, s.step
            ))
        })
        .collect();
    let verdict = if result.targets.is_some() {
        "not as the target"
    } else {
        "correctly"
    };
    diagnostic(
        Flag::TransferFailure,
        failed.len(),
        claimed.len(),
        format!(
            "{} of the {} images the attack found adversarial at the returned point are \
             classified {verdict} by a fresh forward pass{}",
            failed.len(),
            claimed.len(),
            if examples.is_empty() {
                String::new()
            } else {
                format!(" ({})", examples.join("; "))
            }
        ),
    )
}

/// The sign that turns the recorded loss into the value the attack maximises, for iterative
/// attacks whose history is a loss trace to judge; `None` for the others (FGSM has one step;
/// C&W and DeepFool minimise a norm; Square's loss is a margin it minimises by random search).
fn ascent_direction(cfg: &AttackConfig, result: &AttackResult) -> Option<f32> {
    match cfg.kind {
        AttackKind::Bim | AttackKind::Pgd | AttackKind::MiFgsm => {
            // Targeted runs descend the cross-entropy towards the target (`Context::ce_loss`).
            Some(if result.targets.is_some() { -1.0 } else { 1.0 })
        }
        // APGD records the value it maximises; AutoAttack keeps APGD's histories (only of the
        // images it fooled, so nothing is judged for the survivors).
        AttackKind::ApgdCe
        | AttackKind::ApgdDlr
        | AttackKind::ApgdT
        | AttackKind::AutoAttack
        | AttackKind::AutoAttackRand => Some(1.0),
        AttackKind::Fgsm | AttackKind::Cw | AttackKind::Deepfool | AttackKind::Square => None,
    }
}

/// Pintor et al.'s incomplete optimisation for one loss trace (already signed so that the
/// attack maximises it): rescaled to [0, 1] over the trace and made monotone (running best),
/// how much it still rose over the last `min(10, T)` values.
pub fn still_rising(trace: &[f32]) -> f32 {
    let finite: Vec<f32> = trace.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return 0.0;
    }
    let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi <= lo {
        return 0.0;
    }
    let mut best = f32::NEG_INFINITY;
    let monotone: Vec<f32> = finite
        .iter()
        .map(|&v| {
            best = best.max((v - lo) / (hi - lo));
            best
        })
        .collect();
    let t = monotone.len();
    let window = &monotone[t - CONVERGE_WINDOW.min(t)..];
    window[window.len() - 1] - window[0]
}

/// Images the attack did not fool whose loss was still rising over its last steps.
fn not_converged(history: &[Vec<StepRecord>], success: &[bool], dir: f32) -> Diagnostic {
    let judged: Vec<f32> = (0..success.len())
        .filter(|&i| !success[i] && history[i].len() >= 2)
        .map(|i| {
            let trace: Vec<f32> = history[i].iter().map(|s| dir * s.loss).collect();
            still_rising(&trace)
        })
        .collect();
    let rising: Vec<f32> = judged
        .iter()
        .copied()
        .filter(|&r| r > CONVERGE_TOL)
        .collect();
    let worst = rising.iter().copied().fold(0.0f32, f32::max);
    let steps = history.iter().map(Vec::len).max().unwrap_or(0);
    diagnostic(
        Flag::NotConverged,
        rising.len(),
        judged.len(),
        format!(
            "the rescaled loss still rose by more than {CONVERGE_TOL} over the last \
             {} of {steps} recorded steps for {} of the {} images not fooled (largest rise {worst:.3})",
            CONVERGE_WINDOW.min(steps),
            rising.len(),
            judged.len()
        ),
    )
}

/// The attack to re-run without a budget: the same one (APGD-CE in place of AutoAttack and
/// Square, to keep it cheap) at ε = 1 (L∞) or √(values per image) (L2), which covers all of
/// [0, 1]ⁿ; `None` for the minimum-norm attacks, which have no budget.
fn unbounded_config(cfg: &AttackConfig, values: usize) -> Option<AttackConfig> {
    if cfg.kind.is_minimum_norm() {
        return None;
    }
    let kind = match cfg.kind {
        AttackKind::AutoAttack | AttackKind::AutoAttackRand | AttackKind::Square => {
            AttackKind::ApgdCe
        }
        k => k,
    };
    let eps = match cfg.norm {
        Norm::Linf => 1.0,
        Norm::L2 => (values as f32).sqrt(),
    };
    Some(AttackConfig {
        kind,
        eps,
        ..cfg.clone()
    })
}

/// Pintor et al.'s unconstrained attack: up to `m` images the attack did not fool are attacked
/// again without a budget; those that still survive are flagged.
fn unbounded(
    engine: &mut dyn Engine,
    x: &Array,
    result: &AttackResult,
    cfg: &AttackConfig,
    success: &[bool],
    m: usize,
    cancel: &Cancel,
) -> Result<Option<Diagnostic>, AttackError> {
    let Some(free) = unbounded_config(cfg, x.example_len()) else {
        return Ok(None);
    };
    let survivors: Vec<usize> = (0..x.batch()).filter(|&i| !success[i]).take(m).collect();
    if survivors.is_empty() {
        return Ok(Some(diagnostic(
            Flag::UnboundedFailure,
            0,
            0,
            "no image survived the attack, so none was re-attacked".into(),
        )));
    }
    let xs = x.select(&survivors);
    let labels: Vec<usize> = survivors.iter().map(|&i| result.labels[i]).collect();
    let again = super::run_with_progress(engine, &xs, Some(&labels), &free, cancel, &|_| {})?;
    let logits = engine
        .forward(&again.x_adv, &free.forward_options())?
        .logits;
    let still = (0..xs.batch())
        .filter(|&j| !succeeded(&again, j, logits.example(j)))
        .count();
    let checked = survivors.len();
    Ok(Some(diagnostic(
        Flag::UnboundedFailure,
        still,
        checked,
        format!(
            "{still} of {checked} images checked (of {} the attack did not fool) survive {} at \
             ε = {} ({:?}, unlimited)",
            success.iter().filter(|&&s| !s).count(),
            free.kind,
            free.eps,
            free.norm
        ),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: &[&[f32]]) -> Array {
        let k = rows[0].len();
        Array::new(vec![rows.len(), k], rows.concat()).unwrap()
    }

    #[test]
    fn softmax_check_needs_probabilities_in_every_row() {
        let probs = logits(&[&[0.7, 0.2, 0.1], &[0.0, 1.0, 0.0]]);
        assert_eq!(softmax_output(&probs).images, 2);
        // In [0, 1] but a row summing to 0.9: not probabilities.
        let short = logits(&[&[0.7, 0.2, 0.0], &[0.0, 1.0, 0.0]]);
        assert_eq!(softmax_output(&short).images, 0);
        let raw = logits(&[&[2.0, -1.0, 0.5], &[0.1, 0.2, 0.3]]);
        assert_eq!(softmax_output(&raw).images, 0);
        let nan = logits(&[&[f32::NAN, 0.5, 0.5]]);
        assert_eq!(softmax_output(&nan).images, 0);
    }

    #[test]
    fn batches_merge_by_summing_and_keep_the_first_detail_that_raised() {
        let d = |images, of, detail: &str| Diagnostic {
            flag: Flag::ZeroGradient,
            images,
            of,
            detail: detail.into(),
        };
        let mut all = vec![d(0, 100, "passed")];
        merge_batches(&mut all, vec![d(3, 100, "first")]);
        merge_batches(&mut all, vec![d(2, 50, "second")]);
        assert_eq!(all, vec![d(5, 250, "first")]);
    }

    #[test]
    fn the_claimed_record_is_the_one_of_the_returned_point() {
        let rec = |step, margin, l2| StepRecord {
            step,
            loss: 0.0,
            pred: 0,
            margin,
            linf: 0.0,
            l2,
        };
        // Fooled at steps 1 and 2 (the smaller perturbation at 1), not at the last step 3.
        let h = [
            rec(0, 1.0, 0.0),
            rec(1, -0.5, 0.5),
            rec(2, -0.1, 1.0),
            rec(3, 0.3, 3.0),
        ];
        let step = |kind| claimed(kind, &h).map(|s| s.step);
        // The last iterate is returned, and it is not adversarial.
        assert_eq!(step(AttackKind::Pgd), None);
        assert_eq!(step(AttackKind::Square), None);
        // The latest fooling iterate.
        assert_eq!(step(AttackKind::ApgdCe), Some(2));
        assert_eq!(step(AttackKind::AutoAttack), Some(2));
        // The fooling iterate of smallest L2, the first of equals.
        assert_eq!(step(AttackKind::Cw), Some(1));
        let tie = [rec(0, -0.2, 1.0), rec(1, -0.4, 1.0), rec(2, 0.1, 0.5)];
        assert_eq!(claimed(AttackKind::Cw, &tie).map(|s| s.step), Some(0));
        assert_eq!(claimed(AttackKind::Fgsm, &h[..2]).map(|s| s.step), Some(1));
        assert!(claimed(AttackKind::Pgd, &[]).is_none());
    }

    #[test]
    fn the_unbounded_attack_covers_the_whole_cube() {
        let cfg = AttackConfig {
            kind: AttackKind::AutoAttack,
            eps: 0.03,
            ..AttackConfig::default()
        };
        let free = unbounded_config(&cfg, 784).unwrap();
        assert_eq!((free.kind, free.eps), (AttackKind::ApgdCe, 1.0));
        let l2 = AttackConfig {
            kind: AttackKind::Pgd,
            norm: Norm::L2,
            ..cfg.clone()
        };
        let free = unbounded_config(&l2, 784).unwrap();
        assert_eq!((free.kind, free.eps), (AttackKind::Pgd, 28.0));
        let cw = AttackConfig {
            kind: AttackKind::Cw,
            ..cfg
        };
        assert!(unbounded_config(&cw, 784).is_none());
    }
}
