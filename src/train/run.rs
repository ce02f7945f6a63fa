//! The training loop: epochs over a shuffled data set in batches, the mode's objective, the
//! learning-rate schedule, augmentation, periodic checkpoints, progress and cancellation.
//! Everything random (data order, augmentation, adversarial starts) derives from the seed, the
//! epoch and the batch index, so a run resumed from a checkpoint continues as if uninterrupted.

use std::time::Instant;

use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::checkpoint::TrainState;
use super::objective::{AdvSettings, Objective, TrainMode};
use super::schedule::Schedule;
use super::{SgdConfig, Trainer};
use crate::cancel::Cancel;
use crate::data::Labelled;
use crate::engine::EngineError;
use crate::model::ModelError;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The engine failed (including a loss that became NaN).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A checkpoint or model file could not be read or written.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The settings are not usable.
    #[error("invalid training settings: {0}")]
    Config(String),
}

/// Everything that defines a training run (stored in checkpoints and in the final model's
/// training record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The objective.
    pub mode: TrainMode,
    /// The threat model for adversarial modes.
    pub adv: AdvSettings,
    /// Epochs.
    pub epochs: usize,
    /// Clean images per batch (FGSM mix and ALP train on twice as many rows).
    pub batch: usize,
    /// Base learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Linear warm-up, in epochs (may be fractional).
    pub warmup_epochs: f32,
    /// Random shifts of up to this many pixels (0: none).
    pub crop_pad: usize,
    /// Random horizontal flips.
    pub flip: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Train on the first N training images only.
    pub limit: Option<usize>,
}

impl TrainConfig {
    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        if self.epochs == 0 || self.batch == 0 {
            return bad("epochs and batch size must be positive");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if !(0.0..1.0).contains(&self.momentum)
            || self.weight_decay.is_nan()
            || self.weight_decay < 0.0
        {
            return bad("momentum must be in [0, 1) and weight decay ≥ 0");
        }
        if self.mode != TrainMode::Clean {
            let a = self.adv;
            if !(a.eps.is_finite() && a.eps > 0.0 && a.eps <= 1.0) {
                return bad("adversarial training needs 0 < ε ≤ 1");
            }
            if !(a.step_size.is_finite() && a.step_size > 0.0) || a.steps == 0 {
                return bad(
                    "adversarial training needs a positive step size and at least one step",
                );
            }
        }
        match self.mode {
            TrainMode::FgsmMix { alpha } if !(0.0..=1.0).contains(&alpha) => {
                bad("the FGSM mix weight must be in [0, 1]")
            }
            TrainMode::Alp { lambda } if !lambda.is_finite() || lambda < 0.0 => {
                bad("the logit-pairing weight must be ≥ 0")
            }
            _ => Ok(()),
        }
    }

    /// The SGD settings at the base learning rate.
    pub fn sgd(&self) -> SgdConfig {
        SgdConfig {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        }
    }
}

/// What the loop reports after every batch.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Mean loss over this epoch's batches so far (this session's part of it).
    pub loss: f32,
    /// Mean training accuracy on the trained rows, likewise.
    pub accuracy: f32,
    /// Clean images per second over this session.
    pub images_per_s: f32,
    /// Learning rate of the last step.
    pub lr: f32,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every epoch ran.
    Finished,
    /// Cancelled; the state says where to resume.
    Cancelled,
}

/// Calls made by the loop to its caller.
pub trait Hooks {
    /// After every batch.
    fn progress(&mut self, p: &Progress);
    /// Every `checkpoint_every` batches, at the end of every epoch and when cancelled: persist
    /// `trainer` and `state` (e.g. with [`super::save_checkpoint`]).
    fn checkpoint(&mut self, trainer: &Trainer, state: &TrainState) -> Result<(), TrainError>;
    /// At the end of every epoch, after its checkpoint.
    fn epoch_end(
        &mut self,
        _trainer: &Trainer,
        _epoch: usize,
        _p: &Progress,
    ) -> Result<(), TrainError> {
        Ok(())
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64-style mixing of three words.
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The order of the training images in `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
        seed,
        epoch as u64,
        u64::MAX,
    )));
    order
}

/// Trains from `state` (a fresh state starts at epoch 0, batch 0) until the last epoch or
/// cancellation. The final partial batch of an epoch is dropped.
pub fn train(
    trainer: &mut Trainer,
    data: &Labelled,
    cfg: &TrainConfig,
    state: &mut TrainState,
    checkpoint_every: usize,
    cancel: &Cancel,
    hooks: &mut dyn Hooks,
) -> Result<Outcome, TrainError> {
    cfg.validate()?;
    let n = cfg.limit.map_or(data.len(), |l| l.min(data.len()));
    let batches = n / cfg.batch;
    if batches == 0 {
        return Err(TrainError::Config(format!(
            "{n} training images make no batch of {}",
            cfg.batch
        )));
    }
    let total_steps = batches * cfg.epochs;
    let warmup = (cfg.warmup_epochs.max(0.0) * batches as f32) as usize;
    let started = Instant::now();
    let seconds_before = state.seconds;
    let mut images = 0usize;
    while state.epoch < cfg.epochs {
        let order = epoch_order(n, cfg.seed, state.epoch);
        let (mut loss_sum, mut acc_sum, mut count) = (0f32, 0f32, 0usize);
        let mut progress = Progress {
            epoch: state.epoch,
            batch: state.batch,
            batches,
            loss: 0.0,
            accuracy: 0.0,
            images_per_s: 0.0,
            lr: cfg.lr,
        };
        while state.batch < batches {
            if cancel.is_cancelled() {
                state.seconds = seconds_before + started.elapsed().as_secs_f64();
                hooks.checkpoint(trainer, state)?;
                return Ok(Outcome::Cancelled);
            }
            let b = state.batch;
            let idx = &order[b * cfg.batch..(b + 1) * cfg.batch];
            let mut part = data.select(idx);
            let batch_seed = mix(cfg.seed, state.epoch as u64, b as u64);
            if cfg.crop_pad > 0 || cfg.flip {
                let mut rng = ChaCha8Rng::seed_from_u64(batch_seed);
                super::augment::crop_flip(&mut part.images, cfg.crop_pad, cfg.flip, &mut rng);
            }
            let lr = cfg
                .schedule
                .lr(cfg.lr, state.global_step, total_steps, warmup);
            trainer.set_lr(lr);
            let snapshot = if cfg.mode == TrainMode::Clean {
                None
            } else {
                Some(std::sync::Arc::new(trainer.network()?))
            };
            let objective = Objective::build(
                cfg.mode,
                cfg.adv,
                snapshot.as_ref(),
                &part.images,
                &part.labels,
                batch_seed,
                cancel,
            );
            let objective = match objective {
                Ok(o) => o,
                Err(_) if cancel.is_cancelled() => continue,
                Err(e) => return Err(e.into()),
            };
            let stats =
                trainer.step_with(&objective.x, &objective.labels, |z| objective.evaluate(z))?;
            state.batch += 1;
            state.global_step += 1;
            images += cfg.batch;
            loss_sum += stats.loss;
            acc_sum += stats.accuracy;
            count += 1;
            progress = Progress {
                epoch: state.epoch,
                batch: state.batch,
                batches,
                loss: loss_sum / count as f32,
                accuracy: acc_sum / count as f32,
                images_per_s: images as f32 / started.elapsed().as_secs_f32().max(1e-6),
                lr,
            };
            hooks.progress(&progress);
            if checkpoint_every > 0
                && state.batch.is_multiple_of(checkpoint_every)
                && state.batch < batches
            {
                state.seconds = seconds_before + started.elapsed().as_secs_f64();
                hooks.checkpoint(trainer, state)?;
            }
        }
        let finished_epoch = state.epoch;
        state.epoch += 1;
        state.batch = 0;
        state.seconds = seconds_before + started.elapsed().as_secs_f64();
        hooks.checkpoint(trainer, state)?;
        hooks.epoch_end(trainer, finished_epoch, &progress)?;
    }
    Ok(Outcome::Finished)
}
