//! Writing results to files: the feature-map composition, the adversarial image, the
//! perturbation and the JSON record (the `advlens attack` format). Every file is written
//! atomically. These take a path, so the app's writer thread, `advlens maps` and the tests run the
//! same code.

use std::path::Path;

use anyhow::Context as _;
use image::DynamicImage;

use super::feature_grid::FeatureGrid;
use super::render::{chw, feature_maps_image, perturbation_rgb};
use super::snapshot::Snapshot;
use crate::data;

/// What "Export …" writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// The feature-map panel of the current tap and channel (PNG).
    FeatureMaps,
    /// The adversarial image (PNG).
    Adversarial,
    /// The perturbation as a signed colour map (PNG).
    Perturbation,
    /// The JSON record, in the `advlens attack` format.
    Record,
}

impl Export {
    /// The file name the save dialog suggests.
    pub fn default_name(self) -> &'static str {
        match self {
            Export::FeatureMaps => "feature-maps.png",
            Export::Adversarial => "adversarial.png",
            Export::Perturbation => "perturbation.png",
            Export::Record => "record.json",
        }
    }

    /// The file extension (and the save dialog's filter).
    pub fn extension(self) -> &'static str {
        match self {
            Export::Record => "json",
            _ => "png",
        }
    }
}

/// Writes the feature-map PNG to `path`.
pub fn save_feature_maps(grid: &FeatureGrid, path: &Path) -> anyhow::Result<()> {
    save_dynamic(&DynamicImage::ImageRgb8(feature_maps_image(grid)), path)
}

/// Writes the adversarial image (the model's view) as PNG.
pub fn save_adversarial(snap: &Snapshot, path: &Path) -> anyhow::Result<()> {
    let shape = chw(snap)?;
    let img = data::example_to_image(snap.x_adv.example(0), shape)?;
    save_dynamic(&img, path)
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

/// Writes `img` as PNG, atomically.
pub fn save_dynamic(img: &DynamicImage, path: &Path) -> anyhow::Result<()> {
    data::save_png(img, path).with_context(|| format!("cannot write {}", path.display()))
}
