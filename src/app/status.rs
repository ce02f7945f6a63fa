//! The status bar (engine and adapter, last recompute, what is being loaded, model, image,
//! errors) and the error window.

use std::time::SystemTime;

use eframe::egui;

/// One error shown to the user.
#[derive(Clone, Debug)]
pub struct AppError {
    /// One line.
    pub summary: String,
    /// Everything known.
    pub detail: String,
    /// When it happened.
    pub when: SystemTime,
}

/// Errors collected during the session.
#[derive(Default)]
pub struct Errors {
    /// Newest last.
    pub list: Vec<AppError>,
    /// Whether the window is open.
    pub open: bool,
}

impl Errors {
    /// Records an error (the summary is the first line of `detail`).
    pub fn push(&mut self, detail: impl Into<String>) {
        let detail = detail.into();
        let summary = detail.lines().next().unwrap_or_default().to_string();
        self.list.push(AppError {
            summary,
            detail,
            when: SystemTime::now(),
        });
        if self.list.len() > 100 {
            self.list.remove(0);
        }
    }
}

/// What the status bar shows.
pub struct StatusInfo<'a> {
    /// Engine description.
    pub engine: &'a str,
    /// Render adapter.
    pub adapter: Option<&'a str>,
    /// Milliseconds of the last recompute.
    pub last_ms: Option<f64>,
    /// Whether a job is running.
    pub busy: bool,
    /// What else is under way (an open file dialog, an image being decoded, a model loading).
    pub activity: &'a [String],
    /// Model name.
    pub model: &'a str,
    /// Image name.
    pub image: &'a str,
}

/// The widest the status bar's error gets, points (longer ones end in "…"; the whole text is in
/// the tooltip and the error window).
const ERROR_WIDTH: f32 = 480.0;

/// Draws the status bar.
pub fn status_ui(ui: &mut egui::Ui, info: &StatusInfo<'_>, errors: &mut Errors) {
    ui.horizontal(|ui| {
        let adapter = info.adapter.map(|a| format!(" · {a}")).unwrap_or_default();
        ui.label(format!("engine {}{adapter}", info.engine));
        ui.separator();
        if info.busy {
            ui.spinner();
            ui.label("computing…");
        } else {
            ui.label("idle");
        }
        if let Some(ms) = info.last_ms {
            ui.label(format!("last recompute {ms:.0} ms"));
        }
        if !info.activity.is_empty() {
            ui.separator();
            ui.spinner();
            for a in info.activity {
                ui.label(a);
            }
        }
        ui.separator();
        // The error comes before the model and image names, which can be long paths: those
        // are cut to the space left (full text on hover), so the error is always on screen.
        if let Some(last) = errors.list.last() {
            let text =
                egui::RichText::new(format!("error: {} ({})", last.summary, errors.list.len()))
                    .color(ui.visuals().error_fg_color)
                    .underline();
            let width = ERROR_WIDTH.min(ui.available_width());
            let clicked = ui
                .scope(|ui| {
                    ui.set_max_width(width);
                    ui.add(
                        egui::Label::new(text)
                            .sense(egui::Sense::click())
                            .truncate(),
                    )
                    .on_hover_cursor(egui::CursorIcon::PointingHand)
                    .on_hover_text(format!(
                        "{} ({} errors). Click for details.",
                        last.summary,
                        errors.list.len()
                    ))
                    .clicked()
                })
                .inner;
            if clicked {
                errors.open = true;
            }
        } else {
            ui.label("no errors");
        }
        ui.separator();
        ui.add(egui::Label::new(format!("model {}", info.model)).truncate())
            .on_hover_text(info.model);
        ui.separator();
        ui.add(egui::Label::new(format!("image {}", info.image)).truncate())
            .on_hover_text(info.image);
    });
}

/// The error window (open after clicking the status bar's error).
pub fn errors_window(ctx: &egui::Context, errors: &mut Errors) {
    if !errors.open {
        return;
    }
    let mut open = true;
    let mut clear = false;
    egui::Window::new("Errors")
        .open(&mut open)
        .default_width(480.0)
        .show(ctx, |ui| {
            egui::ScrollArea::vertical()
                .max_height(320.0)
                .show(ui, |ui| {
                    for e in errors.list.iter().rev() {
                        let age = e.when.elapsed().map_or(0, |d| d.as_secs());
                        ui.label(egui::RichText::new(format!("{age} s ago")).weak());
                        ui.label(&e.detail);
                        ui.separator();
                    }
                });
            if ui.button("Clear").clicked() {
                clear = true;
            }
        });
    if clear {
        errors.list.clear();
        open = false;
    }
    errors.open = open;
}
