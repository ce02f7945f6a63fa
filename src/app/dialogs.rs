//! Native file dialogs (rfd). Only the app's menu, buttons and shortcuts call these; tests call
//! the functions behind them with a path instead, so no test ever opens a dialog.

use std::path::PathBuf;

/// Image extensions the decoder accepts.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "webp", "gif", "PNG"];

/// Asks for an image file.
pub fn open_image() -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_title("Open image")
        .add_filter("images", &IMAGE_EXTENSIONS)
        .add_filter("all files", &["*"])
        .pick_file()
}

/// Asks for a model file.
pub fn open_model() -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_title("Open model")
        .add_filter(
            "models (safetensors, tensorpack npz)",
            &["safetensors", "npz"],
        )
        .add_filter("all files", &["*"])
        .pick_file()
}

/// Asks where to save a file.
pub fn save_file(default_name: &str, extension: &str) -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_title("Save")
        .set_file_name(default_name)
        .add_filter(extension, &[extension])
        .save_file()
}
