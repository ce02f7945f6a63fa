//! The robustness panel: the curve of [`crate::analysis::robustness`] over N bundled test images,
//! computed on its own named thread with progress and cancel, and drawn with egui_plot.

use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints, Points};

use super::settings::{CurveAttack, RobustnessSettings};
use super::task::{Task, Waker};
use crate::analysis::{CurveProgress, RobustnessJob, curve_attack, robustness_curve};
use crate::cancel::Cancel;

/// Colour of the curve.
const CURVE: egui::Color32 = egui::Color32::from_rgb(90, 140, 220);

/// Name of the robustness thread.
pub const ROBUSTNESS_THREAD: &str = "advlens-robustness";

/// A running or finished robustness curve. Dropping it cancels the job; the thread ends after
/// its current batch and is not joined, so the UI never waits for it.
pub struct RobustnessRun {
    /// `(ε ×255, accuracy)` so far.
    pub points: Vec<[f64; 2]>,
    /// Fraction done.
    pub progress: f32,
    /// The attack that was used.
    pub attack: String,
    /// Error, if the job failed.
    pub error: Option<String>,
    task: Option<Task<RobustnessJob, CurveProgress>>,
    cancel: Cancel,
}

impl RobustnessRun {
    /// Starts `job` on a named thread.
    pub fn start(job: RobustnessJob, wake: Waker) -> std::io::Result<Self> {
        let cancel = Cancel::new();
        let c = cancel.clone();
        let attack = curve_attack(&job.cfg).id().to_string();
        let task = Task::spawn(ROBUSTNESS_THREAD, wake, move |batch, reply| {
            for job in batch {
                let send = |p: CurveProgress| {
                    reply.send(p);
                };
                match robustness_curve(&job, &c, &send) {
                    Ok(()) => send(CurveProgress::Done),
                    Err(_) if c.is_cancelled() => {}
                    Err(e) => send(CurveProgress::Failed(e)),
                }
            }
            false // one job per run
        })?;
        task.send(job);
        Ok(Self {
            points: vec![],
            progress: 0.0,
            attack,
            error: None,
            task: Some(task),
            cancel,
        })
    }

    /// Whether the job is still running.
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Asks the job to stop; the points so far stay.
    pub fn cancel(&mut self) {
        self.cancel.cancel();
        self.task = None;
    }

    /// Takes the messages that arrived.
    pub fn poll(&mut self) {
        let Some(task) = &self.task else { return };
        let (messages, stopped) = task.drain();
        let mut finished = stopped.is_some();
        for m in messages {
            match m {
                CurveProgress::Point { eps, accuracy } => {
                    self.points
                        .push([f64::from(eps * 255.0), f64::from(accuracy)]);
                }
                CurveProgress::Fraction(f) => self.progress = f,
                CurveProgress::Done => {
                    self.progress = 1.0;
                    finished = true;
                }
                CurveProgress::Failed(e) => {
                    self.error = Some(e);
                    finished = true;
                }
            }
        }
        if finished {
            self.task = None;
        }
    }
}

impl Drop for RobustnessRun {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
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

/// The curve's attack choice, next to the heading: the selected attack or APGD-CE and its steps.
fn curve_attack_ui(ui: &mut egui::Ui, settings: &mut RobustnessSettings, selected: &str) {
    let label = |a: CurveAttack| match a {
        CurveAttack::Selected => format!("selected ({selected})"),
        CurveAttack::ApgdCe => "apgd-ce".to_string(),
    };
    egui::ComboBox::from_id_salt("curve-attack")
        .selected_text(label(settings.attack))
        .show_ui(ui, |ui| {
            ui.selectable_value(
                &mut settings.attack,
                CurveAttack::Selected,
                label(CurveAttack::Selected),
            )
            .on_hover_text("The attack and settings of the controls (PGD for C&W and DeepFool)");
            ui.selectable_value(&mut settings.attack, CurveAttack::ApgdCe, "apgd-ce")
                .on_hover_text(
                    "APGD on the cross-entropy, untargeted, with its own step count: a stronger attack than a fixed-step PGD at a similar cost",
                );
        })
        .response
        .on_hover_text("The attack run at every ε of the curve");
    if settings.attack == CurveAttack::ApgdCe {
        ui.add(
            egui::DragValue::new(&mut settings.apgd_steps)
                .range(1..=1000)
                .prefix("steps "),
        )
        .on_hover_text(format!(
            "APGD-CE's steps on the curve ({} by default, AutoAttack uses 100: at ε = 0.1 on the default model both give the same accuracy, 20 is 4× faster)",
            super::settings::CURVE_APGD_STEPS
        ));
    }
}

/// Draws the robustness panel: settings, run/cancel, progress and the curve. `selected` is the
/// id of the attack the controls select.
pub fn robustness_ui(
    ui: &mut egui::Ui,
    settings: &mut RobustnessSettings,
    run: Option<&RobustnessRun>,
    max_images: usize,
    selected: &str,
) -> Action {
    let mut action = Action::None;
    ui.horizontal(|ui| {
        ui.strong("robustness: accuracy over ε")
            .on_hover_text("Accuracy on the first N bundled test images, attacked at each ε with the chosen attack.");
        curve_attack_ui(ui, settings, selected);
    });
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
        ui.horizontal(|ui| {
            super::amplification::legend_entry(ui, super::amplification::Marker::Dot, CURVE, &name);
        });
        Plot::new("robustness_plot")
            .height(super::amplification::plot_height(ui))
            .include_y(0.0)
            .include_y(1.0)
            .include_x(0.0)
            .x_axis_label("ε ×255")
            .y_axis_label("accuracy")
            .allow_scroll(false)
            .show(ui, |plot_ui| {
                plot_ui.line(Line::new(name.clone(), PlotPoints::from(pts.clone())).color(CURVE));
                plot_ui.points(
                    Points::new(name, PlotPoints::from(pts))
                        .radius(3.0)
                        .color(CURVE),
                );
            });
    } else {
        ui.label("Press Run to compute the curve.");
    }
    action
}
