//! The top row: clean image | perturbation (signed colour map, amplified) | adversarial image, and
//! the top-5 predictions clean vs adversarial (egui_plot, one shared class axis) under the
//! attack's diagnostics line ([`super::diagnostics`]). With a defence, a second row shows what the
//! network saw: the clean and adversarial images after the transformation, under their inputs
//! and at the same scale (the predictions and feature maps are those of these images).

use eframe::egui;
use egui_plot::{Bar, BarChart, Plot};

use super::textures::{CRISP, image_of, rgb_texture};
use crate::analysis::{Seen, Snapshot, eot_draws};
use crate::array::Array;
use crate::attack::ClassProb;

/// Textures of the three images of one snapshot.
struct ImageTextures {
    id: u64,
    clean: Option<egui::TextureHandle>,
    perturbation: Option<egui::TextureHandle>,
    adversarial: Option<egui::TextureHandle>,
    amplification: f32,
    /// The clean and adversarial images after the defence, when there is one.
    seen: Option<[Option<egui::TextureHandle>; 2]>,
}

impl ImageTextures {
    fn build(ctx: &egui::Context, snap: &Snapshot) -> Self {
        let clean = image_of(&snap.x).map(|i| ctx.load_texture("clean", i, CRISP));
        let adversarial = image_of(&snap.x_adv).map(|i| ctx.load_texture("adversarial", i, CRISP));
        let (perturbation, amplification) = match crate::analysis::perturbation_rgb(snap) {
            Ok((img, amp)) => {
                let size = [img.width() as usize, img.height() as usize];
                (
                    Some(rgb_texture(ctx, "perturbation", size, img.as_raw())),
                    amp,
                )
            }
            Err(_) => (None, 1.0),
        };
        let seen = snap.seen.as_ref().map(|s| {
            [
                image_of(&s.clean).map(|i| ctx.load_texture("seen-clean", i, CRISP)),
                image_of(&s.adv).map(|i| ctx.load_texture("seen-adversarial", i, CRISP)),
            ]
        });
        Self {
            id: snap.id,
            clean,
            perturbation,
            adversarial,
            amplification,
            seen,
        }
    }
}

/// Draws the image row for `snap`, rebuilding textures when the snapshot changed.
/// The images panel (clean, perturbation, adversarial, top-5) and the textures it draws, made
/// once per result.
#[derive(Default)]
pub struct ImagesPanel {
    textures: Option<ImageTextures>,
}

impl ImagesPanel {
    /// Draws the panel for `snap`.
    pub fn ui(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        images_ui(ui, snap, &mut self.textures);
    }
}

fn images_ui(ui: &mut egui::Ui, snap: &Snapshot, tex: &mut Option<ImageTextures>) {
    if tex.as_ref().is_none_or(|t| t.id != snap.id) {
        *tex = Some(ImageTextures::build(ui.ctx(), snap));
    }
    let Some(t) = tex.as_ref() else { return };
    let side = 112.0;
    let rec = snap.record.images.first();
    ui.horizontal(|ui| {
        match (&t.seen, &snap.seen) {
            // One grid, so each transformed image sits under its input.
            (Some(tex), Some(seen)) => {
                egui::Grid::new("images-grid")
                    .num_columns(3)
                    .spacing([8.0, 6.0])
                    .show(ui, |ui| {
                        input_cells(ui, snap, t, side);
                        ui.end_row();
                        seen_cells(ui, snap, seen, tex, side);
                        ui.end_row();
                    });
            }
            _ => input_cells(ui, snap, t, side),
        }
        if let Some(r) = rec {
            ui.vertical(|ui| {
                let verdict = if r.success {
                    "attack succeeded"
                } else {
                    "attack failed"
                };
                ui.label(format!("label {} · {verdict}", r.label));
                super::diagnostics::diagnostics_ui(ui, snap);
                top5_plot(ui, &r.clean_top5, &r.adversarial_top5, side + 8.0);
            });
        }
    });
}

/// Clean | perturbation | adversarial, the inputs the attack worked on: three cells in the
/// current layout.
fn input_cells(ui: &mut egui::Ui, snap: &Snapshot, t: &ImageTextures, side: f32) {
    let rec = snap.record.images.first();
    let clean_pred = rec
        .and_then(|r| r.clean_top5.first())
        .map(pred_text)
        .unwrap_or_default();
    let adv_pred = rec
        .and_then(|r| r.adversarial_top5.first())
        .map(pred_text)
        .unwrap_or_default();
    let clean_tip = if snap.seen.is_some() {
        "The image given to the defended model (after conversion to its input); the prediction under it is the network's on the transformed image below"
    } else {
        "The model's view of the image (after conversion to its input)"
    };
    image_cell(ui, "clean", t.clean.as_ref(), side, &clean_pred).on_hover_text(clean_tip);
    let title = format!("perturbation ×{:.0}", t.amplification);
    let norms = rec
        .map(|r| format!("L∞ {:.1}/255 · L2 {:.3}", r.linf * 255.0, r.l2))
        .unwrap_or_default();
    image_cell(ui, &title, t.perturbation.as_ref(), side, &norms).on_hover_text(
        "x_adv − x, channel mean, scaled to its own L∞ (red +, blue −, white 0); the factor is the amplification applied",
    );
    let adv_tip = if snap.seen.is_some() {
        "x_adv, the adversarial image given to the defended model; the prediction under it is the network's on the transformed image below"
    } else {
        "x_adv, the adversarial image"
    };
    image_cell(ui, "adversarial", t.adversarial.as_ref(), side, &adv_pred).on_hover_text(adv_tip);
}

/// What the network saw: the clean and adversarial images after the defence (under their
/// inputs, at the same scale), each with its L2 distance from its input, and the defence
/// between them.
fn seen_cells(
    ui: &mut egui::Ui,
    snap: &Snapshot,
    seen: &Seen,
    tex: &[Option<egui::TextureHandle>; 2],
    side: f32,
) {
    let moved = |after: &Array, before: &Array| {
        let l2 = after
            .data()
            .iter()
            .zip(before.data())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        format!("L2 {l2:.3} from the input")
    };
    image_cell(
        ui,
        "clean, as seen",
        tex[0].as_ref(),
        side,
        &moved(&seen.clean, &snap.x),
    )
    .on_hover_text("What the network saw of the clean image: the input after the defence's transformation (one draw for a random defence). The clean prediction and feature maps are the network's on this image.");
    ui.vertical(|ui| {
        ui.set_max_width(side + 8.0);
        ui.add(egui::Label::new(egui::RichText::new("what the network sees").strong()).extend());
        ui.label(snap.defense.chain.to_string());
        let d = &snap.defense;
        let mut how = format!("gradient {}", d.gradient);
        if d.chain.is_random() {
            let k = eot_draws(&snap.cfg, d);
            how.push_str(&format!(" · EOT {k} · seed {}", d.seed));
        }
        ui.small(how);
    })
    .response
    .on_hover_text(
        "The defence in front of the network: these transformed images are what it classified",
    );
    image_cell(
        ui,
        "adversarial, as seen",
        tex[1].as_ref(),
        side,
        &moved(&seen.adv, &snap.x_adv),
    )
    .on_hover_text("What the network saw of the adversarial image: x_adv after the defence's transformation. The adversarial prediction and feature maps are the network's on this image.");
}

fn pred_text(p: &ClassProb) -> String {
    format!("{} ({:.0}%)", p.name, 100.0 * p.prob)
}

fn image_cell(
    ui: &mut egui::Ui,
    title: &str,
    tex: Option<&egui::TextureHandle>,
    side: f32,
    caption: &str,
) -> egui::Response {
    ui.vertical(|ui| {
        // Titles and captions never wrap: in the defended grid a column is as wide as its
        // widest cell.
        ui.add(egui::Label::new(egui::RichText::new(title).strong()).extend());
        match tex {
            Some(t) => {
                ui.image((t.id(), egui::vec2(side, side)));
            }
            None => {
                ui.add_sized([side, side], egui::Label::new("(not available)"));
            }
        }
        ui.add(egui::Label::new(caption).extend());
    })
    .response
}

/// Horizontal bars: the union of both top-5 lists, clean and adversarial probability per class.
fn top5_plot(ui: &mut egui::Ui, clean: &[ClassProb], adv: &[ClassProb], height: f32) {
    let mut classes: Vec<(usize, String)> = vec![];
    for p in clean.iter().chain(adv) {
        if !classes.iter().any(|(c, _)| *c == p.class) {
            classes.push((p.class, p.name.clone()));
        }
    }
    let prob = |list: &[ClassProb], c: usize| {
        list.iter()
            .find(|p| p.class == c)
            .map_or(0.0, |p| f64::from(p.prob))
    };
    let n = classes.len();
    // Highest clean probability at the top.
    let y = |i: usize| (n - 1 - i) as f64;
    let bars = |list: &[ClassProb], off: f64| -> Vec<Bar> {
        classes
            .iter()
            .enumerate()
            .map(|(i, (c, name))| {
                Bar::new(y(i) + off, prob(list, *c))
                    .width(0.38)
                    .name(name.clone())
            })
            .collect()
    };
    let names: Vec<String> = classes.iter().map(|(_, n)| n.clone()).collect();
    let top = clean
        .iter()
        .chain(adv)
        .fold(0f64, |m, p| m.max(f64::from(p.prob)));
    let clean_colour = egui::Color32::from_rgb(90, 140, 220);
    let adv_colour = egui::Color32::from_rgb(220, 90, 90);
    ui.horizontal(|ui| {
        ui.colored_label(clean_colour, "clean");
        ui.colored_label(adv_colour, "adversarial");
        ui.label("top-5 probability");
    });
    // Room for every class name on the axis.
    let height = height.max(18.0 * n as f32 + 28.0);
    Plot::new("top5")
        .height(height)
        .width(420.0)
        .include_x(0.0)
        .include_x((top * 1.1).clamp(0.05, 1.0))
        .include_y(-0.5)
        .include_y(n as f64 - 0.5)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .show_grid([true, false])
        .y_grid_spacer(move |_| {
            (0..n)
                .map(|i| egui_plot::GridMark {
                    value: i as f64,
                    step_size: 1.0,
                })
                .collect()
        })
        .custom_y_axes(vec![
            egui_plot::AxisHints::new_y()
                // One label per class, even when the classes sit close together.
                .label_spacing(10.0..=14.0)
                .min_thickness(70.0)
                .formatter(move |mark, _| {
                    let v = mark.value;
                    if (v - v.round()).abs() > 1e-6 || v < 0.0 {
                        return String::new();
                    }
                    let i = v.round() as usize;
                    if i >= names.len() {
                        return String::new();
                    }
                    names[names.len() - 1 - i].clone()
                }),
        ])
        .show(ui, |plot_ui| {
            plot_ui.bar_chart(
                BarChart::new("clean", bars(clean, 0.2))
                    .horizontal()
                    .color(clean_colour),
            );
            plot_ui.bar_chart(
                BarChart::new("adversarial", bars(adv, -0.2))
                    .horizontal()
                    .color(adv_colour),
            );
        });
}
