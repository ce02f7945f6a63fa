//! Exports: the feature-map panel composed off-screen at full resolution, the adversarial image,
//! the perturbation, the JSON record (the `advlens attack` format) and window screenshots. Every
//! file is written atomically. The dialogs live in the app; these functions take a path, so tests
//! call the same code without a dialog.

use std::path::Path;

use anyhow::Context as _;
use eframe::egui;
use image::{DynamicImage, Rgb, RgbImage, RgbaImage};

use super::maps::{FeatureGrid, Row, colour};
use super::worker::Snapshot;
use crate::analysis::colormap::perturbation_image;
use crate::data::image_io;

/// Each cell is scaled up by an integer factor until its longer side reaches at least this.
pub const CELL_TARGET: usize = 224;
/// Border around the composition, pixels.
pub const MARGIN: u32 = 16;
/// Gap between cells, pixels.
pub const GAP: u32 = 8;
/// Colour-bar width, pixels.
pub const BAR_W: u32 = 24;

/// The integer scale factor for `h × w` maps.
pub fn cell_factor(h: usize, w: usize) -> usize {
    CELL_TARGET.div_ceil(h.max(w).max(1)).max(1)
}

/// `(width, height)` of the exported feature-map image.
pub fn feature_export_size(grid: &FeatureGrid) -> (u32, u32) {
    let k = cell_factor(grid.h, grid.w);
    let (cw, ch) = ((grid.w * k) as u32, (grid.h * k) as u32);
    let cols = grid.columns.len() as u32;
    let rows = Row::ALL.len() as u32;
    let width = 2 * MARGIN + cols * cw + cols.saturating_sub(1) * GAP + 2 * GAP + BAR_W;
    let height = 2 * MARGIN + rows * ch + (rows - 1) * GAP;
    (width, height)
}

/// Composes the grid: rows clean / adversarial / |Δ|, one column per tap, nearest-neighbour
/// scaling, the shared colour bar on the right (top = +scale, bottom = −scale).
pub fn feature_maps_image(grid: &FeatureGrid) -> RgbImage {
    let (width, height) = feature_export_size(grid);
    let k = cell_factor(grid.h, grid.w);
    let (cw, ch) = ((grid.w * k) as u32, (grid.h * k) as u32);
    let mut img = RgbImage::from_pixel(width, height, Rgb([40, 40, 40]));
    for (ci, col) in grid.columns.iter().enumerate() {
        for (ri, row) in Row::ALL.into_iter().enumerate() {
            let x0 = MARGIN + ci as u32 * (cw + GAP);
            let y0 = MARGIN + ri as u32 * (ch + GAP);
            let map = col.map(row);
            for y in 0..ch {
                for x in 0..cw {
                    let (sy, sx) = ((y as usize) / k, (x as usize) / k);
                    let v = map.get(sy * grid.w + sx).copied().unwrap_or(0.0);
                    img.put_pixel(x0 + x, y0 + y, Rgb(colour(v, grid.scale)));
                }
            }
        }
    }
    let bar_x0 = width - MARGIN - BAR_W;
    let bar_h = height - 2 * MARGIN;
    for y in 0..bar_h {
        let t = 1.0 - 2.0 * y as f32 / (bar_h.max(2) - 1) as f32;
        let c = colour(t * grid.scale, grid.scale);
        for x in 0..BAR_W {
            img.put_pixel(bar_x0 + x, MARGIN + y, Rgb(c));
        }
    }
    img
}

/// Writes the feature-map PNG to `path`.
pub fn save_feature_maps(grid: &FeatureGrid, path: &Path) -> anyhow::Result<()> {
    save_dynamic(&DynamicImage::ImageRgb8(feature_maps_image(grid)), path)
}

/// Writes the adversarial image (the model's view) as PNG.
pub fn save_adversarial(snap: &Snapshot, path: &Path) -> anyhow::Result<()> {
    let shape = chw(snap)?;
    let img = image_io::example_to_image(snap.x_adv.example(0), shape)?;
    save_dynamic(&img, path)
}

/// The perturbation as a signed colour map scaled to its own L∞ (red +, blue −), and the
/// amplification factor applied.
pub fn perturbation_rgb(snap: &Snapshot) -> anyhow::Result<(RgbImage, f32)> {
    let shape = chw(snap)?;
    let delta = snap.delta();
    let linf = delta.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    Ok(perturbation_image(&delta, shape, linf))
}

/// Writes the perturbation PNG.
pub fn save_perturbation(snap: &Snapshot, path: &Path) -> anyhow::Result<()> {
    let (img, _) = perturbation_rgb(snap)?;
    save_dynamic(&DynamicImage::ImageRgb8(img), path)
}

/// Writes the JSON record (the format of `advlens attack`).
pub fn save_record(snap: &Snapshot, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(&snap.record)?;
    crate::io::write_atomic(path, &json).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a window screenshot as PNG.
pub fn save_screenshot(shot: &egui::ColorImage, path: &Path) -> anyhow::Result<()> {
    let [w, h] = shot.size;
    let bytes: Vec<u8> = shot.pixels.iter().flat_map(|c| c.to_array()).collect();
    let img = RgbaImage::from_raw(w as u32, h as u32, bytes)
        .context("screenshot has the wrong number of pixels")?;
    save_dynamic(&DynamicImage::ImageRgba8(img), path)
}

fn chw(snap: &Snapshot) -> anyhow::Result<[usize; 3]> {
    match snap.x.shape() {
        &[_, c, h, w] => Ok([c, h, w]),
        s => anyhow::bail!("image has shape {s:?}, expected [1, C, H, W]"),
    }
}

fn save_dynamic(img: &DynamicImage, path: &Path) -> anyhow::Result<()> {
    image_io::save_png(img, path).with_context(|| format!("cannot write {}", path.display()))
}
