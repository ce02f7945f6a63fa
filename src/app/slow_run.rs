//! The slow jobs (Square, AutoAttack: thousands of passes per image; any attack whose gradients
//! average several draws of a random defence, EOT) seen from the UI: the runtime state of the one
//! in flight ([`SlowRun`], fed by the worker's progress replies) and its bar above the views
//! (stage, percentage, cancel, run again, and whether the views are stale).
//!
//! A slow job is not re-run live on every movement of the ε slider: it starts when the inputs
//! change and no widget is being dragged (so when the slider is released, or a value is typed),
//! and a cancelled or failed run waits for the "Run attack" button.

use std::time::Instant;

use eframe::egui;

use crate::analysis::{Snapshot, eot_draws};
use crate::attack::{AttackConfig, AttackKind};

/// Where a slow run is.
#[derive(Clone, Debug, PartialEq)]
pub enum SlowState {
    /// The worker is computing it.
    Running,
    /// Cancel was pressed; the worker stops at its next step.
    Cancelling,
    /// The worker stopped it part-way (it replied so).
    Cancelled,
    /// It ended in an error (also in the error list).
    Failed(String),
    /// Its result arrived (it is the one on screen unless a newer one replaced it).
    Done,
}

/// A slow attack submitted to the worker: runtime state only, never persisted.
#[derive(Clone, Debug)]
pub struct SlowRun {
    /// The job's id.
    pub id: u64,
    /// The attack.
    pub kind: AttackKind,
    /// Its ε, pixel units.
    pub eps: f32,
    /// The draws of a random defence each gradient averages over (EOT), 1 without.
    pub draws: usize,
    /// The component running now (`apgd-ce`, `apgd-t`, `square`, …), once reported.
    pub stage: Option<&'static str>,
    /// Fraction of the whole run done, in [0, 1].
    pub done: f32,
    /// Where it is.
    pub state: SlowState,
    /// When it was submitted.
    pub started: Instant,
}

impl SlowRun {
    /// A run of `cfg` just submitted as job `id`, its gradients averaged over `draws` draws of
    /// the defence.
    pub fn new(id: u64, cfg: &AttackConfig, draws: usize) -> Self {
        Self {
            id,
            kind: cfg.kind,
            eps: cfg.eps,
            draws,
            stage: None,
            done: 0.0,
            state: SlowState::Running,
            started: Instant::now(),
        }
    }

    /// Whether the worker is still on it (running or finishing a cancelled step).
    pub fn in_flight(&self) -> bool {
        matches!(self.state, SlowState::Running | SlowState::Cancelling)
    }
}

/// What the bar asks the app to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowAction {
    /// Nothing.
    None,
    /// Cancel the running job.
    Cancel,
    /// Submit the current settings again.
    Run,
}

/// What the bar shows.
pub struct SlowView<'a> {
    /// The slow run, if one was submitted since the last fast one.
    pub run: Option<&'a SlowRun>,
    /// The attack the settings select now.
    pub selected: &'a AttackConfig,
    /// Whether the settings select a slow job (a slow attack, or EOT over a random defence).
    pub selected_slow: bool,
    /// The result on screen.
    pub shown: &'a Snapshot,
    /// Whether the result on screen is not the result of the current settings.
    pub stale: bool,
    /// Whether the current settings wait for a drag to end before they run.
    pub waiting_for_release: bool,
}

/// `attack ε N/255` (with ` EOT k` when gradients average k draws), how the bar names a run.
fn describe(kind: AttackKind, eps: f32, draws: usize) -> String {
    let eot = if draws > 1 {
        format!(" EOT {draws}")
    } else {
        String::new()
    };
    format!("{} ε {:.1}/255{eot}", kind.id(), eps * 255.0)
}

/// Draws the bar when a slow attack is selected or in flight; returns what the user asked for.
pub fn slow_run_ui(ui: &mut egui::Ui, view: &SlowView<'_>) -> SlowAction {
    let in_flight = view.run.is_some_and(SlowRun::in_flight);
    if !view.selected_slow && !in_flight {
        return SlowAction::None;
    }
    let mut action = SlowAction::None;
    ui.horizontal(|ui| {
        match view.run {
            Some(run) if in_flight => {
                let stage = run.stage.unwrap_or("starting");
                let text = format!(
                    "{} · {stage} {:.0}%",
                    describe(run.kind, run.eps, run.draws),
                    100.0 * run.done
                );
                ui.add(
                    egui::ProgressBar::new(run.done)
                        .desired_width(320.0)
                        .text(text),
                )
                .on_hover_text(
                    "The slow attack runs in the background; the views keep the last finished result until it is done",
                );
                if run.state == SlowState::Cancelling {
                    ui.spinner();
                    ui.label("cancelling…");
                } else if ui
                    .button("Cancel attack")
                    .on_hover_text("Stop this attack at its next step")
                    .clicked()
                {
                    action = SlowAction::Cancel;
                }
            }
            run => {
                match run.map(|r| &r.state) {
                    Some(SlowState::Cancelled) => {
                        let r = run.map_or(0.0, |r| r.done);
                        ui.label(format!("cancelled at {:.0}%", 100.0 * r));
                    }
                    Some(SlowState::Failed(e)) => {
                        ui.colored_label(ui.visuals().error_fg_color, format!("failed: {e}"));
                    }
                    _ if view.waiting_for_release => {
                        ui.label("runs when the slider is released");
                    }
                    Some(SlowState::Done) if view.shown.id == run.map_or(0, |r| r.id) => {
                        ui.label(format!(
                            "{} finished in {:.1} s",
                            describe(
                                view.shown.cfg.kind,
                                view.shown.cfg.eps,
                                eot_draws(&view.shown.cfg, &view.shown.defense)
                            ),
                            view.shown.elapsed_ms / 1e3
                        ));
                    }
                    _ => {}
                }
                if ui
                    .button("Run attack")
                    .on_hover_text(format!(
                        "Run {} with the current settings in the background",
                        view.selected.kind.id()
                    ))
                    .clicked()
                {
                    action = SlowAction::Run;
                }
            }
        }
    });
    if view.stale {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            format!(
                "stale: showing the last finished result ({})",
                describe(
                    view.shown.cfg.kind,
                    view.shown.cfg.eps,
                    eot_draws(&view.shown.cfg, &view.shown.defense)
                )
            ),
        )
        .on_hover_text(
            "The views show the newest finished result; they update when the running attack ends",
        );
    }
    ui.separator();
    action
}
