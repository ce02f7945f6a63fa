//! The JSON record of an attack run, written by `advlens attack` and by the app's export.

use serde::{Deserialize, Serialize};

use super::{AttackConfig, AttackResult, Diagnostic, StepRecord};
use crate::array::{Array, softmax, top_k};
use crate::model::Network;

/// One class with its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassProb {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: String,
    /// Softmax probability.
    pub prob: f32,
}

/// What happened to one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Where the image came from.
    pub source: String,
    /// The label the attack used.
    pub label: usize,
    /// The target, for targeted attacks.
    pub target: Option<usize>,
    /// Clean top-5.
    pub clean_top5: Vec<ClassProb>,
    /// Adversarial top-5 (re-predicted on the adversarial image).
    pub adversarial_top5: Vec<ClassProb>,
    /// Clean logits.
    pub clean_logits: Vec<f32>,
    /// Adversarial logits.
    pub adversarial_logits: Vec<f32>,
    /// ‖δ‖∞.
    pub linf: f32,
    /// ‖δ‖₂.
    pub l2: f32,
    /// Whether the attack succeeded (misclassified, or the target reached).
    pub success: bool,
    /// Per-step history.
    pub history: Vec<StepRecord>,
    /// Files written for this image, if any.
    pub files: Vec<String>,
}

/// The record of a whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// advlens version.
    pub advlens_version: String,
    /// Engine description.
    pub engine: String,
    /// Model source.
    pub model: String,
    /// Architecture summary.
    pub architecture: String,
    /// Attack settings, seed included.
    pub attack: AttackConfig,
    /// The input-transformation defence in front of the network (chain, gradient mode, EOT
    /// draws and seed); `None` for none, and in records written before defences existed.
    #[serde(default)]
    pub defense: Option<crate::defense::Defense>,
    /// The attack's full name (`AutoAttack standard without FAB-T` for `autoattack`).
    #[serde(default)]
    pub attack_name: String,
    /// For AutoAttack: each component's counts, in order.
    #[serde(default)]
    pub stages: Vec<super::Stage>,
    /// One entry per image.
    pub images: Vec<ImageRecord>,
    /// Signs that the attack, not the model, failed (empty in records written before these
    /// checks existed).
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
}

/// Top-5 of a logits row.
pub fn top5(net: &Network, logits: &[f32]) -> Vec<ClassProb> {
    let p = softmax(logits);
    top_k(&p, 5)
        .into_iter()
        .map(|(class, prob)| ClassProb {
            class,
            name: net.class_name(class),
            prob,
        })
        .collect()
}

/// Builds the per-image records from clean and adversarial logits (the adversarial ones must be
/// re-predicted on `result.x_adv`).
pub fn image_records(
    net: &Network,
    x: &Array,
    sources: &[String],
    result: &AttackResult,
    clean_logits: &Array,
    adv_logits: &Array,
) -> Vec<ImageRecord> {
    let norms = result.norms(x);
    (0..x.batch())
        .map(|i| {
            let target = result.targets.as_ref().map(|t| t[i]);
            let margin = super::success_margin(adv_logits.example(i), result.labels[i], target);
            ImageRecord {
                source: sources.get(i).cloned().unwrap_or_default(),
                label: result.labels[i],
                target,
                clean_top5: top5(net, clean_logits.example(i)),
                adversarial_top5: top5(net, adv_logits.example(i)),
                clean_logits: clean_logits.example(i).to_vec(),
                adversarial_logits: adv_logits.example(i).to_vec(),
                linf: norms[i].0,
                l2: norms[i].1,
                success: margin < 0.0,
                history: result.history[i].clone(),
                files: vec![],
            }
        })
        .collect()
}
