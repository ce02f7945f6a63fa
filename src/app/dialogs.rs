//! Native file dialogs (rfd) that never block the UI. A dialog runs rfd's `AsyncFileDialog` on a
//! named helper thread (driven by `pollster::block_on`); the chosen path comes back over a channel,
//! the thread wakes the UI, and the app applies what the dialog was for (open an image or a model,
//! export, screenshot) when it polls [`Dialogs::poll`]. One dialog at a time: while one is open,
//! further requests are ignored.
//!
//! What shows the dialog is a [`DialogBackend`]: the app uses [`native_backend`]; tests install a
//! backend that answers with a path, so they run the same thread, channel and apply code and never
//! open a dialog. The functions behind every dialog take a path (`AdvlensApp::open_image`,
//! `AdvlensApp::export_to`, …), and tests call them directly too.

use std::path::PathBuf;
use std::sync::Arc;

use super::task::{Task, Waker};
use crate::analysis::Export;

/// Image extensions the decoder accepts.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "webp", "gif", "PNG"];

/// Model extensions the loaders accept.
pub const MODEL_EXTENSIONS: [&str; 4] = ["safetensors", "npz", "pth", "pt"];

/// Name of the helper thread a dialog runs on.
pub const DIALOG_THREAD: &str = "advlens-file-dialog";

/// What a dialog is for, and so what the app does with the path the user picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogPurpose {
    /// Open an image file.
    OpenImage,
    /// Open a model file.
    OpenModel,
    /// Save an export.
    Export(Export),
    /// Save a screenshot of the window.
    Screenshot,
}

impl DialogPurpose {
    /// The dialog's title.
    pub fn title(self) -> &'static str {
        match self {
            DialogPurpose::OpenImage => "Open image",
            DialogPurpose::OpenModel => "Open model",
            DialogPurpose::Export(Export::FeatureMaps) => "Export feature maps",
            DialogPurpose::Export(Export::Adversarial) => "Export adversarial image",
            DialogPurpose::Export(Export::Perturbation) => "Export perturbation",
            DialogPurpose::Export(Export::Record) => "Export record",
            DialogPurpose::Screenshot => "Save screenshot",
        }
    }
}

/// Shows a dialog for a purpose and returns the chosen path (`None`: cancelled). It runs on the
/// dialog thread, so it may block.
pub type DialogBackend = Arc<dyn Fn(DialogPurpose) -> Option<PathBuf> + Send + Sync>;

/// The native dialogs: rfd's `AsyncFileDialog`, driven to completion on the calling thread.
pub fn native_backend() -> DialogBackend {
    Arc::new(|purpose| pollster::block_on(show_native(purpose)))
}

/// Builds and shows the rfd dialog for `purpose`.
async fn show_native(purpose: DialogPurpose) -> Option<PathBuf> {
    let dialog = rfd::AsyncFileDialog::new().set_title(purpose.title());
    let handle = match purpose {
        DialogPurpose::OpenImage => {
            dialog
                .add_filter("images", &IMAGE_EXTENSIONS)
                .add_filter("all files", &["*"])
                .pick_file()
                .await
        }
        DialogPurpose::OpenModel => {
            dialog
                .add_filter(
                    "models (safetensors, tensorpack npz, PyTorch pth)",
                    &MODEL_EXTENSIONS,
                )
                .add_filter("all files", &["*"])
                .pick_file()
                .await
        }
        DialogPurpose::Export(what) => {
            dialog
                .set_file_name(what.default_name())
                .add_filter(what.extension(), &[what.extension()])
                .save_file()
                .await
        }
        DialogPurpose::Screenshot => {
            dialog
                .set_file_name("advlens-window.png")
                .add_filter("png", &["png"])
                .save_file()
                .await
        }
    };
    handle.map(|h| h.path().to_path_buf())
}

/// A dialog's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogAnswer {
    /// What the dialog was for.
    pub purpose: DialogPurpose,
    /// The chosen path; `None` when the user cancelled.
    pub path: Option<PathBuf>,
}

/// The dialog that is open: its purpose and the one-shot task showing it.
struct OpenDialog {
    purpose: DialogPurpose,
    task: Task<DialogPurpose, Option<PathBuf>>,
}

/// The app's dialogs: at most one open at a time, each on its own named helper thread.
pub struct Dialogs {
    backend: DialogBackend,
    open: Option<OpenDialog>,
}

impl Dialogs {
    /// Dialogs shown by `backend`.
    pub fn new(backend: DialogBackend) -> Self {
        Self {
            backend,
            open: None,
        }
    }

    /// Replaces what shows the dialogs (tests answer without a dialog).
    pub fn set_backend(&mut self, backend: DialogBackend) {
        self.backend = backend;
    }

    /// What the open dialog is for, if one is open.
    pub fn open_purpose(&self) -> Option<DialogPurpose> {
        self.open.as_ref().map(|d| d.purpose)
    }

    /// Opens a dialog for `purpose` on a helper thread, which calls `wake` once it has an answer.
    /// Returns `Ok(false)` (and does nothing) while another dialog is open.
    pub fn open(&mut self, purpose: DialogPurpose, wake: &Waker) -> std::io::Result<bool> {
        if self.open.is_some() {
            return Ok(false);
        }
        let backend = self.backend.clone();
        // The thread is not joined: the app may close while a dialog is still open.
        let task = Task::spawn(DIALOG_THREAD, wake.clone(), move |batch, reply| {
            for purpose in batch {
                reply.send(backend(purpose));
            }
            false // one dialog per thread
        })?;
        task.send(purpose);
        self.open = Some(OpenDialog { purpose, task });
        Ok(true)
    }

    /// The open dialog's answer once it has arrived; `Err` when its thread stopped without one.
    pub fn poll(&mut self) -> Option<Result<DialogAnswer, String>> {
        let open = self.open.as_ref()?;
        let purpose = open.purpose;
        let answer = match open.task.poll() {
            Ok(Some(path)) => Ok(DialogAnswer { purpose, path }),
            Ok(None) => return None,
            Err(_) => Err(format!(
                "the file dialog ({}) closed without an answer",
                purpose.title()
            )),
        };
        self.open = None;
        Some(answer)
    }
}

impl Default for Dialogs {
    fn default() -> Self {
        Self::new(native_backend())
    }
}
