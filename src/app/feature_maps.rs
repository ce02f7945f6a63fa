//! The feature-map panel: a tap chooser (denoise blocks first), a channel chooser, and the grid
//! rows clean / adversarial / |Δ| × columns before / after denoise on one shared colour scale, with
//! a colour bar and the value under the cursor.

use eframe::egui;

use super::textures::{colour_bar, rgb_texture};
use crate::analysis::Snapshot;
use crate::analysis::{FeatureGrid, Row, feature_grid, map_rgb};
use crate::model::{Tap, TapKind};

/// Textures of the grid for one (snapshot, tap, channel).
struct GridTextures {
    key: (u64, String, usize),
    grid: FeatureGrid,
    /// `cells[column][row]`.
    cells: Vec<Vec<egui::TextureHandle>>,
    bar: egui::TextureHandle,
}

/// The spatial taps of the network, denoise taps first (what the chooser lists).
pub fn tap_choices(snap: &Snapshot, graph_order: &[&Tap]) -> Vec<String> {
    graph_order
        .iter()
        .filter(|t| snap.tap(&t.name).is_some_and(|p| p.chw().is_some()))
        .map(|t| t.name.clone())
        .collect()
}

/// The label of a tap in the chooser.
pub fn tap_label(name: &str, kind: Option<TapKind>) -> String {
    match kind {
        Some(TapKind::DenoiseBefore(_) | TapKind::DenoiseAfter(_)) => format!("• {name}"),
        _ => name.to_string(),
    }
}

/// Draws the panel. `tap` and `channel` are the settings being edited; `choices` the tap names in
/// display order.
/// The feature-map panel (one tap and channel, before and after its denoise block) and the
/// textures it draws, made once per result, tap and channel.
#[derive(Default)]
pub struct FeatureMapsPanel {
    textures: Option<GridTextures>,
}

impl FeatureMapsPanel {
    /// Draws the panel for `snap`; `tap` and `channel` are the user's choice, which it edits.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        snap: &Snapshot,
        choices: &[String],
        tap: &mut Option<String>,
        channel: &mut usize,
    ) {
        feature_maps_ui(ui, snap, choices, tap, channel, &mut self.textures);
    }
}

fn feature_maps_ui(
    ui: &mut egui::Ui,
    snap: &Snapshot,
    choices: &[String],
    tap: &mut Option<String>,
    channel: &mut usize,
    tex: &mut Option<GridTextures>,
) {
    if tap.as_ref().is_none_or(|t| !choices.contains(t)) {
        *tap = choices.first().cloned();
    }
    let Some(current) = tap.clone() else {
        ui.label("This network has no spatial taps.");
        return;
    };
    let channels = snap
        .tap(&current)
        .and_then(|p| p.chw())
        .map_or(1, |[c, _, _]| c);
    if *channel >= channels {
        *channel = 0;
    }
    ui.horizontal(|ui| {
        ui.strong("feature maps");
        ui.label("tap");
        egui::ComboBox::from_id_salt("tap")
            .selected_text(&current)
            .width(220.0)
            .show_ui(ui, |ui| {
                for name in choices {
                    let kind = snap.tap(name).map(|p| p.kind);
                    ui.selectable_value(tap, Some(name.clone()), tap_label(name, kind));
                }
            })
            .response
            .on_hover_text("The activation to show; • marks denoise-block taps (listed first)");
        ui.label("channel");
        ui.add(egui::DragValue::new(channel).range(0..=channels.saturating_sub(1)))
            .on_hover_text("Channel of the tap (also: click a thumbnail below)");
        ui.label(format!("of {channels}"));
    });
    let key = (snap.id, current.clone(), *channel);
    if tex.as_ref().is_none_or(|t| t.key != key) {
        *tex = build(ui.ctx(), snap, key);
    }
    let Some(t) = tex.as_ref() else {
        ui.label("(no map for this tap)");
        return;
    };
    grid_ui(ui, t);
}

fn build(ctx: &egui::Context, snap: &Snapshot, key: (u64, String, usize)) -> Option<GridTextures> {
    let grid = feature_grid(snap, &key.1, key.2)?;
    let cells = grid
        .columns
        .iter()
        .enumerate()
        .map(|(ci, col)| {
            Row::ALL
                .iter()
                .map(|&row| {
                    let rgb = map_rgb(col.map(row), grid.scale);
                    rgb_texture(
                        ctx,
                        &format!("fm-{ci}-{}", row.label()),
                        [grid.w, grid.h],
                        &rgb,
                    )
                })
                .collect()
        })
        .collect();
    Some(GridTextures {
        key,
        grid,
        cells,
        bar: colour_bar(ctx),
    })
}

fn grid_ui(ui: &mut egui::Ui, t: &GridTextures) {
    let g = &t.grid;
    let cols = g.columns.len().max(1) as f32;
    // Fit the width, and keep the three rows short enough that the panels below stay visible.
    let avail = ui.available_width() - 200.0;
    let cell = (avail / cols).clamp(64.0, 112.0);
    let size = egui::vec2(cell, cell * g.h as f32 / g.w.max(1) as f32);
    let mut hovered: Option<String> = None;
    ui.horizontal_top(|ui| {
        egui::Grid::new("fm-grid")
            .spacing([6.0, 6.0])
            .show(ui, |ui| {
                ui.label("");
                for col in &g.columns {
                    ui.strong(&col.title).on_hover_text(&col.tap);
                }
                ui.end_row();
                for (ri, row) in Row::ALL.into_iter().enumerate() {
                    ui.label(row.label());
                    for (ci, col) in g.columns.iter().enumerate() {
                        let Some(tex) = t.cells.get(ci).and_then(|c| c.get(ri)) else {
                            continue;
                        };
                        let resp =
                            ui.add(egui::Image::new((tex.id(), size)).sense(egui::Sense::hover()));
                        if let Some(p) = resp.hover_pos() {
                            let rel = (p - resp.rect.min) / resp.rect.size();
                            let x = ((rel.x * g.w as f32) as usize).min(g.w.saturating_sub(1));
                            let y = ((rel.y * g.h as f32) as usize).min(g.h.saturating_sub(1));
                            let v = col.map(row).get(y * g.w + x).copied().unwrap_or(0.0);
                            hovered = Some(format!(
                                "{} {}, (y {y}, x {x}): {v:.4}",
                                row.label(),
                                col.title
                            ));
                        }
                    }
                    ui.end_row();
                }
            });
        ui.vertical(|ui| {
            ui.label(format!("+{:.3}", g.scale));
            ui.image((t.bar.id(), egui::vec2(18.0, 3.0 * size.y - 20.0)))
                .on_hover_text(
                    "One shared scale for every cell: red positive, blue negative, white 0",
                );
            ui.label(format!("−{:.3}", g.scale));
        });
    });
    ui.label(hovered.unwrap_or_else(|| {
        format!(
            "channel {} · {}×{} · hover a map for its value",
            g.channel, g.h, g.w
        )
    }));
}
