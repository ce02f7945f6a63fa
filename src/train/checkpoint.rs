//! Training checkpoints: the network (weights and batch-norm running averages), the momentum
//! buffers and where training stands, in one safetensors file written atomically, so an
//! interrupted run resumes exactly where it stopped.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::array::Array;
use crate::model::{ModelError, Network, weights};

/// Metadata key holding the [`TrainState`] as JSON.
pub const META_STATE: &str = "advlens.train_state";
/// Name prefix of the momentum buffers in a checkpoint.
pub const VELOCITY_PREFIX: &str = "train_velocity/";

/// Where a training run stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Batches of that epoch already trained on.
    pub batch: usize,
    /// Optimiser steps taken in all.
    pub global_step: usize,
    /// The run's settings, as JSON (a resumed run must use the same ones).
    pub config: serde_json::Value,
    /// Seconds spent training so far (over every resumed part).
    #[serde(default)]
    pub seconds: f64,
}

/// A checkpoint as loaded.
pub struct Checkpoint {
    /// The network at the checkpoint.
    pub net: Network,
    /// Momentum buffers by parameter name.
    pub velocity: Vec<(String, Array)>,
    /// Where training stood.
    pub state: TrainState,
}

/// Writes a checkpoint atomically.
pub fn save(
    path: &Path,
    net: &Network,
    velocity: &[(String, Array)],
    state: &TrainState,
) -> Result<(), ModelError> {
    let mut net = net.clone();
    let state_json = serde_json::to_string(state).map_err(|e| ModelError::BadFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    net.metadata.insert(META_STATE.into(), state_json);
    let extra: Vec<(String, Array)> = velocity
        .iter()
        .map(|(k, v)| (format!("{VELOCITY_PREFIX}{k}"), v.clone()))
        .collect();
    let bytes = weights::to_bytes_with(&net, &extra)?;
    crate::io::write_atomic(path, &bytes).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Checkpoint, ModelError> {
    let bad = |reason: String| ModelError::BadFile {
        path: path.display().to_string(),
        reason,
    };
    let bytes = crate::io::read_limited(path, weights::MAX_FILE_BYTES).map_err(|source| {
        ModelError::Io {
            path: path.display().to_string(),
            source,
        }
    })?;
    let (mut net, extra) =
        weights::from_bytes_with(&bytes, Some(VELOCITY_PREFIX)).map_err(|e| match e {
            ModelError::BadFile { reason, .. } => bad(reason),
            other => other,
        })?;
    let state_json = net.metadata.remove(META_STATE).ok_or_else(|| {
        bad("not a training checkpoint (no training state in the metadata)".into())
    })?;
    let state: TrainState = serde_json::from_str(&state_json)
        .map_err(|e| bad(format!("the training state is not valid: {e}")))?;
    let velocity = extra
        .into_iter()
        .map(|(k, v)| (k[VELOCITY_PREFIX.len()..].to_string(), v))
        .collect();
    Ok(Checkpoint {
        net,
        velocity,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run compares its state with the saved one exactly, so every f64 must survive
    /// the JSON round trip (serde_json's `float_roundtrip`; without it this value came back one
    /// unit in the last place off).
    #[test]
    fn training_state_survives_json_exactly() {
        let state = TrainState {
            epoch: 1,
            batch: 1,
            global_step: 4,
            config: serde_json::json!({ "lr": 0.05 }),
            seconds: 1.8616106860000001,
        };
        let back: TrainState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }
}
