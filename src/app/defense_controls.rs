//! The defence section of the control panel: the chain of input transformations in front of the
//! network (add, remove, reorder, each parameter within its valid range), how the attack's
//! gradient passes them (naive or BPDA), EOT's number of draws, and "Redraw" for a random
//! defence. It edits [`Defense`] in the settings and never runs anything itself; the one piece
//! of work it needs, picking a seed that really changes the view ([`redraw_seed`]), runs when
//! the app applies [`super::controls::Action::RedrawDefense`].

use eframe::egui;

use crate::array::Array;
use crate::defense::{Chain, Defense, Draws, GradientMode, MAX_CHAIN, MAX_EOT, MAX_MEDIAN};
use crate::defense::{Transform, padded_size};

/// What a defence does and why the app has it (the section's tooltip).
const DEFENSE_TIP: &str = "Input transformations in front of the network, applied in order to every image it sees (the views, the prediction and the attack). They look strong against attacks that ignore them and fall to adaptive ones: compare the naive and BPDA gradients.";

/// The naive gradient's tooltip.
pub const NAIVE_TIP: &str = "Naive: each transform's own derivative. JPEG and bit depth are piecewise constant, so their gradient is zero; median passes it to the median pixel; resize and pad are exact. This is what an evaluation that ignores the defence computes: the attack gets little or no signal, so the defence looks stronger than it is (obfuscated gradients, Athalye et al. 2018).";

/// The BPDA gradient's tooltip.
pub const BPDA_TIP: &str = "BPDA (backward-pass differentiable approximation, Athalye et al. 2018): the identity in place of the derivative of JPEG, bit depth and median, exact through resize and pad. The adaptive attack: what the defence is worth against an attacker who knows it is there.";

/// EOT's tooltip.
pub const EOT_TIP: &str = "Expectation over transformation: each gradient (with its loss) is the mean over k independent draws of the random transforms, so the attack aims at the defence on average instead of at one draw. Each step costs k passes: with k > 1 the attack runs in the background with progress and waits for the ε slider to be released.";

/// The Redraw button's tooltip.
const REDRAW_TIP: &str = "Draw the random transforms anew (the next seed that changes this image's draw). Until then the views keep one draw, so moving ε changes only the attack.";

/// Seeds [`redraw_seed`] tries before it settles for the next one.
const REDRAW_TRIES: u64 = 256;

/// The transforms the add menu offers, with defaults and descriptions.
fn offered() -> [(Transform, &'static str, &'static str); 4] {
    [
        (
            Transform::Jpeg { quality: 75 },
            "JPEG compression",
            "Encode as JPEG at quality q and decode again (Das et al. 2017), through the image crate's codec; values are rounded to 8 bits first",
        ),
        (
            Transform::BitDepth { bits: 5 },
            "bit-depth reduction",
            "Round every value to 2^b levels (Xu et al. 2018, feature squeezing)",
        ),
        (
            Transform::Median { size: 3 },
            "median smoothing",
            "Replace every pixel by the median of its k×k window, channel by channel (Xu et al. 2018)",
        ),
        (
            Transform::ResizePad { size: None },
            "random resize and pad",
            "Resize to a random size in [H, S), pad to S at a random offset with grey, resize back to H (Xie et al. 2018): a fresh draw in every pass",
        ),
    ]
}

/// The name a row shows for `t`.
fn name(t: &Transform) -> &'static str {
    match t {
        Transform::Jpeg { .. } => "JPEG",
        Transform::BitDepth { .. } => "bit depth",
        Transform::Median { .. } => "median",
        Transform::ResizePad { .. } => "resize+pad",
    }
}

/// What the section asks the app to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefenseRequest {
    /// Draw a random defence anew.
    pub redraw: bool,
}

/// Draws the defence section for a model taking `[C, H, W]` images.
pub fn defense_ui(ui: &mut egui::Ui, defense: &mut Defense, input: [usize; 3]) -> DefenseRequest {
    let mut request = DefenseRequest::default();
    ui.horizontal(|ui| {
        ui.strong("defence").on_hover_text(DEFENSE_TIP);
        if defense.is_none() {
            ui.label("none: the network sees the input itself");
        }
    });
    let mut transforms = defense.chain.transforms().to_vec();
    if chain_rows_ui(ui, &mut transforms, input) {
        defense.chain = Chain::new(transforms);
    }
    if !defense.is_none() {
        options_ui(ui, defense, &mut request);
    }
    if let Err(e) = defense.check(input) {
        ui.colored_label(ui.visuals().error_fg_color, e.to_string())
            .on_hover_text(
                "This defence cannot run on the model's input; no attack runs until it is changed",
            );
    }
    request
}

/// One row per transform (its parameter, move up, remove) and the add menu; whether the chain
/// changed.
fn chain_rows_ui(ui: &mut egui::Ui, transforms: &mut Vec<Transform>, input: [usize; 3]) -> bool {
    let mut changed = false;
    let mut remove = None;
    let mut raise = None;
    // An empty grid would still take a row of space.
    if !transforms.is_empty() {
        egui::Grid::new("defense-chain")
            .num_columns(3)
            .spacing([6.0, 4.0])
            .show(ui, |ui| {
                // Narrow sliders, so the rows fit the panel's default width.
                ui.spacing_mut().slider_width = 70.0;
                for (i, t) in transforms.iter_mut().enumerate() {
                    ui.label(format!("{}. {}", i + 1, name(t)));
                    changed |= parameter_ui(ui, i, t, input);
                    ui.horizontal(|ui| {
                        if i > 0
                            && ui
                                .small_button("up")
                                .on_hover_text(format!("Apply {t} one place earlier"))
                                .clicked()
                        {
                            raise = Some(i);
                        }
                        if ui
                            .small_button("×")
                            .on_hover_text(format!("Remove {t} from the chain"))
                            .clicked()
                        {
                            remove = Some(i);
                        }
                    });
                    ui.end_row();
                }
            });
    }
    if let Some(i) = raise {
        transforms.swap(i - 1, i);
        changed = true;
    }
    if let Some(i) = remove {
        transforms.remove(i);
        changed = true;
    }
    ui.add_enabled_ui(transforms.len() < MAX_CHAIN, |ui| {
        ui.menu_button("add transform", |ui| {
            for (t, label, tip) in offered() {
                if ui.button(label).on_hover_text(tip).clicked() {
                    transforms.push(t);
                    changed = true;
                    ui.close();
                }
            }
        })
        .response
        .on_hover_text("Append an input transformation to the chain")
        .on_disabled_hover_text(format!("A chain holds at most {MAX_CHAIN} transforms"));
    });
    changed
}

/// The parameter of transform `i`, only ever set to a valid value; whether it changed.
fn parameter_ui(ui: &mut egui::Ui, i: usize, t: &mut Transform, input: [usize; 3]) -> bool {
    match t {
        Transform::Jpeg { quality } => ui
            .add(egui::Slider::new(quality, 1..=100).prefix("q "))
            .on_hover_text("JPEG quality, 1 (coarsest) to 100")
            .changed(),
        Transform::BitDepth { bits } => ui
            .add(egui::Slider::new(bits, 1..=8).suffix(" bits"))
            .on_hover_text("Bits per value kept: 2^b levels, 1 to 8")
            .changed(),
        Transform::Median { size } => {
            let before = *size;
            egui::ComboBox::from_id_salt(("defense-median", i))
                .selected_text(format!("{before}×{before}"))
                .show_ui(ui, |ui| {
                    for k in (3..=MAX_MEDIAN).step_by(2) {
                        ui.selectable_value(size, k, format!("{k}×{k}"));
                    }
                })
                .response
                .on_hover_text("The median window's side (odd)");
            *size != before
        }
        Transform::ResizePad { size } => resize_pad_ui(ui, size, input[1]),
    }
}

/// The padded side S of a resize-and-pad: the paper's ratio, or a value in (H, 2H]. A value
/// that does not fit (after a model change) is kept, not clamped, so the section says why it
/// cannot run instead of changing the setting behind the user's back.
fn resize_pad_ui(ui: &mut egui::Ui, size: &mut Option<usize>, h: usize) -> bool {
    let paper = padded_size(h);
    let mut changed = false;
    ui.horizontal(|ui| {
        let mut auto = size.is_none();
        if ui
            .checkbox(&mut auto, "auto")
            .on_hover_text(format!(
                "The paper's ratio, S = round(H·331/299) = {paper} for this model"
            ))
            .changed()
        {
            *size = if auto { None } else { Some(paper) };
            changed = true;
        }
        match size {
            Some(s) => {
                changed |= ui
                    .add(
                        egui::DragValue::new(s)
                            .range(h + 1..=2 * h)
                            .clamp_existing_to_range(false)
                            .prefix("S "),
                    )
                    .on_hover_text(format!(
                        "The padded side S: the image is resized to a random side in [{h}, S) and padded to S; {} to {}",
                        h + 1,
                        2 * h
                    ))
                    .changed();
            }
            None => {
                ui.label(format!("S {paper}"));
            }
        }
    });
    changed
}

/// Gradient mode, EOT and Redraw (a non-empty chain only).
fn options_ui(ui: &mut egui::Ui, defense: &mut Defense, request: &mut DefenseRequest) {
    let random = defense.chain.is_random();
    egui::Grid::new("defense-options")
        .num_columns(2)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            ui.label("gradient");
            let tip = |m: GradientMode| match m {
                GradientMode::Naive => NAIVE_TIP,
                GradientMode::Bpda => BPDA_TIP,
            };
            egui::ComboBox::from_id_salt("defense-gradient")
                .selected_text(defense.gradient.name())
                .show_ui(ui, |ui| {
                    for m in [GradientMode::Naive, GradientMode::Bpda] {
                        ui.selectable_value(&mut defense.gradient, m, m.name())
                            .on_hover_text(tip(m));
                    }
                })
                .response
                .on_hover_text(tip(defense.gradient));
            ui.end_row();

            ui.label("EOT k");
            ui.add_enabled_ui(random, |ui| {
                ui.add(egui::DragValue::new(&mut defense.eot).range(1..=MAX_EOT))
                    .on_hover_text(EOT_TIP)
                    .on_disabled_hover_text(
                        "EOT averages over the draws of random transforms; this chain has none (add random resize and pad)",
                    );
            });
            ui.end_row();

            ui.label("draw");
            ui.add_enabled_ui(random, |ui| {
                ui.horizontal(|ui| {
                    if ui
                        .button("Redraw")
                        .on_hover_text(REDRAW_TIP)
                        .on_disabled_hover_text("Only random transforms (resize and pad) draw")
                        .clicked()
                    {
                        request.redraw = true;
                    }
                    ui.label(format!("seed {}", defense.seed));
                });
            });
            ui.end_row();
        });
}

/// The seed "Redraw" moves to: the first after the current one under which the random
/// transforms draw differently for `x` (the image shown), so the view always changes. Only the
/// random transforms run (their draws depend on the image the chain receives, not on the other
/// transforms), each on the first pass after a restart, which is what the worker shows.
pub fn redraw_seed(defense: &Defense, x: &Array) -> u64 {
    let random = Chain::new(
        defense
            .chain
            .transforms()
            .iter()
            .filter(|t| t.is_random())
            .copied()
            .collect(),
    );
    let patterns = |seed: u64| {
        let draws = Draws::Seeded {
            seed,
            call: 0,
            draw: 0,
        };
        random
            .apply(x, &draws)
            .ok()
            .map(|a| (0..x.batch()).map(|i| a.patterns(i)).collect::<Vec<_>>())
    };
    let now = patterns(defense.seed);
    (1..=REDRAW_TRIES)
        .map(|k| defense.seed.wrapping_add(k))
        .find(|&s| patterns(s) != now)
        .unwrap_or_else(|| defense.seed.wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_defense(seed: u64) -> Defense {
        Defense {
            seed,
            ..Defense::new("bits:4,resize-pad".parse().unwrap())
        }
    }

    fn pattern(defense: &Defense, x: &Array) -> Vec<crate::defense::Pattern> {
        let draws = Draws::Seeded {
            seed: defense.seed,
            call: 0,
            draw: 0,
        };
        defense.chain.apply(x, &draws).unwrap().patterns(0)
    }

    #[test]
    fn redraw_always_changes_the_draw_of_the_image_shown() {
        let x = crate::zoo::default_image();
        for seed in 0..40 {
            let d = random_defense(seed);
            let next = redraw_seed(&d, &x);
            assert!(next > seed);
            let redrawn = Defense {
                seed: next,
                ..d.clone()
            };
            assert_ne!(pattern(&d, &x), pattern(&redrawn, &x), "seed {seed}");
        }
    }

    #[test]
    fn redraw_takes_the_next_seed_when_it_already_changes_the_draw() {
        let x = crate::zoo::default_image();
        // Some seed's successor draws differently (28×28 has 29 patterns), and then it is
        // the one taken: the skip happens only where the draw would repeat.
        let seed = (0..40u64)
            .find(|&s| pattern(&random_defense(s), &x) != pattern(&random_defense(s + 1), &x))
            .unwrap();
        assert_eq!(redraw_seed(&random_defense(seed), &x), seed + 1);
    }

    #[test]
    fn the_add_menu_offers_every_transform_with_valid_defaults() {
        let dims = [1, 28, 28];
        let offered = offered();
        for (t, _, _) in &offered {
            assert!(t.check(dims).is_ok(), "{t}");
        }
        assert_eq!(offered.iter().filter(|(t, _, _)| t.is_random()).count(), 1);
    }
}
