//! The built-in default model and image, so the app and CLI work with no files at all.
//!
//! Until trained Fashion-MNIST models ship in assets/, the default model is the small
//! resnet-denoise network with seeded random weights (and Fashion-MNIST's class names); the
//! default image is the first bundled Fashion-MNIST test image.

use crate::array::Array;
use crate::model::{ArchConfig, ModelError, Network, Placement, ResnetDenoiseConfig};

/// The name the CLI accepts for the built-in model.
pub const DEFAULT_MODEL: &str = "builtin:default";
/// The name the CLI accepts for the built-in image.
pub const DEFAULT_IMAGE: &str = "builtin:default";

/// The default configuration: 28×28 grey, widths 16/32/64, one block per stage, non-local
/// Gaussian denoise blocks after each stage.
pub fn default_config() -> ArchConfig {
    ArchConfig::ResnetDenoise(ResnetDenoiseConfig::small_gray(Placement::AfterStage))
}

/// The built-in model (seeded random weights).
pub fn default_network() -> Result<Network, ModelError> {
    let mut net = Network::random(default_config(), 0)?;
    net.class_names = crate::data::idx::FASHION_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    net.metadata.insert(
        "advlens.note".into(),
        "untrained: seeded random weights (seed 0)".into(),
    );
    Ok(net)
}

/// The first bundled Fashion-MNIST test image (an ankle boot), `[1, 1, 28, 28]`; the drawn test
/// pattern if the bundled data cannot be decoded.
pub fn default_image() -> Array {
    match crate::data::idx::bundled_test_images() {
        Ok(set) => set.images.select(&[0]),
        Err(_) => test_pattern(),
    }
}

/// A 28×28 grey test pattern: a soft ring with a bar, `[1, 1, 28, 28]`.
pub fn test_pattern() -> Array {
    let (h, w) = (28usize, 28usize);
    let mut data = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 - 13.5, x as f32 - 13.5);
            let r = (dx * dx + dy * dy).sqrt();
            let ring = (-((r - 8.0) * (r - 8.0)) / 6.0).exp();
            let bar = if (12..16).contains(&x) && (6..22).contains(&y) {
                0.8
            } else {
                0.0
            };
            data[y * w + x] = (ring + bar).min(1.0);
        }
    }
    Array::new(vec![1, 1, h, w], data).unwrap_or_else(|_| Array::zeros(vec![1, 1, h, w]))
}

/// The name the CLI accepts for a ResNet-50-shaped network with random weights (benchmarks).
pub const RESNET50_MODEL: &str = "builtin:resnet50-random";

/// Resolves a model argument: [`DEFAULT_MODEL`], [`RESNET50_MODEL`] or a safetensors path.
pub fn load_model(spec: &str) -> Result<Network, ModelError> {
    match spec {
        DEFAULT_MODEL => default_network(),
        RESNET50_MODEL => Network::random(
            ArchConfig::ResnetDenoise(ResnetDenoiseConfig::resnet50_shaped()),
            0,
        ),
        path => crate::model::weights::load(std::path::Path::new(path)),
    }
}
