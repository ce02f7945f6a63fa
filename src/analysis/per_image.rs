//! What happened to each image under each attack: one [`ImageResult`] per image and attack
//! setting, written one JSON object per line by `eval --per-image`.

use serde::{Deserialize, Serialize};

/// One image under one attack setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageResult {
    /// Index of the image in the data set (the same in every shard).
    pub index: usize,
    /// Its file, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The attack setting, as in the table's columns (`pgd-10 ε=0.1`).
    pub attack: String,
    /// Position of the attack setting in the report's rows.
    pub row: usize,
    /// True class.
    pub label: usize,
    /// The target class of a targeted attack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<usize>,
    /// Predicted class of the clean image (behind a random defence, under its first draw).
    pub clean_pred: usize,
    /// Predicted class of the adversarial image, re-predicted (first draw likewise).
    pub adv_pred: usize,
    /// Whether the adversarial image is still classified correctly.
    pub robust: bool,
    /// Whether the attack turned a correct prediction into a wrong one.
    pub fooled: bool,
    /// ‖x_adv − x‖∞.
    pub linf: f32,
    /// ‖x_adv − x‖₂.
    pub l2: f32,
    /// The attack's loss at its last recorded step (attacks without a history have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f32>,
    /// Steps the attack used on this image (the step of its last record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Behind a random defence: the clean prediction under each draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_draws: Option<Vec<usize>>,
    /// Behind a random defence: the adversarial prediction under each draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adv_draws: Option<Vec<usize>>,
}

impl ImageResult {
    /// The key lines are compared and sorted by: image, then attack row.
    pub fn key(&self) -> (usize, usize) {
        (self.index, self.row)
    }
}
