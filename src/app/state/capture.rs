//! Capture: exports of the current result and window screenshots, encoded and written on the
//! writer thread; the outcome shows in the menu bar or the error list.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;

use eframe::egui;

use super::{AdvlensApp, PendingShot};
use crate::analysis::Snapshot;
use crate::analysis::{self as export, Export, FeatureGrid, feature_grid};
use crate::app::feature_maps::tap_choices;
use crate::app::writer::{Payload, WriteJob};

impl AdvlensApp {
    /// The feature-map composition of the current tap and channel.
    pub(super) fn current_grid(&self) -> anyhow::Result<FeatureGrid> {
        let snap = self
            .snapshot()
            .ok_or_else(|| anyhow::anyhow!("no result yet"))?;
        let tap = self
            .settings
            .tap
            .clone()
            .or_else(|| self.default_tap(snap))
            .ok_or_else(|| anyhow::anyhow!("no tap selected"))?;
        feature_grid(snap, &tap, self.settings.channel)
            .map(|g| g.with_delta_own_scale(self.settings.delta_own_scale))
            .ok_or_else(|| anyhow::anyhow!("tap {tap} has no channel {}", self.settings.channel))
    }

    pub(super) fn default_tap(&self, snap: &Snapshot) -> Option<String> {
        tap_choices(snap, &self.net.graph.taps_denoise_first())
            .into_iter()
            .next()
    }

    /// What `what` of the current result is, ready for the writer.
    pub(super) fn payload(&self, what: Export) -> anyhow::Result<Payload> {
        let snap = self
            .snapshot
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no result yet"))?;
        Ok(match what {
            Export::FeatureMaps => Payload::FeatureMaps(Box::new(self.current_grid()?)),
            Export::Adversarial => Payload::Adversarial(snap),
            Export::Perturbation => Payload::Perturbation(snap),
            Export::Record => Payload::Record(snap),
        })
    }

    /// Writes `what` of the current result to `path` on the calling thread (tests and headless
    /// use; the UI goes through [`Self::export_to`]).
    pub fn export(&self, what: Export, path: &Path) -> anyhow::Result<()> {
        match self.payload(what)? {
            Payload::FeatureMaps(grid) => export::save_feature_maps(&grid, path),
            Payload::Adversarial(s) => export::save_adversarial(&s, path),
            Payload::Perturbation(s) => export::save_perturbation(&s, path),
            Payload::Record(s) => export::save_record(&s, path),
            Payload::Screenshot(_) => Err(anyhow::anyhow!("not an export")),
        }
    }

    /// Queues `what` for `path` (where the save dialog's answer leads) on the writer thread; the
    /// outcome shows in the UI once written: a notice in the menu bar, or an error.
    pub fn export_to(&mut self, what: Export, path: &Path) {
        match self.payload(what) {
            Ok(payload) => self.write(payload, path.to_path_buf(), false),
            Err(e) => self.errors.push(format!("export failed: {e:#}")),
        }
    }

    pub(super) fn write(&mut self, payload: Payload, path: PathBuf, close_after: bool) {
        let Some(writer) = &self.writer else {
            self.errors.push("the writer thread is not running");
            return;
        };
        writer.write(WriteJob {
            payload,
            path,
            close_after,
        });
        self.writes_pending += 1;
    }

    /// Takes the writer's outcomes.
    pub(super) fn poll_writer(&mut self, ctx: &egui::Context) {
        let Some(writer) = &self.writer else { return };
        let (done, stopped) = writer.drain();
        if let Some(e) = stopped {
            self.errors.push(e.to_string());
            self.writer = None;
            self.writes_pending = 0;
        }
        for w in done {
            self.writes_pending = self.writes_pending.saturating_sub(1);
            match w.result {
                Ok(()) => self.notice = Some(format!("wrote {}", w.path.display())),
                Err(e) => self.errors.push(format!("{} not written: {e}", w.what)),
            }
            if w.close_after {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
    }

    /// Asks eframe for a screenshot of the window, to be written to `path`.
    pub fn request_screenshot(&mut self, ctx: &egui::Context, path: PathBuf, close_after: bool) {
        let (tx, rx) = channel();
        let c = ctx.clone();
        ctx.request_screenshot(move |img| {
            let _ = tx.send(img);
            c.request_repaint();
        });
        self.shot = Some(PendingShot {
            path,
            rx,
            close_after,
        });
    }

    /// Hands a screenshot that egui has delivered to the writer.
    pub(super) fn poll_screenshot(&mut self) {
        let Some(shot) = &self.shot else { return };
        let Ok(img) = shot.rx.try_recv() else { return };
        let (path, close_after) = (shot.path.clone(), shot.close_after);
        self.shot = None;
        self.write(Payload::Screenshot(img), path, close_after);
    }

    /// The `ADVLENS_SCREENSHOT` smoke run: once the first result shows, a screenshot, then close.
    pub(super) fn auto_screenshot(&mut self, ctx: &egui::Context) {
        if self.snapshot.is_some()
            && !self.busy
            && !self.is_loading()
            && self.shot.is_none()
            && let Some(path) = self.auto_shot.take()
        {
            self.request_screenshot(ctx, path, true);
        }
    }
}
