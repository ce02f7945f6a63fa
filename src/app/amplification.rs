//! The amplification plot: ||A(x_adv) − A(x)|| / ||A(x)|| per tap over depth for the current image,
//! with the denoise blocks' before/after taps marked.

use eframe::egui;
use egui_plot::{Legend, Line, MarkerShape, Plot, PlotPoints, Points, VLine};

use super::worker::Snapshot;
use crate::model::graph::TapKind;

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
    Plot::new("amplification_plot")
        .height(150.0)
        .legend(Legend::default().position(egui_plot::Corner::LeftTop))
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
                        .color(egui::Color32::from_rgb(120, 180, 120))
                        .style(egui_plot::LineStyle::dashed_dense()),
                );
            }
            plot_ui.line(Line::new("all taps", PlotPoints::from(all)));
            plot_ui.points(
                Points::new("before denoise", PlotPoints::from(before))
                    .shape(MarkerShape::Circle)
                    .radius(4.0)
                    .color(egui::Color32::from_rgb(230, 150, 40)),
            );
            plot_ui.points(
                Points::new("after denoise", PlotPoints::from(after))
                    .shape(MarkerShape::Diamond)
                    .radius(5.0)
                    .color(egui::Color32::from_rgb(60, 170, 60)),
            );
        });
}
