//! The robustness curve: accuracy over ε on a labelled set, one [`evaluate`] per ε value, with
//! progress and cancel. The app runs it on a background thread; it needs no egui.

use std::sync::Arc;

use super::eval_loop::evaluate;
use crate::array::Array;
use crate::attack::{AttackConfig, AttackKind, Norm};
use crate::cancel::Cancel;
use crate::data::Labelled;
use crate::defense::Defense;
use crate::engine::gpu::GpuContext;
use crate::engine::{Defended, EngineChoice, open_engine};
use crate::model::Network;

/// Images per batch, so progress moves and cancel is prompt.
const CHUNK: usize = 25;

/// A progress message from a running curve.
#[derive(Clone, Debug, PartialEq)]
pub enum CurveProgress {
    /// One ε value is done.
    Point {
        /// ε in pixel units.
        eps: f32,
        /// Fraction of images still classified correctly.
        accuracy: f32,
    },
    /// Fraction of the whole job done.
    Fraction(f32),
    /// The job finished.
    Done,
    /// The job failed.
    Failed(String),
}

/// What a robustness curve needs.
pub struct RobustnessJob {
    /// The network.
    pub net: Arc<Network>,
    /// Images `[N, C, H, W]`.
    pub images: Array,
    /// Their labels.
    pub labels: Vec<usize>,
    /// The attack (ε is replaced for each point; minimum-norm attacks run as PGD).
    pub cfg: AttackConfig,
    /// ε values.
    pub eps: Vec<f32>,
    /// The engine, chosen as for the live view.
    pub engine: EngineChoice,
    /// The device to run the gpu engine on (the window's, in the app); `None` finds one.
    pub gpu: Option<GpuContext>,
    /// The defence in front of the network, as for the live view (none: the bare network). A
    /// random defence predicts each image with one draw per pass.
    pub defense: Defense,
}

/// The attack a robustness curve uses: the chosen one, or PGD for minimum-norm attacks (they
/// ignore ε).
pub fn curve_attack(cfg: &AttackConfig) -> AttackKind {
    if cfg.kind.is_minimum_norm() {
        AttackKind::Pgd
    } else {
        cfg.kind
    }
}

/// The attack of the point at `eps`. At ε = 0 every bounded attack returns the image itself, so
/// the point is measured with one FGSM step of size 0: the clean accuracy under the same forward
/// options (the denoise bypass) at the cost of one gradient.
fn attack_at(cfg: &AttackConfig, eps: f32) -> AttackConfig {
    let kind = if eps == 0.0 {
        AttackKind::Fgsm
    } else {
        curve_attack(cfg)
    };
    AttackConfig {
        kind,
        eps,
        norm: if cfg.kind == AttackKind::Cw {
            Norm::L2
        } else {
            cfg.norm
        },
        ..cfg.clone()
    }
}

/// Runs the whole curve, sending progress through `send`: a [`CurveProgress::Fraction`] after every
/// batch and a [`CurveProgress::Point`] after every ε. Returns an error when cancelled.
pub fn robustness_curve(
    job: &RobustnessJob,
    cancel: &Cancel,
    send: &dyn Fn(CurveProgress),
) -> Result<(), String> {
    let n = job.images.batch();
    if n == 0 || job.labels.len() != n {
        return Err(format!(
            "the curve needs images and one label each ({n} images, {} labels)",
            job.labels.len()
        ));
    }
    let engine = open_engine(job.net.clone(), job.engine, job.gpu.as_ref())
        .map_err(|e| e.to_string())?
        .engine;
    let mut engine = Defended::new(engine, job.defense.clone()).map_err(|e| e.to_string())?;
    let data = Labelled {
        images: job.images.clone(),
        labels: job.labels.clone(),
    };
    let points = job.eps.len().max(1);
    for (k, &eps) in job.eps.iter().enumerate() {
        let cfg = attack_at(&job.cfg, eps);
        let mut progress = |done: usize, total: usize| {
            let f = (k as f32 + done as f32 / total.max(1) as f32) / points as f32;
            send(CurveProgress::Fraction(f));
        };
        let report = evaluate(
            &mut engine,
            &data,
            std::slice::from_ref(&cfg),
            CHUNK,
            false,
            cancel,
            &mut progress,
        )
        .map_err(|e| e.to_string())?;
        cancel.check().map_err(|e| e.to_string())?;
        let accuracy = report
            .rows
            .first()
            .map_or(0.0, |r| r.correct as f32 / r.images.max(1) as f32);
        send(CurveProgress::Point { eps, accuracy });
    }
    Ok(())
}
