//! The robustness curve: accuracy over ε on N bundled test images, computed on its own named
//! thread with progress and cancel, and drawn with egui_plot.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::thread::JoinHandle;

use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use super::settings::RobustnessSettings;
use super::worker::Waker;
use crate::array::Array;
use crate::attack::{AttackConfig, AttackKind, Cancel};
use crate::engine::gpu::GpuContext;
use crate::engine::{EngineChoice, ForwardOptions};
use crate::model::Network;

/// Images per attack call, so progress moves and cancel is prompt.
const CHUNK: usize = 25;

/// A progress message from the robustness thread.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
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

/// What the robustness job needs.
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
    /// The window's wgpu device, for the gpu engine.
    pub gpu: Option<GpuContext>,
}

/// A running or finished robustness curve.
pub struct RobustnessRun {
    /// `(ε, accuracy)` so far.
    pub points: Vec<[f64; 2]>,
    /// Fraction done.
    pub progress: f32,
    /// The attack that was used.
    pub attack: String,
    /// Error, if the job failed.
    pub error: Option<String>,
    rx: Option<Receiver<Progress>>,
    cancel: Cancel,
    thread: Option<JoinHandle<()>>,
}

impl RobustnessRun {
    /// Starts `job` on a named thread.
    pub fn start(job: RobustnessJob, wake: Waker) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let cancel = Cancel::new();
        let c = cancel.clone();
        let attack = attack_for(&job.cfg).id().to_string();
        let thread = std::thread::Builder::new()
            .name("advlens-robustness".into())
            .spawn(move || {
                let send = |p: Progress| {
                    let _ = tx.send(p);
                    wake();
                };
                match run_job(&job, &c, &send) {
                    Ok(()) => send(Progress::Done),
                    Err(e) if c.is_cancelled() => {
                        let _ = e;
                    }
                    Err(e) => send(Progress::Failed(e)),
                }
            })?;
        Ok(Self {
            points: vec![],
            progress: 0.0,
            attack,
            error: None,
            rx: Some(rx),
            cancel,
            thread: Some(thread),
        })
    }

    /// Whether the job is still running.
    pub fn is_running(&self) -> bool {
        self.rx.is_some()
    }

    /// Asks the job to stop.
    pub fn cancel(&mut self) {
        self.cancel.cancel();
        self.rx = None;
    }

    /// Takes the messages that arrived.
    pub fn poll(&mut self) {
        let Some(rx) = &self.rx else { return };
        let mut finished = false;
        loop {
            match rx.try_recv() {
                Ok(Progress::Point { eps, accuracy }) => {
                    self.points
                        .push([f64::from(eps * 255.0), f64::from(accuracy)]);
                }
                Ok(Progress::Fraction(f)) => self.progress = f,
                Ok(Progress::Done) => {
                    self.progress = 1.0;
                    finished = true;
                }
                Ok(Progress::Failed(e)) => {
                    self.error = Some(e);
                    finished = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    finished = true;
                    break;
                }
            }
        }
        if finished {
            self.rx = None;
        }
    }
}

impl Drop for RobustnessRun {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The attack a robustness curve uses: the chosen one, or PGD for minimum-norm attacks (they
/// ignore ε).
pub fn attack_for(cfg: &AttackConfig) -> AttackKind {
    if cfg.kind.is_minimum_norm() {
        AttackKind::Pgd
    } else {
        cfg.kind
    }
}

/// Runs the whole curve, sending progress through `send`.
pub fn run_job(
    job: &RobustnessJob,
    cancel: &Cancel,
    send: &dyn Fn(Progress),
) -> Result<(), String> {
    let (mut engine, _notice) = super::worker::open(&job.net, job.engine, job.gpu.as_ref())?;
    let engine = engine.as_mut();
    let n = job.images.batch();
    if n == 0 {
        return Err("no images".into());
    }
    let chunks: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(CHUNK)
        .map(<[usize]>::to_vec)
        .collect();
    let total = (job.eps.len() * chunks.len()).max(1);
    let mut done = 0;
    for &eps in &job.eps {
        let mut correct = 0usize;
        for idx in &chunks {
            cancel.check().map_err(|e| e.to_string())?;
            let x = job.images.select(idx);
            let labels: Vec<usize> = idx.iter().map(|&i| job.labels[i]).collect();
            let cfg = AttackConfig {
                kind: attack_for(&job.cfg),
                eps,
                norm: if job.cfg.kind == AttackKind::Cw {
                    crate::attack::Norm::L2
                } else {
                    job.cfg.norm
                },
                ..job.cfg.clone()
            };
            let opts = ForwardOptions {
                bypass_denoise: cfg.bypass_denoise,
                ..ForwardOptions::default()
            };
            let x_eval = if eps > 0.0 {
                crate::attack::run(engine, &x, Some(&labels), &cfg, cancel)
                    .map_err(|e| e.to_string())?
                    .x_adv
            } else {
                x
            };
            let out = engine.forward(&x_eval, &opts).map_err(|e| e.to_string())?;
            let preds = crate::engine::predictions(&out.logits);
            correct += preds.iter().zip(&labels).filter(|(p, l)| p == l).count();
            done += 1;
            send(Progress::Fraction(done as f32 / total as f32));
        }
        send(Progress::Point {
            eps,
            accuracy: correct as f32 / n as f32,
        });
    }
    Ok(())
}

/// What the panel asks the app to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Start a new curve.
    Start,
    /// Cancel the running curve.
    Cancel,
}

/// Draws the robustness panel: settings, run/cancel, progress and the curve.
pub fn robustness_ui(
    ui: &mut egui::Ui,
    settings: &mut RobustnessSettings,
    run: Option<&RobustnessRun>,
    max_images: usize,
) -> Action {
    let mut action = Action::None;
    ui.strong("robustness: accuracy over ε")
        .on_hover_text("Accuracy on the first N bundled test images, attacked at each ε with the current attack settings.");
    ui.horizontal(|ui| {
        ui.add(
            egui::DragValue::new(&mut settings.images)
                .range(1..=max_images.max(1))
                .prefix("N "),
        )
        .on_hover_text("How many bundled test images");
        let mut max255 = settings.max_eps * 255.0;
        if ui
            .add(
                egui::DragValue::new(&mut max255)
                    .range(1.0..=255.0)
                    .prefix("max ε ")
                    .suffix("/255"),
            )
            .on_hover_text("Largest ε of the curve, in pixel units ×255")
            .changed()
        {
            settings.max_eps = max255 / 255.0;
        }
        ui.add(
            egui::DragValue::new(&mut settings.points)
                .range(2..=33)
                .prefix("points "),
        )
        .on_hover_text("Number of ε values, 0 included");
        let running = run.is_some_and(RobustnessRun::is_running);
        if running {
            if ui
                .button("Cancel")
                .on_hover_text("Stop the curve")
                .clicked()
            {
                action = Action::Cancel;
            }
        } else if ui
            .button("Run")
            .on_hover_text("Compute the curve in the background")
            .clicked()
        {
            action = Action::Start;
        }
    });
    if let Some(run) = run {
        if run.is_running() {
            ui.add(egui::ProgressBar::new(run.progress).show_percentage());
        }
        if let Some(e) = &run.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let pts = run.points.clone();
        let name = format!("{} accuracy", run.attack);
        Plot::new("robustness_plot")
            .height(150.0)
            .legend(Legend::default())
            .include_y(0.0)
            .include_y(1.0)
            .include_x(0.0)
            .x_axis_label("ε ×255")
            .y_axis_label("accuracy")
            .allow_scroll(false)
            .show(ui, |plot_ui| {
                plot_ui.line(Line::new(name.clone(), PlotPoints::from(pts.clone())));
                plot_ui.points(Points::new(name, PlotPoints::from(pts)).radius(3.0));
            });
    } else {
        ui.label("Press Run to compute the curve.");
    }
    action
}
