//! What one batch of an evaluation adds to its report, as counts that add over batches and
//! shards: the unit `eval --per-image` stores in its batch file and a resumed run reads back.

use serde::{Deserialize, Serialize};

use crate::attack::{Diagnostic, Stage};
use crate::data::Unreadable;

/// One attack setting's outcome on one batch: counts that add over batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRow {
    /// Correct predictions under each draw of the defence (one for a deterministic model).
    pub correct: Vec<usize>,
    /// Targeted attacks: images classified as their target (first draw).
    pub hits: Option<usize>,
    /// The diagnostics' flags on this batch, passed checks included.
    pub diagnostics: Vec<Diagnostic>,
    /// AutoAttack's components on this batch.
    pub stages: Vec<Stage>,
}

/// Everything one batch adds to a report, as stored in the batch file a run resumes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchLine {
    /// Data-set indices of the images evaluated.
    pub indices: Vec<usize>,
    /// Clean correct predictions under each draw.
    pub clean: Vec<usize>,
    /// One entry per attack setting.
    pub rows: Vec<BatchRow>,
    /// With several attack settings: images correct under every one of them, per draw.
    #[serde(default)]
    pub all_robust: Vec<usize>,
    /// Per tap, the summed amplification under the first attack (empty unless asked).
    #[serde(default)]
    pub amplification: Vec<(String, f64)>,
    /// Examples asked for that could not be read.
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
}

impl BatchLine {
    /// Every data-set index this line accounts for, read or not.
    pub fn done(&self) -> impl Iterator<Item = usize> + '_ {
        self.indices
            .iter()
            .copied()
            .chain(self.unreadable.iter().map(|u| u.index))
    }
}
