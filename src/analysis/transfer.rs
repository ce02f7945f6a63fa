//! Transfer (black-box) evaluation: adversarial images crafted on each source model, classified
//! by every target model. Entry `[s][t]` is target `t`'s accuracy on images crafted on `s`; the
//! diagonal is the white-box robust accuracy.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::eval::{percent, wilson95};
use crate::array::Array;
use crate::attack::{self, AttackConfig, AttackError};
use crate::cancel::Cancel;
use crate::data::Batch;
use crate::engine::{Engine, ForwardOptions, predictions};

/// Accuracies of every target model on every source model's adversarial images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferMatrix {
    /// The models, as given; sources and targets are the same list.
    pub models: Vec<String>,
    /// The attack run on each source.
    pub attack: AttackConfig,
    /// Images evaluated.
    pub images: usize,
    /// Clean correct predictions of each model.
    pub clean_correct: Vec<usize>,
    /// `correct[s][t]`: images target `t` classifies correctly after the attack on source `s`.
    pub correct: Vec<Vec<usize>>,
    /// Whether every image was evaluated (false when cancelled).
    pub complete: bool,
}

impl TransferMatrix {
    /// Accuracy in percent of target `t` on source `s`'s images.
    pub fn accuracy(&self, s: usize, t: usize) -> f64 {
        percent(self.correct[s][t], self.images)
    }

    /// The matrix as markdown: a row per source, a column per target, the clean accuracies
    /// first; the diagonal (white-box) in bold.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "| crafted on ↓ / evaluated on → |");
        for m in &self.models {
            let _ = write!(s, " {m} |");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---|{}", "---|".repeat(self.models.len()));
        let _ = write!(s, "| (clean) |");
        for &c in &self.clean_correct {
            let _ = write!(s, " {:.2} |", percent(c, self.images));
        }
        let _ = writeln!(s);
        for (i, m) in self.models.iter().enumerate() {
            let _ = write!(s, "| {m} |");
            for t in 0..self.models.len() {
                let a = self.accuracy(i, t);
                if i == t {
                    let _ = write!(s, " **{a:.2}** |");
                } else {
                    let _ = write!(s, " {a:.2} |");
                }
            }
            let _ = writeln!(s);
        }
        let (lo, hi) = wilson95(self.images / 2, self.images);
        let _ = writeln!(
            s,
            "\naccuracy % over {} images; the bold diagonal is white-box; a 95 % interval is at \
             most ±{:.1} points wide at this size",
            self.images,
            (hi - lo) / 2.0
        );
        if !self.complete {
            let _ = writeln!(s, "(partial: cancelled after {} images)", self.images);
        }
        s
    }
}

/// Images among `x` that `engine` classifies as labelled.
fn correct(engine: &mut dyn Engine, x: &Array, labels: &[usize]) -> Result<usize, AttackError> {
    let p = predictions(&engine.forward(x, &ForwardOptions::default())?.logits);
    Ok(p.iter().zip(labels).filter(|(p, y)| p == y).count())
}

/// Attacks every batch on each engine in turn and classifies each result with every engine.
/// `progress(done)` after every batch; cancelling returns the complete batches so far.
pub fn transfer_matrix(
    engines: &mut [Box<dyn Engine>],
    models: Vec<String>,
    batches: &mut dyn Iterator<Item = Batch>,
    attack: &AttackConfig,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize),
) -> Result<TransferMatrix, AttackError> {
    let n = engines.len();
    let mut m = TransferMatrix {
        models,
        attack: attack.clone(),
        images: 0,
        clean_correct: vec![0; n],
        correct: vec![vec![0; n]; n],
        complete: false,
    };
    let mut cancelled = false;
    for batch in batches {
        if batch.is_empty() {
            continue;
        }
        let mut clean = vec![0; n];
        let mut adv = vec![vec![0; n]; n];
        for (t, e) in engines.iter_mut().enumerate() {
            clean[t] = correct(&mut **e, &batch.images, &batch.labels)?;
        }
        for s in 0..n {
            let result = match attack::run(
                &mut *engines[s],
                &batch.images,
                Some(&batch.labels),
                attack,
                cancel,
            ) {
                Err(AttackError::Cancelled) => {
                    cancelled = true;
                    break;
                }
                r => r?,
            };
            for (t, e) in engines.iter_mut().enumerate() {
                adv[s][t] = correct(&mut **e, &result.x_adv, &batch.labels)?;
            }
        }
        if cancelled || cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        m.images += batch.len();
        for (total, add) in m.clean_correct.iter_mut().zip(&clean) {
            *total += add;
        }
        for (row, add) in m.correct.iter_mut().zip(&adv) {
            for (total, add) in row.iter_mut().zip(add) {
                *total += add;
            }
        }
        progress(m.images);
    }
    m.complete = !cancelled;
    Ok(m)
}
