//! The writer: a named [`Task`] that encodes and writes exports and screenshots, so encoding a
//! PNG and syncing it to disk never runs on the UI thread. Requests run in the order they were
//! made (none is dropped); each reply says what was written or why not.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use super::screenshot::save_screenshot;
use super::task::{Replier, Stopped, Task, Waker};
use crate::analysis::FeatureGrid;
use crate::analysis::Snapshot;
use crate::analysis::{save_adversarial, save_feature_maps, save_perturbation, save_record};

/// Name of the writer thread.
pub const WRITER_THREAD: &str = "advlens-writer";

/// What to write.
pub enum Payload {
    /// The feature-map composition of one tap and channel.
    FeatureMaps(Box<FeatureGrid>),
    /// The adversarial image.
    Adversarial(Arc<Snapshot>),
    /// The perturbation colour map.
    Perturbation(Arc<Snapshot>),
    /// The JSON record.
    Record(Arc<Snapshot>),
    /// A window screenshot.
    Screenshot(Arc<egui::ColorImage>),
}

impl Payload {
    /// What the status bar calls it.
    pub fn describe(&self) -> &'static str {
        match self {
            Payload::FeatureMaps(_) => "feature maps",
            Payload::Adversarial(_) => "adversarial image",
            Payload::Perturbation(_) => "perturbation",
            Payload::Record(_) => "record",
            Payload::Screenshot(_) => "screenshot",
        }
    }
}

/// One file to write.
pub struct WriteJob {
    /// What.
    pub payload: Payload,
    /// Where.
    pub path: PathBuf,
    /// Close the window once it is written (the `ADVLENS_SCREENSHOT` smoke run).
    pub close_after: bool,
}

/// The outcome of one [`WriteJob`].
pub struct Written {
    /// What was written.
    pub what: &'static str,
    /// Where.
    pub path: PathBuf,
    /// `Err` with the reason (and its causes) when the file could not be written.
    pub result: Result<(), String>,
    /// The job's `close_after`.
    pub close_after: bool,
}

/// The app's handle on the writer thread.
pub struct Writer {
    task: Task<WriteJob, Written>,
}

impl Writer {
    /// Starts the writer thread.
    pub fn start(wake: Waker) -> std::io::Result<Self> {
        Ok(Self {
            task: Task::spawn(WRITER_THREAD, wake, handle)?,
        })
    }

    /// Queues `job`.
    pub fn write(&self, job: WriteJob) {
        self.task.send(job);
    }

    /// Every outcome waiting, and whether the thread has stopped.
    pub fn drain(&self) -> (Vec<Written>, Option<Stopped>) {
        self.task.drain()
    }
}

/// Writes each job in turn.
fn handle(batch: Vec<WriteJob>, reply: &Replier<Written>) -> bool {
    batch.into_iter().all(|job| {
        let what = job.payload.describe();
        let result = match &job.payload {
            Payload::FeatureMaps(grid) => save_feature_maps(grid, &job.path),
            Payload::Adversarial(s) => save_adversarial(s, &job.path),
            Payload::Perturbation(s) => save_perturbation(s, &job.path),
            Payload::Record(s) => save_record(s, &job.path),
            Payload::Screenshot(img) => save_screenshot(img, &job.path),
        };
        reply.send(Written {
            what,
            path: job.path,
            result: result.map_err(|e| format!("{e:#}")),
            close_after: job.close_after,
        })
    })
}
