//! One model evaluated under several input-transformation defences, gradient modes and EOT
//! settings, one row each: which combinations are worth running ([`defense_grid`]), running
//! them on one engine ([`evaluate_defenses`]) and the side-by-side table ([`DefenseSuite`]).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{EvalOptions, EvalReport, EvalRow, evaluate_defended};
use crate::attack::{AttackConfig, AttackError};
use crate::cancel::Cancel;
use crate::data::Labelled;
use crate::defense::{Chain, Defense, GradientMode};
use crate::engine::Defended;

/// The evaluations of one model under several defences, in the order they ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefenseSuite {
    /// One report per (defence, gradient mode, EOT); every report has the same attacks.
    pub reports: Vec<EvalReport>,
}

/// The defences worth a row for `chains` × `modes` × `eots`, in that order, all with `seed`:
/// both gradient modes only where they differ (a JPEG, bit-depth or median step; a chain of
/// resize and pad alone has its exact gradient under both), several EOT settings only for a
/// random chain (for the others only the first of `eots` is used: there is nothing to
/// average), and one row for no defence. Empty `modes` or `eots` mean BPDA and 1.
pub fn defense_grid(
    chains: &[Chain],
    modes: &[GradientMode],
    eots: &[usize],
    seed: u64,
) -> Vec<Defense> {
    let modes = if modes.is_empty() {
        &[GradientMode::Bpda][..]
    } else {
        modes
    };
    let eots = if eots.is_empty() { &[1][..] } else { eots };
    let mut out: Vec<Defense> = Vec::new();
    for chain in chains {
        let modes = if chain.gradient_modes_differ() {
            modes
        } else {
            &modes[..1]
        };
        let eots = if chain.is_random() { eots } else { &eots[..1] };
        for &gradient in modes {
            for &eot in eots {
                let d = Defense {
                    chain: chain.clone(),
                    gradient,
                    eot,
                    seed,
                };
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Evaluates `engine` under each of `defenses` in turn (set on it with its draws restarted),
/// with [`evaluate_defended`]. `progress(done, total)` counts images over all the defences.
/// Cancelling returns the reports so far, the last one partial.
pub fn evaluate_defenses(
    engine: &mut Defended,
    data: &Labelled,
    attacks: &[AttackConfig],
    defenses: &[Defense],
    opts: &EvalOptions,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DefenseSuite, AttackError> {
    let total = data.len() * defenses.len();
    let mut reports = Vec::with_capacity(defenses.len());
    for (k, d) in defenses.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        engine.set_defense(d.clone())?;
        let before = k * data.len();
        let report = evaluate_defended(engine, data, attacks, opts, cancel, &mut |done, _| {
            progress(before + done, total)
        })?;
        reports.push(report);
    }
    Ok(DefenseSuite { reports })
}

/// The gradient column: `–` without a defence, `exact` where the modes agree, else the mode.
fn gradient_cell(d: Option<&Defense>) -> String {
    match d {
        None => "–".into(),
        Some(d) if !d.chain.gradient_modes_differ() => "exact".into(),
        Some(d) => d.gradient.name().into(),
    }
}

/// The EOT column: the draws per gradient for a random chain, `–` otherwise.
fn eot_cell(d: Option<&Defense>) -> String {
    match d {
        Some(d) if d.chain.is_random() => d.eot.to_string(),
        _ => "–".into(),
    }
}

impl DefenseSuite {
    /// A markdown table with a row per report (defence, gradient mode, EOT) and a column per
    /// attack, accuracies in percent (`mean ± sd` over a random defence's draws), then the
    /// diagnostics' warnings per row.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let Some(first) = self.reports.first() else {
            return "no defence was evaluated\n".into();
        };
        let headings: Vec<String> = first.rows.iter().map(EvalRow::heading).collect();
        let _ = write!(s, "| defence | gradient | EOT | images | clean %");
        for h in &headings {
            let _ = write!(s, " | {h} %");
        }
        let _ = writeln!(s, " |");
        let _ = writeln!(s, "|---|---|---|---|---{}|", "|---".repeat(headings.len()));
        for r in &self.reports {
            let d = r.defense.as_ref();
            let _ = write!(
                s,
                "| {} | {} | {} | {} | {}",
                d.map_or("none".into(), |d| d.chain.to_string()),
                gradient_cell(d),
                eot_cell(d),
                r.images,
                r.clean_accuracy_text()
            );
            for row in &r.rows {
                let _ = write!(s, " | {}", row.accuracy_text());
            }
            let _ = writeln!(s, " |");
        }
        self.notes(&mut s);
        s
    }

    /// The lines under the table: what ± means, the seed, warnings, a partial run.
    fn notes(&self, s: &mut String) {
        let random: Vec<&EvalReport> = self
            .reports
            .iter()
            .filter(|r| r.clean_draws.is_some())
            .collect();
        if let Some(r) = random.first() {
            let draws = r.clean_draws.as_ref().map_or(0, |d| d.correct.len());
            let seed = r.defense.as_ref().map_or(0, |d| d.seed);
            let _ = writeln!(
                s,
                "\nRandom defences: clean and robust accuracy re-predicted through the defence \
                 under {draws} independent draws of its randomness, mean ± standard deviation \
                 (seed {seed}). EOT: draws averaged per gradient."
            );
        }
        let mut warned = false;
        for r in &self.reports {
            let who = r.defense.as_ref().map_or("none".into(), |d| {
                let mut who = format!("{} {}", d.chain, gradient_cell(Some(d)));
                if d.chain.is_random() {
                    who.push_str(&format!(" EOT {}", d.eot));
                }
                who
            });
            for w in r.rows.iter().flat_map(super::EvalRow::warnings) {
                if !warned {
                    let _ = writeln!(s, "\nwarnings:");
                    warned = true;
                }
                let _ = writeln!(s, "- [{who}] {}", w.trim_start_matches("warning: "));
            }
        }
        if let Some(r) = self.reports.iter().find(|r| !r.complete) {
            let _ = writeln!(s, "\n(partial: cancelled after {} images)", r.images);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(s: &[&str]) -> Vec<Chain> {
        s.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn the_grid_has_both_modes_only_where_they_differ_and_eot_only_for_random_chains() {
        let grid = defense_grid(
            &chains(&["none", "jpeg:75", "resize-pad", "resize-pad,bits:5"]),
            &[GradientMode::Naive, GradientMode::Bpda],
            &[1, 10],
            7,
        );
        let rows: Vec<(String, GradientMode, usize)> = grid
            .iter()
            .map(|d| (d.chain.to_string(), d.gradient, d.eot))
            .collect();
        use GradientMode::{Bpda, Naive};
        let expected = [
            ("none", Naive, 1),
            ("jpeg:75", Naive, 1),
            ("jpeg:75", Bpda, 1),
            ("resize-pad", Naive, 1),
            ("resize-pad", Naive, 10),
            ("resize-pad,bits:5", Naive, 1),
            ("resize-pad,bits:5", Naive, 10),
            ("resize-pad,bits:5", Bpda, 1),
            ("resize-pad,bits:5", Bpda, 10),
        ];
        let expected: Vec<(String, GradientMode, usize)> = expected
            .iter()
            .map(|(c, g, e)| (c.to_string(), *g, *e))
            .collect();
        assert_eq!(rows, expected);
        assert!(grid.iter().all(|d| d.seed == 7));
        // A deterministic chain takes the first EOT value only.
        let one = defense_grid(&chains(&["median:3"]), &[], &[5, 10], 0);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].gradient, one[0].eot), (GradientMode::Bpda, 5));
    }
}
