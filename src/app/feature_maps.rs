//! The feature-map panel: a tap chooser (denoise blocks first), a channel chooser, and the grid
//! rows clean / adversarial / |Δ| × columns block input / op output / block output (for a denoise
//! tap) on one shared colour scale, or with the |Δ| rows on their own scale (a toggle), with the
//! colour bars of both ranges and the value under the cursor.

use eframe::egui;

use super::textures::{colour_bar, positive_colour_bar, rgb_texture};
use crate::analysis::Snapshot;
use crate::analysis::{FeatureGrid, Row, denoise_block_of, feature_grid, map_rgb};
use crate::model::{Tap, TapKind};

/// What the textures are made for: snapshot id, tap, channel and whether |Δ| has its own scale.
type GridKey = (u64, String, usize, bool);

/// Textures of the grid for one (snapshot, tap, channel, |Δ| scale).
struct GridTextures {
    key: GridKey,
    grid: FeatureGrid,
    /// `cells[column][row]`.
    cells: Vec<Vec<egui::TextureHandle>>,
    bar: egui::TextureHandle,
    /// The |Δ| rows' bar (0 to their own scale), when they have one.
    delta_bar: Option<egui::TextureHandle>,
}

/// The label of the toggle that gives the |Δ| rows their own colour scale.
pub const DELTA_SCALE_TOGGLE: &str = "|Δ| own scale";

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
    match kind.and_then(denoise_block_of) {
        Some(_) => format!("• {name}"),
        None => name.to_string(),
    }
}

/// The user's choices the panel edits (persisted in the settings).
pub struct MapChoice<'a> {
    /// The tap shown.
    pub tap: &'a mut Option<String>,
    /// Its channel.
    pub channel: &'a mut usize,
    /// Whether the |Δ| rows have their own colour scale.
    pub delta_own_scale: &'a mut bool,
}

/// The feature-map panel (one tap and channel; for a denoise tap the block's input, operation
/// output and output) and the textures it draws, made once per result, tap, channel and scale.
#[derive(Default)]
pub struct FeatureMapsPanel {
    textures: Option<GridTextures>,
}

impl FeatureMapsPanel {
    /// Draws the panel for `snap`; `choices` are the tap names in display order, `choice` the
    /// user's tap, channel and scale, which it edits.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        snap: &Snapshot,
        choices: &[String],
        choice: MapChoice<'_>,
    ) {
        feature_maps_ui(ui, snap, choices, choice, &mut self.textures);
    }

    /// The scales of the grid on screen: the shared one and the one the |Δ| rows are drawn with
    /// (`None` before anything is drawn).
    pub fn shown_scales(&self) -> Option<(f32, f32)> {
        let g = &self.textures.as_ref()?.grid;
        Some((g.scale, g.row_scale(Row::Delta)))
    }
}

fn feature_maps_ui(
    ui: &mut egui::Ui,
    snap: &Snapshot,
    choices: &[String],
    choice: MapChoice<'_>,
    tex: &mut Option<GridTextures>,
) {
    let MapChoice {
        tap,
        channel,
        delta_own_scale,
    } = choice;
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
        ui.checkbox(delta_own_scale, DELTA_SCALE_TOGGLE).on_hover_text(
            "Draw the |Δ| rows on their own scale, 0 to their largest value, instead of the scale \
             the clean and adversarial maps share; the second colour bar shows its range",
        );
    });
    let key = (snap.id, current.clone(), *channel, *delta_own_scale);
    if tex.as_ref().is_none_or(|t| t.key != key) {
        *tex = build(ui.ctx(), snap, key);
    }
    let Some(t) = tex.as_ref() else {
        ui.label("(no map for this tap)");
        return;
    };
    grid_ui(ui, t);
}

fn build(ctx: &egui::Context, snap: &Snapshot, key: GridKey) -> Option<GridTextures> {
    let grid = feature_grid(snap, &key.1, key.2)?.with_delta_own_scale(key.3);
    let cells = grid
        .columns
        .iter()
        .enumerate()
        .map(|(ci, col)| {
            Row::ALL
                .iter()
                .map(|&row| {
                    let rgb = map_rgb(col.map(row), grid.row_scale(row));
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
    let delta_bar = grid.delta_own_scale.then(|| positive_colour_bar(ctx));
    Some(GridTextures {
        key,
        grid,
        cells,
        bar: colour_bar(ctx),
        delta_bar,
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
        let bar_h = 3.0 * size.y - 20.0;
        ui.vertical(|ui| {
            ui.label(format!("+{:.3}", g.scale));
            let shared = if t.delta_bar.is_some() {
                "The clean and adversarial maps' scale: red positive, blue negative, white 0"
            } else {
                "One shared scale for every cell: red positive, blue negative, white 0"
            };
            ui.image((t.bar.id(), egui::vec2(18.0, bar_h)))
                .on_hover_text(shared);
            ui.label(format!("−{:.3}", g.scale));
        });
        if let Some(bar) = &t.delta_bar {
            ui.vertical(|ui| {
                ui.label(format!("|Δ| {:.3}", g.delta_scale));
                ui.image((bar.id(), egui::vec2(18.0, bar_h)))
                    .on_hover_text("The |Δ| rows' own scale: white 0, red their largest value");
                ui.label("0");
            });
        }
    });
    ui.label(hovered.unwrap_or_else(|| {
        format!(
            "channel {} · {}×{} · hover a map for its value",
            g.channel, g.h, g.w
        )
    }));
}
