//! Window screenshots: egui hands the app the rendered window, which is written to a PNG on
//! the app's writer thread.

use std::path::Path;

use anyhow::Context as _;
use eframe::egui;
use image::{DynamicImage, RgbaImage};

use crate::analysis::save_dynamic;

/// Writes a window screenshot as PNG.
pub fn save_screenshot(shot: &egui::ColorImage, path: &Path) -> anyhow::Result<()> {
    let [w, h] = shot.size;
    let bytes: Vec<u8> = shot.pixels.iter().flat_map(|c| c.to_array()).collect();
    let img = RgbaImage::from_raw(w as u32, h as u32, bytes)
        .context("screenshot has the wrong number of pixels")?;
    save_dynamic(&DynamicImage::ImageRgba8(img), path)
}
