//! Training objectives: what one step trains on, for each mode.
//!
//! - clean: cross-entropy `J(x)`;
//! - FGSM mix (Goodfellow et al. 2015): `α·J(x) + (1 − α)·J(x + ε·sign ∇ₓJ(x))`;
//! - PGD (Madry et al. 2018): `J(x_adv)` with `x_adv` from PGD-k with a random start;
//! - ALP (Kannan et al. 2018): `½·J(x) + ½·J(x_adv) + λ·(1/N)·Σₙ ‖z(xₙ) − z(x_adv,ₙ)‖²` with
//!   `x_adv` from PGD-k; clean and adversarial halves go through the network as one batch.
//!
//! Adversarial examples are made with the planned cpu engine on a snapshot of the current weights,
//! batch norm at its running averages (inference mode), as an attacker at test time would see it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::array::Array;
use crate::attack::{AttackConfig, AttackKind, Norm};
use crate::cancel::Cancel;
use crate::engine::cpu::CpuEngine;
use crate::engine::{EngineError, Loss};
use crate::model::Network;

/// Which objective training minimises.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum TrainMode {
    /// Cross-entropy on clean images.
    Clean,
    /// Goodfellow et al.'s mix of clean and FGSM losses, weight `alpha` on the clean one.
    FgsmMix {
        /// Weight of the clean loss (0.5 in the paper).
        alpha: f32,
    },
    /// Madry et al.'s PGD adversarial training.
    Pgd,
    /// Kannan et al.'s adversarial logit pairing on a mixed clean/adversarial batch.
    Alp {
        /// Weight λ of the logit-pairing term.
        lambda: f32,
    },
}

impl TrainMode {
    /// A short name for logs and records.
    pub fn id(&self) -> &'static str {
        match self {
            TrainMode::Clean => "clean",
            TrainMode::FgsmMix { .. } => "fgsm",
            TrainMode::Pgd => "pgd",
            TrainMode::Alp { .. } => "alp",
        }
    }
}

/// The threat model adversarial training defends against (L∞, pixel units).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdvSettings {
    /// Budget ε.
    pub eps: f32,
    /// PGD step size.
    pub step_size: f32,
    /// PGD steps.
    pub steps: usize,
}

/// One step's training batch and its loss on the logits.
pub struct Objective {
    /// The images the network is trained on (the clean batch, or clean and adversarial halves).
    pub x: Array,
    /// The label of each row of `x`.
    pub labels: Vec<usize>,
    /// Weight of each row's cross-entropy in the loss.
    pub ce_weight: Vec<f32>,
    /// λ of the logit-pairing term between rows `i` and `i + N/2` (ALP only).
    pub pairing: Option<f32>,
}

impl Objective {
    /// Builds the batch for `mode` from clean images `x` with `labels`; `net` is a snapshot of
    /// the weights being trained, used to craft adversarial examples (every mode but clean needs
    /// it), and `seed` seeds their random starts.
    pub fn build(
        mode: TrainMode,
        adv: AdvSettings,
        net: Option<&Arc<Network>>,
        x: &Array,
        labels: &[usize],
        seed: u64,
        cancel: &Cancel,
    ) -> Result<Self, EngineError> {
        let n = labels.len();
        let uniform = |k: usize, w: f32| vec![w / k as f32; k];
        Ok(match mode {
            TrainMode::Clean => Self {
                x: x.clone(),
                labels: labels.to_vec(),
                ce_weight: uniform(n, 1.0),
                pairing: None,
            },
            TrainMode::Pgd => Self {
                x: attack(net, x, labels, AttackKind::Pgd, adv, seed, cancel)?,
                labels: labels.to_vec(),
                ce_weight: uniform(n, 1.0),
                pairing: None,
            },
            TrainMode::FgsmMix { alpha } => {
                let x_adv = attack(net, x, labels, AttackKind::Fgsm, adv, seed, cancel)?;
                let mut ce_weight = uniform(n, alpha);
                ce_weight.extend(uniform(n, 1.0 - alpha));
                Self {
                    x: concat(x, &x_adv)?,
                    labels: [labels, labels].concat(),
                    ce_weight,
                    pairing: None,
                }
            }
            TrainMode::Alp { lambda } => {
                let x_adv = attack(net, x, labels, AttackKind::Pgd, adv, seed, cancel)?;
                Self {
                    x: concat(x, &x_adv)?,
                    labels: [labels, labels].concat(),
                    ce_weight: uniform(2 * n, 1.0),
                    pairing: Some(lambda),
                }
            }
        })
    }

    /// The loss and its gradient with respect to `logits` (one row per row of `x`).
    pub fn evaluate(&self, logits: &Array) -> Result<(f32, Array), EngineError> {
        let loss = Loss::CrossEntropy {
            classes: self.labels.clone(),
        };
        let (values, mut dz) = loss.evaluate(logits)?;
        let k = logits.example_len();
        let mut total = 0.0f32;
        for (i, (&v, &w)) in values.iter().zip(&self.ce_weight).enumerate() {
            total += w * v;
            for g in dz.example_mut(i) {
                *g *= w;
            }
        }
        if let Some(lambda) = self.pairing {
            let half = logits.batch() / 2;
            let z = logits.data();
            let d = dz.data_mut();
            for i in 0..half {
                for j in 0..k {
                    let (a, b) = (i * k + j, (i + half) * k + j);
                    let diff = z[a] - z[b];
                    total += lambda * diff * diff / half as f32;
                    let g = 2.0 * lambda * diff / half as f32;
                    d[a] += g;
                    d[b] -= g;
                }
            }
        }
        Ok((total, dz))
    }
}

fn concat(a: &Array, b: &Array) -> Result<Array, EngineError> {
    Array::concat(&[a.clone(), b.clone()]).map_err(|e| EngineError::Backend {
        engine: "cpu",
        message: e.to_string(),
    })
}

fn attack(
    net: Option<&Arc<Network>>,
    x: &Array,
    labels: &[usize],
    kind: AttackKind,
    adv: AdvSettings,
    seed: u64,
    cancel: &Cancel,
) -> Result<Array, EngineError> {
    let net = net.ok_or_else(|| EngineError::Backend {
        engine: "cpu",
        message: "adversarial training needs the network to attack".into(),
    })?;
    let mut engine = CpuEngine::new(net.clone())?;
    let cfg = AttackConfig {
        kind,
        norm: Norm::Linf,
        eps: adv.eps,
        alpha: (kind == AttackKind::Pgd).then_some(adv.step_size),
        steps: (kind == AttackKind::Pgd).then_some(adv.steps),
        seed,
        ..AttackConfig::default()
    };
    crate::attack::run(&mut engine, x, Some(labels), &cfg, cancel)
        .map(|r| r.x_adv)
        .map_err(|e| match e {
            crate::attack::AttackError::Engine(e) => e,
            other => EngineError::Backend {
                engine: "cpu",
                message: other.to_string(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_gradient_matches_finite_differences() {
        let obj = Objective {
            x: Array::zeros(vec![4, 1, 1, 1]),
            labels: vec![0, 1, 0, 1],
            ce_weight: vec![0.25; 4],
            pairing: Some(0.7),
        };
        let z: Vec<f32> = (0..12).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.3).collect();
        let logits = Array::new(vec![4, 3], z.clone()).unwrap();
        let (_, dz) = obj.evaluate(&logits).unwrap();
        let h = 1e-3f32;
        for i in 0..12 {
            let mut up = z.clone();
            up[i] += h;
            let mut down = z.clone();
            down[i] -= h;
            let f = |v: Vec<f32>| obj.evaluate(&Array::new(vec![4, 3], v).unwrap()).unwrap().0;
            let fd = (f(up) - f(down)) / (2.0 * h);
            assert!(
                (fd - dz.data()[i]).abs() < 2e-3,
                "{i}: {fd} vs {}",
                dz.data()[i]
            );
        }
    }
}
