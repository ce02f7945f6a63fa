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
        ui.label(format!("model {}", info.model));
        ui.separator();
        ui.label(format!("image {}", info.image));
        ui.separator();
        if let Some(last) = errors.list.last() {
            let text =
                egui::RichText::new(format!("error: {} ({})", last.summary, errors.list.len()))
                    .color(ui.visuals().error_fg_color);
            if ui.link(text).on_hover_text("Click for details").clicked() {
                errors.open = true;
            }
        } else {
            ui.label("no errors");
        }
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
