//! The diagnostics line next to the predictions: whether the attack, not the model, may have
//! failed. "no warnings", or one chip per raised [`crate::attack::Flag`] with its counts (the
//! tooltip says what it means, what to try, and the numbers behind it); for AutoAttack also the
//! robust count after each component.

use eframe::egui;

use crate::analysis::Snapshot;
use crate::attack::{Diagnostic, Stage};

/// Background of a warning chip.
const CHIP_FILL: egui::Color32 = egui::Color32::from_rgb(120, 80, 0);

/// `text` with every character the body font cannot draw spelled out (`‖` → `||`, `∇` → `grad`,
/// subscript digits → digits) or replaced by `?`: the details come from the attacks, written for
/// a terminal, and the app's font has no mathematical symbols.
pub fn drawable(ui: &egui::Ui, text: &str) -> String {
    let font = egui::TextStyle::Body.resolve(ui.style());
    ui.ctx().fonts_mut(|f| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_control() || f.has_glyph(&font, c) {
                out.push(c);
                continue;
            }
            match c {
                '‖' => out.push_str("||"),
                '∇' => out.push_str("grad "),
                '≥' => out.push_str(">="),
                '≤' => out.push_str("<="),
                '→' => out.push_str("->"),
                '₀'..='₉' => out.push(char::from(b'0' + (c as u32 - '₀' as u32) as u8)),
                _ => out.push('?'),
            }
        }
        out
    })
}

/// The text of a flag's chip: its id and how many images it concerns.
pub fn chip_text(d: &Diagnostic) -> String {
    format!("{} {}/{}", d.flag.id(), d.images, d.of)
}

/// AutoAttack's components with the images still robust after each, e.g.
/// `apgd-ce 1/1 → apgd-t 1/1 → square 0/1` (`images` is the batch size).
pub fn stages_text(stages: &[Stage], images: usize) -> String {
    stages
        .iter()
        .map(|s| format!("{} {}/{images}", s.attack, s.robust_after))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Draws the line for `snap`.
pub fn diagnostics_ui(ui: &mut egui::Ui, snap: &Snapshot) {
    let images = snap.record.images.len();
    if !snap.stages.is_empty() {
        let detail: Vec<String> = snap
            .stages
            .iter()
            .map(|s| {
                format!(
                    "{}: attacked {}, fooled {}, robust after {} ({:.1} s)",
                    s.attack, s.attacked, s.fooled, s.robust_after, s.seconds
                )
            })
            .collect();
        let line = drawable(
            ui,
            &format!("robust: {}", stages_text(&snap.stages, images)),
        );
        let tip = drawable(
            ui,
            &format!(
                "Images still classified correctly after each component; each runs only on the images every earlier one failed on.\n{}",
                detail.join("\n")
            ),
        );
        ui.label(line).on_hover_text(tip);
    }
    ui.horizontal_wrapped(|ui| {
        if snap.diagnostics.is_empty() {
            ui.label("no warnings").on_hover_text(
                "None of the attack's checks (zero or non-finite gradients at the start, and the other indicators of a failed attack) was raised",
            );
            return;
        }
        for d in &snap.diagnostics {
            let text = egui::RichText::new(drawable(ui, &chip_text(d)))
                .color(egui::Color32::WHITE)
                .background_color(CHIP_FILL);
            let tip = drawable(
                ui,
                &format!(
                    "{}\n\n{} of {} images: {}",
                    d.flag.explanation(),
                    d.images,
                    d.of,
                    d.detail
                ),
            );
            ui.add(egui::Label::new(text).sense(egui::Sense::hover()))
                .on_hover_text(tip);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::Flag;

    #[test]
    fn stages_read_as_robust_counts_in_order() {
        let stage = |attack: &str, robust_after| Stage {
            attack: attack.into(),
            attacked: 1,
            fooled: 0,
            robust_after,
            seconds: 0.0,
        };
        let stages = [stage("apgd-ce", 1), stage("apgd-t", 1), stage("square", 0)];
        assert_eq!(
            stages_text(&stages, 1),
            "apgd-ce 1/1 → apgd-t 1/1 → square 0/1"
        );
        let d = Diagnostic {
            flag: Flag::ZeroGradient,
            images: 2,
            of: 3,
            detail: String::new(),
        };
        assert_eq!(chip_text(&d), "zero_gradient 2/3");
    }

    #[test]
    fn symbols_the_font_lacks_are_spelled_out() {
        let ctx = egui::Context::default();
        let mut got = String::new();
        let mut all_drawn = false;
        let _ = ctx.run_ui(egui::RawInput::default(), |ui| {
            got = drawable(ui, "‖∇loss‖₁ = 0 at ε, L∞ → ok");
            let font = egui::TextStyle::Body.resolve(ui.style());
            all_drawn = ui.ctx().fonts_mut(|f| f.has_glyphs(&font, &got));
        });
        // What the font has stays (ε and ∞ are all over the app); the rest is spelled out.
        assert!(got.starts_with("||grad loss||"), "{got}");
        assert!(got.contains("at ε, L∞ "), "{got}");
        assert!(all_drawn, "{got}");
    }
}
