//! The amplification plot: ||A(x_adv) − A(x)|| / ||A(x)|| per tap over depth for the current image,
//! with each denoise block's input, operation output and output taps marked.

use eframe::egui;
use egui_plot::{Line, MarkerShape, Plot, PlotPoints, Points, VLine};

use crate::analysis::Snapshot;
use crate::model::TapKind;

/// Colour of the line through every tap.
const LINE: egui::Color32 = egui::Color32::from_rgb(90, 140, 220);
/// Colour of the taps before a denoise block.
const BEFORE: egui::Color32 = egui::Color32::from_rgb(230, 150, 40);
/// Colour of the denoise operations' outputs (inside a block, before its 1×1 convolution).
const OP: egui::Color32 = egui::Color32::from_rgb(170, 80, 200);
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
    /// A filled square.
    Square,
    /// A vertical dashed line.
    Dashes,
}

/// One legend entry: a coloured marker (painted, so no font needs the glyph) and its label,
/// whose response it returns.
pub fn legend_entry(
    ui: &mut egui::Ui,
    marker: Marker,
    colour: egui::Color32,
    label: &str,
) -> egui::Response {
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
        Marker::Square => {
            p.rect_filled(
                egui::Rect::from_center_size(c, egui::vec2(8.0, 8.0)),
                0.0,
                colour,
            );
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
    ui.label(label)
}

/// Plot points `[x, y]`.
pub type Series = Vec<[f64; 2]>;

/// The plot's points `(depth index, amplification)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AmplificationSeries {
    /// Every tap on the network's path (the line); the denoise operations' outputs, which branch
    /// off it inside their blocks, are left out.
    pub path: Series,
    /// The denoise blocks' inputs.
    pub before: Series,
    /// The denoise operations' outputs `op(x)`.
    pub op: Series,
    /// The denoise blocks' outputs.
    pub after: Series,
}

/// The points of every tap, by kind.
pub fn series(snap: &Snapshot) -> AmplificationSeries {
    let mut s = AmplificationSeries::default();
    for (i, t) in snap.taps.iter().enumerate() {
        let p = [i as f64, f64::from(t.amplification)];
        match t.kind {
            TapKind::DenoiseOp(_) => {
                s.op.push(p);
                continue;
            }
            TapKind::DenoiseBefore(_) => s.before.push(p),
            TapKind::DenoiseAfter(_) => s.after.push(p),
            _ => {}
        }
        s.path.push(p);
    }
    s
}

/// Draws the plot.
pub fn amplification_ui(ui: &mut egui::Ui, snap: &Snapshot) {
    ui.strong("amplification ||ΔA|| / ||A|| by layer").on_hover_text(
        "Relative change of each tap's activation under the attack, in network order; each denoise block's input, operation output op(x) and output marked",
    );
    let AmplificationSeries {
        path,
        before,
        op,
        after,
    } = series(snap);
    let names: Vec<String> = snap.taps.iter().map(|t| t.name.clone()).collect();
    let names_hover = names.clone();
    // A block's work starts right after its input tap.
    let block_x: Vec<f64> = before.iter().map(|p| p[0] + 0.5).collect();
    // The legend sits above the plot, never on the data.
    ui.horizontal_wrapped(|ui| {
        legend_entry(ui, Marker::Dot, LINE, "path")
            .on_hover_text("Every tap on the network's path; a block's op output branches off it");
        legend_entry(ui, Marker::Dot, BEFORE, "block input");
        legend_entry(ui, Marker::Square, OP, "op output");
        legend_entry(ui, Marker::Diamond, AFTER, "block output");
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
                    VLine::new("denoise block", x)
                        .color(BLOCK)
                        .style(egui_plot::LineStyle::dashed_dense()),
                );
            }
            plot_ui.line(Line::new("path", PlotPoints::from(path)).color(LINE));
            plot_ui.points(
                Points::new("block input", PlotPoints::from(before))
                    .shape(MarkerShape::Circle)
                    .radius(4.0)
                    .color(BEFORE),
            );
            plot_ui.points(
                Points::new("op output", PlotPoints::from(op))
                    .shape(MarkerShape::Square)
                    .radius(4.0)
                    .color(OP),
            );
            plot_ui.points(
                Points::new("block output", PlotPoints::from(after))
                    .shape(MarkerShape::Diamond)
                    .radius(5.0)
                    .color(AFTER),
            );
        });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::analysis::{AnalyseJob, analyse};
    use crate::attack::{AttackConfig, AttackKind};
    use crate::cancel::Cancel;
    use crate::engine::EngineChoice;
    use crate::engine::cpu::CpuEngine;

    #[test]
    fn every_denoise_block_has_its_three_points_and_the_op_is_off_the_path() {
        let net = Arc::new(crate::zoo::default_network().unwrap());
        let mut engine = CpuEngine::new(net.clone()).unwrap();
        let job = AnalyseJob {
            id: 0,
            net: net.clone(),
            model_name: "builtin:default".into(),
            x: Arc::new(crate::zoo::default_image()),
            label: None,
            source: "test".into(),
            cfg: AttackConfig {
                kind: AttackKind::Fgsm,
                ..AttackConfig::default()
            },
            engine: EngineChoice::Cpu,
            defense: crate::defense::Defense::default(),
            cancel: Cancel::new(),
        };
        let snap = analyse(&mut engine, &job).unwrap();
        let s = series(&snap);
        let blocks = net.graph.denoise_blocks.len();
        assert!(blocks > 0);
        assert_eq!(
            (s.before.len(), s.op.len(), s.after.len()),
            (blocks, blocks, blocks)
        );
        assert_eq!(s.path.len() + blocks, snap.taps.len());
        for ((b, o), a) in s.before.iter().zip(&s.op).zip(&s.after) {
            // In network order: input, operation, output; the op's x is not on the path.
            assert!(b[0] < o[0] && o[0] < a[0]);
            assert!(s.path.iter().all(|p| p[0] != o[0]));
            let tap = &snap.taps[o[0] as usize];
            assert!(tap.name.ends_with("/op"), "{}", tap.name);
            assert_eq!(o[1], f64::from(tap.amplification));
        }
    }
}
