//! Training the resnet-denoise family with gradients on the weights (the one place that needs
//! them).
//!
//! [`Trainer`] is one SGD step (momentum, weight decay, batch norm on batch statistics with
//! running averages); [`Objective`] turns a training mode (clean, FGSM mix, PGD adversarial
//! training, adversarial logit pairing) into the batch and the loss of a step; [`train()`] is the
//! epoch loop with schedules, augmentation, checkpoints and cancellation that `advlens train`
//! drives.

mod augment;
mod checkpoint;
mod objective;
mod run;
mod schedule;

pub use checkpoint::{Checkpoint, TrainState, load as load_checkpoint, save as save_checkpoint};
pub use objective::{AdvSettings, Objective, TrainMode};
pub use run::{Hooks, Outcome, Progress, TrainConfig, TrainError, train};
pub use schedule::Schedule;

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};

use crate::array::Array;
use crate::engine::cpu::{
    BnBatchStats, Kernels, ParamMode, RunOptions, backend, backward_from, run_graph_with_stats,
    to_array,
};
use crate::engine::{EngineError, Loss, check_input};
use crate::model::Network;

/// SGD settings.
#[derive(Clone, Copy, Debug)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

/// Statistics of one training step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean loss of the step's objective.
    pub loss: f32,
    /// Fraction of the batch classified correctly (before the update).
    pub accuracy: f32,
}

/// The momentum of the batch-norm running averages (`running ← (1 − m)·running + m·batch`).
pub const BN_MOMENTUM: f64 = 0.1;

/// Trains a network's weights in place.
pub struct Trainer {
    net: Network,
    vars: HashMap<String, Var>,
    constants: HashMap<String, Tensor>,
    velocity: HashMap<String, Tensor>,
    cfg: SgdConfig,
    kernels: Kernels,
    batch_stats: bool,
}

impl Trainer {
    /// Prepares `net` for training. Batch norm normalises with batch statistics and updates its
    /// running averages (see [`Trainer::with_batch_stats`]).
    pub fn new(net: Network, cfg: SgdConfig) -> Result<Self, EngineError> {
        let dev = Device::Cpu;
        let mut vars = HashMap::new();
        let mut constants = HashMap::new();
        for spec in &net.graph.params {
            let a = net.param(&spec.name).map_err(|e| EngineError::Backend {
                engine: "cpu",
                message: e.to_string(),
            })?;
            let t = Tensor::from_slice(a.data(), a.shape(), &dev).map_err(backend)?;
            if spec.trainable {
                vars.insert(spec.name.clone(), Var::from_tensor(&t).map_err(backend)?);
            } else {
                constants.insert(spec.name.clone(), t);
            }
        }
        Ok(Self {
            net,
            vars,
            constants,
            velocity: HashMap::new(),
            cfg,
            kernels: Kernels::for_device(&dev),
            batch_stats: true,
        })
    }

    /// Chooses whose convolution and batch norm the steps run: advlens's by default,
    /// [`Kernels::Candle`] for the stock-candle baseline `advlens bench --train` times.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// Batch norm on batch statistics (`true`, the default) or frozen at its running averages.
    pub fn with_batch_stats(mut self, on: bool) -> Self {
        self.batch_stats = on;
        self
    }

    /// Sets the learning rate for the following steps (schedules call this every step).
    pub fn set_lr(&mut self, lr: f32) {
        self.cfg.lr = lr;
    }

    /// The SGD settings in force.
    pub fn sgd(&self) -> SgdConfig {
        self.cfg
    }

    /// One SGD step on a labelled batch with softmax cross-entropy.
    pub fn step(&mut self, x: &Array, labels: &[usize]) -> Result<StepStats, EngineError> {
        let n = labels.len();
        self.step_with(x, labels, |logits| {
            let loss = Loss::CrossEntropy {
                classes: labels.to_vec(),
            };
            let (values, mut dz) = loss.evaluate(logits)?;
            for v in dz.data_mut() {
                *v /= n as f32;
            }
            Ok((values.iter().sum::<f32>() / n as f32, dz))
        })
    }

    /// One SGD step on `x` with a loss given on the host: `objective(logits)` returns the scalar
    /// loss and its gradient with respect to the logits. `labels` (one per row of `x`) only
    /// count the accuracy reported.
    pub fn step_with(
        &mut self,
        x: &Array,
        labels: &[usize],
        objective: impl FnOnce(&Array) -> Result<(f32, Array), EngineError>,
    ) -> Result<StepStats, EngineError> {
        check_input(&self.net, x)?;
        if labels.len() != x.batch() {
            return Err(EngineError::Loss(format!(
                "{} labels for {} images",
                labels.len(),
                x.batch()
            )));
        }
        let dev = Device::Cpu;
        let xt = Tensor::from_slice(x.data(), x.shape(), &dev).map_err(backend)?;
        let mut params = self.constants.clone();
        for (k, v) in &self.vars {
            params.insert(k.clone(), v.as_tensor().clone());
        }
        let g = &self.net.graph;
        let opts = RunOptions {
            bypass_denoise: false,
            mode: ParamMode::Trained,
            kernels: self.kernels,
            bn_batch_stats: self.batch_stats,
        };
        let mut stats = Vec::new();
        let mut values = run_graph_with_stats(g, &params, &xt, &[g.output], opts, &mut stats)
            .map_err(backend)?;
        let logits_t = values[g.output]
            .take()
            .ok_or_else(|| EngineError::Backend {
                engine: "cpu",
                message: "logits missing".into(),
            })?;
        let logits = to_array(&logits_t)?;
        let (loss, dz) = objective(&logits)?;
        if !loss.is_finite() {
            return Err(EngineError::Backend {
                engine: "cpu",
                message: format!(
                    "the training loss became {loss}: lower the learning rate (--lr) and resume from the last checkpoint"
                ),
            });
        }
        let correct = crate::engine::predictions(&logits)
            .iter()
            .zip(labels)
            .filter(|(p, y)| p == y)
            .count();
        let grads = backward_from(&logits_t, &dz)?;
        let c = self.cfg;
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let update = (grad + (var.as_tensor() * c.weight_decay as f64).map_err(backend)?)
                .map_err(backend)?;
            let vel = match self.velocity.get(name) {
                Some(v) => ((v * c.momentum as f64).map_err(backend)? + update).map_err(backend)?,
                None => update,
            };
            let next =
                (var.as_tensor() - (&vel * c.lr as f64).map_err(backend)?).map_err(backend)?;
            var.set(&next).map_err(backend)?;
            self.velocity.insert(name.clone(), vel);
        }
        self.update_running_stats(&stats)?;
        Ok(StepStats {
            loss,
            accuracy: correct as f32 / x.batch() as f32,
        })
    }

    fn update_running_stats(&mut self, stats: &[BnBatchStats]) -> Result<(), EngineError> {
        let m = BN_MOMENTUM;
        for st in stats {
            let [_, _, mean_name, var_name] = st.names.clone();
            // The running variance is the unbiased estimate, as PyTorch and tensorpack keep it.
            let unbias = st.count as f64 / (st.count.max(2) - 1) as f64;
            for (name, batch, scale) in [(mean_name, &st.mean, 1.0), (var_name, &st.var, unbias)] {
                let Some(old) = self.constants.get(&name) else {
                    continue;
                };
                let next = ((old * (1.0 - m)).map_err(backend)?
                    + (batch * (m * scale)).map_err(backend)?)
                .map_err(backend)?;
                self.constants.insert(name, next);
            }
        }
        Ok(())
    }

    /// The network with the current weights and running averages (a copy; training goes on).
    pub fn network(&self) -> Result<Network, EngineError> {
        let mut net = self.net.clone();
        for (name, var) in &self.vars {
            net.weights.insert(name.clone(), to_array(var.as_tensor())?);
        }
        for (name, t) in &self.constants {
            net.weights.insert(name.clone(), to_array(t)?);
        }
        Ok(net)
    }

    /// The momentum buffers by parameter name (for checkpoints).
    pub fn velocity(&self) -> Result<Vec<(String, Array)>, EngineError> {
        let mut out = Vec::with_capacity(self.velocity.len());
        for (name, t) in &self.velocity {
            out.push((name.clone(), to_array(t)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Restores momentum buffers saved by [`Trainer::velocity`]; names and shapes must match the
    /// trained parameters.
    pub fn set_velocity(&mut self, velocity: Vec<(String, Array)>) -> Result<(), EngineError> {
        for (name, a) in velocity {
            let Some(var) = self.vars.get(&name) else {
                return Err(EngineError::Backend {
                    engine: "cpu",
                    message: format!("momentum for unknown parameter {name:?}"),
                });
            };
            if var.as_tensor().dims() != a.shape() {
                return Err(EngineError::Backend {
                    engine: "cpu",
                    message: format!("momentum for {name:?} has shape {:?}", a.shape()),
                });
            }
            let t = Tensor::from_slice(a.data(), a.shape(), &Device::Cpu).map_err(backend)?;
            self.velocity.insert(name, t);
        }
        Ok(())
    }

    /// The network with the trained weights.
    pub fn into_network(self) -> Result<Network, EngineError> {
        self.network()
    }
}
