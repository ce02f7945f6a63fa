//! The menu bar, keyboard shortcuts, dropped files, file dialogs and the actions the panels ask
//! for.

use std::path::PathBuf;

use eframe::egui;

use super::{AdvlensApp, is_model_path};
use crate::analysis::Export;
use crate::app::controls::Action;
use crate::app::defense_controls::redraw_seed;
use crate::app::dialogs::{DialogAnswer, DialogBackend, DialogPurpose};
use crate::app::settings::ImageSource;

impl AdvlensApp {
    /// Replaces what shows the file dialogs. Tests install a backend that answers with a path,
    /// so the dialog thread, its channel and the code that applies the answer run without a
    /// dialog on screen.
    pub fn set_dialog_backend(&mut self, backend: DialogBackend) {
        self.dialogs.set_backend(backend);
    }

    /// What the open file dialog is for, if one is open.
    pub fn open_dialog(&self) -> Option<DialogPurpose> {
        self.dialogs.open_purpose()
    }

    /// Opens a file dialog for `purpose` on its helper thread; ignored while one is open.
    pub fn start_dialog(&mut self, purpose: DialogPurpose) {
        if let Err(e) = self.dialogs.open(purpose, &self.wake) {
            self.errors
                .push(format!("cannot start the file dialog thread: {e}"));
        }
    }

    /// Applies the open dialog's answer once it has arrived.
    pub(super) fn poll_dialog(&mut self, ctx: &egui::Context) {
        match self.dialogs.poll() {
            None | Some(Ok(DialogAnswer { path: None, .. })) => {}
            Some(Err(e)) => self.errors.push(e),
            Some(Ok(DialogAnswer {
                purpose,
                path: Some(path),
            })) => match purpose {
                DialogPurpose::OpenImage => self.open_image(&path),
                DialogPurpose::OpenModel => self.open_model(path),
                DialogPurpose::Export(what) => self.export_to(what, &path),
                DialogPurpose::Screenshot => self.request_screenshot(ctx, path, false),
            },
        }
    }

    /// What the status bar shows beside the worker's state: the open dialog and the files
    /// being read.
    pub(super) fn activity(&self) -> Vec<String> {
        let mut out = vec![];
        if self.dialogs.open_purpose().is_some() {
            out.push("waiting for the file dialog…".to_string());
        }
        if let Some(p) = &self.pending_image {
            out.push(p.status.clone());
        }
        if let Some((_, path)) = &self.pending_model {
            out.push(format!("loading model {}…", path.display()));
        }
        if self.writes_pending > 0 || self.shot.is_some() {
            out.push(format!(
                "writing {} file(s)…",
                self.writes_pending + usize::from(self.shot.is_some())
            ));
        }
        out
    }

    pub(super) fn handle_input(&mut self, ctx: &egui::Context) {
        use egui::{Key, KeyboardShortcut, Modifiers};
        let shot = KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::S);
        let save = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);
        let open = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
        let (do_shot, do_save, do_open) = ctx.input_mut(|i| {
            let a = i.consume_shortcut(&shot);
            let b = !a && i.consume_shortcut(&save);
            (a, b, i.consume_shortcut(&open))
        });
        if do_shot {
            self.start_dialog(DialogPurpose::Screenshot);
        }
        if do_save {
            self.start_dialog(DialogPurpose::Export(Export::FeatureMaps));
        }
        if do_open {
            self.start_dialog(DialogPurpose::OpenImage);
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for p in dropped {
            if is_model_path(&p) {
                self.open_model(p);
            } else {
                self.open_image(&p);
            }
        }
    }

    pub(super) fn apply(&mut self, action: Action) {
        match action {
            Action::OpenImageDialog => self.start_dialog(DialogPurpose::OpenImage),
            Action::OpenModelDialog => self.start_dialog(DialogPurpose::OpenModel),
            Action::OpenImage(p) => self.open_image(&p),
            Action::OpenModel(p) => self.open_model(p),
            Action::BuiltinModel(name) => self.use_builtin(&name),
            Action::Bundled(i) => {
                if let Err(e) = self.set_image(&ImageSource::Bundled(i)) {
                    self.errors.push(e);
                }
            }
            Action::Photo(name) => {
                if let Err(e) = self.set_image(&ImageSource::Photo(name)) {
                    self.errors.push(e);
                }
            }
            Action::RedrawDefense => {
                self.settings.defense.seed = redraw_seed(&self.settings.defense, &self.x);
            }
        }
    }

    pub(super) fn menu_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open image…  (Ctrl+O)").clicked() {
                    self.apply(Action::OpenImageDialog);
                }
                if ui.button("Open model…").clicked() {
                    self.apply(Action::OpenModelDialog);
                }
                ui.separator();
                let exports = [
                    ("Export feature maps…  (Ctrl+S)", Export::FeatureMaps),
                    ("Export adversarial image…", Export::Adversarial),
                    ("Export perturbation…", Export::Perturbation),
                    ("Export record (JSON)…", Export::Record),
                ];
                for (label, what) in exports {
                    if ui.button(label).clicked() {
                        self.start_dialog(DialogPurpose::Export(what));
                    }
                }
                if ui.button("Screenshot…  (Ctrl+Shift+S)").clicked() {
                    self.start_dialog(DialogPurpose::Screenshot);
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                if ui.button("Errors").clicked() {
                    self.errors.open = true;
                }
                egui::widgets::global_theme_preference_buttons(ui);
            });
            ui.menu_button("Help", |ui| {
                ui.label(format!("advlens {}", env!("CARGO_PKG_VERSION")));
                ui.label("Drag ε to recompute live; drop an image or a model (.safetensors, Xie et al. .npz, PyTorch .pth) on the window.");
                ui.label("• marks denoise-block taps.");
            });
            if let Some(n) = &self.notice {
                ui.separator();
                ui.label(n);
            }
        });
    }
}
