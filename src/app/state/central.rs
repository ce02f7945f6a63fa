//! The central panel: images and predictions, feature maps, channels, amplification and the
//! robustness curve, in one scroll area.

use eframe::egui;

use super::AdvlensApp;
use crate::analysis::Snapshot;
use crate::app::amplification::amplification_ui;
use crate::app::feature_maps::{MapChoice, tap_choices};
use crate::app::robustness::{self, robustness_ui};
use crate::app::slow_run::{SlowAction, SlowRun, SlowView, slow_run_ui};
use crate::data::Labelled;

/// Default height of the plot panel, points.
const PLOTS_HEIGHT: f32 = 270.0;
/// The plot panel never gets shorter than this (a plot of about 150 points plus its controls).
const PLOTS_MIN_HEIGHT: f32 = 220.0;

impl AdvlensApp {
    pub(super) fn central_ui(&mut self, ui: &mut egui::Ui) {
        let Some(snap) = self.snapshot.clone() else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("computing the first result…");
            });
            return;
        };
        let choices = tap_choices(&snap, &self.net.graph.taps_denoise_first());
        // The plots keep a panel of their own at the bottom (resizable, never shorter than a
        // usable plot), so a long top-5 list or a large feature map scrolls above them instead of
        // pushing them out of view.
        egui::Panel::bottom("plots")
            .resizable(true)
            .default_size(PLOTS_HEIGHT)
            .size_range(PLOTS_MIN_HEIGHT..=(0.7 * ui.available_height()).max(PLOTS_MIN_HEIGHT))
            .show(ui, |ui| self.plots_ui(ui, &snap));
        egui::ScrollArea::both()
            .id_salt("central-scroll")
            .auto_shrink(false)
            .show(ui, |ui| {
                self.slow_bar_ui(ui, &snap);
                self.images_panel.ui(ui, &snap);
                ui.separator();
                self.maps_panel.ui(
                    ui,
                    &snap,
                    &choices,
                    MapChoice {
                        tap: &mut self.settings.tap,
                        channel: &mut self.settings.channel,
                        delta_own_scale: &mut self.settings.delta_own_scale,
                    },
                );
                ui.separator();
                if let Some(tap) = self.settings.tap.clone()
                    && let Some(ch) = self.channels_panel.ui(
                        ui,
                        &snap,
                        &tap,
                        self.settings.channel,
                        &mut self.settings.sort_channels_by_delta,
                    )
                {
                    self.settings.channel = ch;
                }
            });
    }

    /// The slow job's progress, cancel and run buttons, and whether the views are stale; above
    /// them, why the selected defence cannot run on this model, if it cannot.
    fn slow_bar_ui(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        if let Some(e) = self.defense_error() {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "the defence cannot run on this model ({e}); the views show the last result"
                ),
            );
        }
        let selected = self.settings.attack.config();
        let selected_slow = self.selected_is_slow();
        let view = SlowView {
            run: self.slow.as_ref(),
            selected: &selected,
            selected_slow,
            shown: snap,
            stale: self.is_stale()
                && (selected_slow || self.slow.as_ref().is_some_and(SlowRun::in_flight)),
            waiting_for_release: self.waiting_for_release(),
        };
        match slow_run_ui(ui, &view) {
            SlowAction::Cancel => self.cancel_slow(),
            SlowAction::Run => self.rerun(),
            SlowAction::None => {}
        }
    }

    /// Amplification over depth and the robustness curve, side by side.
    fn plots_ui(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        ui.columns(2, |cols| {
            amplification_ui(&mut cols[0], snap);
            let max = self.bundled.as_ref().map_or(0, Labelled::len);
            let selected = crate::analysis::curve_attack(&self.settings.attack.config());
            let action = robustness_ui(
                &mut cols[1],
                &mut self.settings.robustness,
                self.robustness.as_ref(),
                max,
                selected.id(),
            );
            match action {
                robustness::Action::Start => self.start_robustness(),
                robustness::Action::Cancel => {
                    if let Some(r) = &mut self.robustness {
                        r.cancel();
                    }
                }
                robustness::Action::None => {}
            }
        });
    }
}
