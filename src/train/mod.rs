//! Training the resnet-denoise family with gradients on the weights (the one place that needs
//! them). This is the minimal trainer the tests use: SGD with momentum and weight decay on
//! softmax cross-entropy, batch norm in inference mode with its running statistics fixed.
//! Adversarial training, batch statistics, schedules and checkpoints belong to `advlens train`.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};

use crate::array::Array;
use crate::engine::cpu::{ParamMode, RunOptions, backend, backward_from, run_logits, to_array};
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
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction of the batch classified correctly (before the update).
    pub accuracy: f32,
}

/// Trains a network's weights in place.
pub struct Trainer {
    net: Network,
    vars: HashMap<String, Var>,
    constants: HashMap<String, Tensor>,
    velocity: HashMap<String, Tensor>,
    cfg: SgdConfig,
    stock_conv: bool,
}

impl Trainer {
    /// Prepares `net` for training.
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
            stock_conv: false,
        })
    }

    /// Trains with candle's own convolution instead of advlens's (the baseline in benchmarks).
    pub fn with_stock_conv(mut self, stock: bool) -> Self {
        self.stock_conv = stock;
        self
    }

    /// One SGD step on a labelled batch.
    pub fn step(&mut self, x: &Array, labels: &[usize]) -> Result<StepStats, EngineError> {
        check_input(&self.net, x)?;
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
            stock_conv: self.stock_conv,
        };
        let logits_t = run_logits(g, &params, &xt, opts)?;
        let logits = to_array(&logits_t)?;
        let loss = Loss::CrossEntropy {
            classes: labels.to_vec(),
        };
        let (values, mut dz) = loss.evaluate(&logits)?;
        let n = labels.len() as f32;
        for v in dz.data_mut() {
            *v /= n;
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
        Ok(StepStats {
            loss: values.iter().sum::<f32>() / n,
            accuracy: correct as f32 / n,
        })
    }

    /// The network with the trained weights.
    pub fn into_network(mut self) -> Result<Network, EngineError> {
        for (name, var) in &self.vars {
            let a = to_array(var.as_tensor())?;
            self.net.weights.insert(name.clone(), a);
        }
        Ok(self.net)
    }
}
