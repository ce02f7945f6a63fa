//! The channel grid: a thumbnail of the change (adversarial − clean) of every channel of the
//! selected tap, on one scale, optionally sorted by mean |Δ|; clicking one selects it.

use eframe::egui;

use super::textures::rgb_texture;
use crate::analysis::Snapshot;
use crate::analysis::{channel_deltas, channel_map, colour, sorted_by_delta};

/// Thumbnails of one (snapshot, tap).
struct ChannelTextures {
    key: (u64, String),
    deltas: Vec<f32>,
    thumbs: Vec<egui::TextureHandle>,
}

fn build(ctx: &egui::Context, snap: &Snapshot, tap: &str) -> Option<ChannelTextures> {
    let pair = snap.tap(tap)?;
    let [c, h, w] = pair.chw()?;
    let diffs: Vec<Vec<f32>> = (0..c)
        .map(|ch| {
            let a = channel_map(&pair.clean, ch).unwrap_or(&[]);
            let b = channel_map(&pair.adv, ch).unwrap_or(&[]);
            b.iter().zip(a).map(|(y, x)| y - x).collect()
        })
        .collect();
    let scale = diffs
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    let thumbs = diffs
        .iter()
        .enumerate()
        .map(|(ch, d)| {
            let rgb: Vec<u8> = d.iter().flat_map(|&v| colour(v, scale)).collect();
            rgb_texture(ctx, &format!("ch-{ch}"), [w, h], &rgb)
        })
        .collect();
    Some(ChannelTextures {
        key: (snap.id, tap.to_string()),
        deltas: channel_deltas(pair),
        thumbs,
    })
}

/// Draws the grid; returns the channel clicked, if any.
/// The channel grid of one tap (sorted by change, click to select) and its thumbnails, made once
/// per result and tap.
#[derive(Default)]
pub struct ChannelsPanel {
    textures: Option<ChannelTextures>,
}

impl ChannelsPanel {
    /// Draws the grid; returns the channel the user clicked.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        snap: &Snapshot,
        tap: &str,
        selected: usize,
        sort_by_delta: &mut bool,
    ) -> Option<usize> {
        channels_ui(ui, snap, tap, selected, sort_by_delta, &mut self.textures)
    }
}

fn channels_ui(
    ui: &mut egui::Ui,
    snap: &Snapshot,
    tap: &str,
    selected: usize,
    sort_by_delta: &mut bool,
    tex: &mut Option<ChannelTextures>,
) -> Option<usize> {
    let key = (snap.id, tap.to_string());
    if tex.as_ref().is_none_or(|t| t.key != key) {
        *tex = build(ui.ctx(), snap, tap);
    }
    let t = tex.as_ref()?;
    ui.horizontal(|ui| {
        ui.strong(format!("channels of {tap}"));
        ui.checkbox(sort_by_delta, "sort by |Δ|")
            .on_hover_text("Order the thumbnails by mean |adversarial − clean|, largest first");
    });
    let order = if *sort_by_delta {
        sorted_by_delta(&t.deltas)
    } else {
        (0..t.deltas.len()).collect()
    };
    let mut clicked = None;
    let side = 32.0;
    egui::ScrollArea::vertical()
        .id_salt("channels-scroll")
        .max_height(2.0 * (side + 8.0) + 4.0)
        .show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.spacing_mut().item_spacing = egui::vec2(4.0, 4.0);
                for ch in order {
                    let Some(th) = t.thumbs.get(ch) else { continue };
                    let resp = ui.add(
                        egui::Image::new((th.id(), egui::vec2(side, side)))
                            .sense(egui::Sense::click()),
                    );
                    if ch == selected {
                        ui.painter().rect_stroke(
                            resp.rect.expand(1.5),
                            0.0,
                            egui::Stroke::new(2.0, ui.visuals().selection.stroke.color),
                            egui::StrokeKind::Outside,
                        );
                    }
                    let d = t.deltas.get(ch).copied().unwrap_or(0.0);
                    if resp
                        .on_hover_text(format!("channel {ch}: mean |Δ| {d:.4}"))
                        .clicked()
                    {
                        clicked = Some(ch);
                    }
                }
            });
        });
    clicked
}
