//! The amplification plot: ||A(x_adv) − A(x)|| / ||A(x)|| per tap over depth for the current image,
//! with the denoise blocks' before/after taps marked.

use eframe::egui;
use egui_plot::{Line, MarkerShape, Plot, PlotPoints, Points, VLine};

use crate::analysis::Snapshot;
use crate::model::TapKind;

/// Colour of the line through every tap.
const LINE: egui::Color32 = egui::Color32::from_rgb(90, 140, 220);
/// Colour of the taps before a denoise block.
const BEFORE: egui::Color32 = egui::Color32::from_rgb(230, 150, 40);
/// Colour of the taps after a denoise block.
const AFTER: egui::Color32 = egui::Color32::from_rgb(60, 170, 60);
/// Colour of the lines marking the denoise blocks.
const BLOCK: egui::Color32 = egui::Color32::from_rgb(120, 180, 120);
/// The shortest a plot gets, points.
pub const MIN_PLOT_HEIGHT: f32 = 120.0;

/// The height a plot takes: what is left of its panel, but at least [`MIN_PLOT_HEIGHT`].
pub fn plot_height(ui: &egui::Ui) -> f32 {
    (ui.available_height() - 4.0).max(MIN_PLOT_HEIGHT)
}

/// The marker of a legend entry, as its series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A filled circle.
    Dot,
    /// A filled diamond.
    Diamond,
    /// A vertical dashed line.
    Dashes,
}

/// One legend entry: a coloured marker (painted, so no font needs the glyph) and its label.
pub fn legend_entry(ui: &mut egui::Ui, marker: Marker, colour: egui::Color32, label: &str) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
    let p = ui.painter();
    let c = rect.center();
    match marker {
        Marker::Dot => {
            p.circle_filled(c, 4.0, colour);
        }
        Marker::Diamond => {
            p.add(egui::Shape::convex_polygon(
                vec![
                    c + egui::vec2(0.0, -5.0),
                    c + egui::vec2(5.0, 0.0),
                    c + egui::vec2(0.0, 5.0),
                    c + egui::vec2(-5.0, 0.0),
                ],
                colour,
                egui::Stroke::NONE,
            ));
        }
        Marker::Dashes => {
            for k in 0..3 {
                let y = rect.top() + 1.0 + 3.5 * k as f32;
                p.line_segment(
                    [egui::pos2(c.x, y), egui::pos2(c.x, y + 2.0)],
                    egui::Stroke::new(1.5, colour),
                );
            }
        }
    }
    ui.label(label);
}

/// Plot points `[x, y]`.
pub type Series = Vec<[f64; 2]>;

/// Points `(depth index, amplification)` of every tap, then of the denoise blocks' before and
/// after taps.
pub fn series(snap: &Snapshot) -> (Series, Series, Series) {
    let mut all = vec![];
    let mut before = vec![];
    let mut after = vec![];
    for (i, t) in snap.taps.iter().enumerate() {
        let p = [i as f64, f64::from(t.amplification)];
        all.push(p);
        match t.kind {
            TapKind::DenoiseBefore(_) => before.push(p),
            TapKind::DenoiseAfter(_) => after.push(p),
            _ => {}
        }
    }
    (all, before, after)
}

/// Draws the plot.
pub fn amplification_ui(ui: &mut egui::Ui, snap: &Snapshot) {
    ui.strong("amplification ||ΔA|| / ||A|| by layer").on_hover_text(
        "Relative change of each tap's activation under the attack, in network order; denoise blocks marked",
    );
    let (all, before, after) = series(snap);
    let names: Vec<String> = snap.taps.iter().map(|t| t.name.clone()).collect();
    let names_hover = names.clone();
    let block_x: Vec<f64> = after.iter().map(|p| p[0]).collect();
    // The legend sits above the plot, never on the data.
    ui.horizontal_wrapped(|ui| {
        legend_entry(ui, Marker::Dot, LINE, "all taps");
        legend_entry(ui, Marker::Dot, BEFORE, "before denoise");
        legend_entry(ui, Marker::Diamond, AFTER, "after denoise");
        legend_entry(ui, Marker::Dashes, BLOCK, "denoise block");
    });
    Plot::new("amplification_plot")
        .height(plot_height(ui))
        .include_y(0.0)
        .allow_scroll(false)
        .x_axis_label("tap (depth)")
        .x_axis_formatter(move |mark, _| {
            let v = mark.value;
            if (v - v.round()).abs() > 1e-6 || v < 0.0 {
                return String::new();
            }
            names.get(v.round() as usize).cloned().unwrap_or_default()
        })
        .label_formatter(move |hover| {
            let value = match hover {
                egui_plot::HoverPosition::NearDataPoint { position, .. }
                | egui_plot::HoverPosition::Elsewhere { position } => *position,
            };
            let i = value.x.round();
            let name = if i >= 0.0 {
                names_hover.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            };
            Some(format!("{name}\n{:.3}", value.y))
        })
        .show(ui, |plot_ui| {
            for x in block_x {
                plot_ui.vline(
                    VLine::new("denoise block", x - 0.5)
                        .color(BLOCK)
                        .style(egui_plot::LineStyle::dashed_dense()),
                );
            }
            plot_ui.line(Line::new("all taps", PlotPoints::from(all)).color(LINE));
            plot_ui.points(
                Points::new("before denoise", PlotPoints::from(before))
                    .shape(MarkerShape::Circle)
                    .radius(4.0)
                    .color(BEFORE),
            );
            plot_ui.points(
                Points::new("after denoise", PlotPoints::from(after))
                    .shape(MarkerShape::Diamond)
                    .radius(5.0)
                    .color(AFTER),
            );
        });
}
