//! The built-in models and image, so the app and CLI work with no files at all.
//!
//! The shipped models are trained by advlens itself on Fashion-MNIST (`scripts/train-models.sh`,
//! the commands and their evaluation are in assets/models/README.md) and embedded in the binary:
//! the default is the PGD-trained network with non-local denoise blocks; the same network
//! without denoise blocks, PGD-trained and clean-trained, are its baselines. The default image
//! is the first bundled Fashion-MNIST test image.

use crate::array::Array;
use crate::data::DecodeError;
use crate::model::{ArchConfig, ModelError, Network, Placement, ResnetDenoiseConfig};

/// The name the CLI accepts for the built-in default model.
pub const DEFAULT_MODEL: &str = "builtin:default";
/// The name the CLI accepts for the built-in image.
pub const DEFAULT_IMAGE: &str = "builtin:default";
/// The name the CLI accepts for the untrained network of the default architecture with non-local
/// blocks after every stage (seeded random weights; benchmarks).
pub const UNTRAINED_MODEL: &str = "builtin:untrained";

/// A model shipped inside the binary.
#[derive(Clone, Copy, Debug)]
pub struct ShippedModel {
    /// Name (`builtin:NAME` on the command line; `assets/models/NAME.safetensors`).
    pub name: &'static str,
    /// What it is, in a line.
    pub description: &'static str,
    /// The safetensors file.
    pub bytes: &'static [u8],
}

/// The shipped models, the default first.
pub const SHIPPED: [ShippedModel; 3] = [
    ShippedModel {
        name: "pgd-denoise",
        description: "PGD-trained (ε = 0.1) with non-local Gaussian denoise blocks after stages 1 and 2",
        bytes: include_bytes!("../assets/models/pgd-denoise.safetensors"),
    },
    ShippedModel {
        name: "pgd",
        description: "PGD-trained (ε = 0.1), the same network without denoise blocks",
        bytes: include_bytes!("../assets/models/pgd.safetensors"),
    },
    ShippedModel {
        name: "clean",
        description: "clean-trained, the same network without denoise blocks",
        bytes: include_bytes!("../assets/models/clean.safetensors"),
    },
];

/// A shipped model by name.
pub fn shipped(name: &str) -> Result<Network, ModelError> {
    let m = SHIPPED
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            let names: Vec<String> = SHIPPED.iter().map(|m| format!("builtin:{}", m.name)).collect();
            ModelError::Architecture(format!(
                "no built-in model named {name:?}; there are builtin:default, builtin:untrained, {RESNET50_MODEL} and {}",
                names.join(", ")
            ))
        })?;
    crate::model::weights::from_bytes(m.bytes)
}

/// The architecture of the untrained benchmark network: 28×28 grey, widths 16/32/64, one block
/// per stage, non-local Gaussian denoise blocks after each stage (the first at 28×28).
pub fn default_config() -> ArchConfig {
    ArchConfig::ResnetDenoise(ResnetDenoiseConfig::small_gray(Placement::AfterStage))
}

/// The built-in default model: the shipped PGD-trained network with denoise blocks.
pub fn default_network() -> Result<Network, ModelError> {
    shipped(SHIPPED[0].name)
}

/// The untrained network of [`default_config`] (seeded random weights, Fashion-MNIST's class
/// names).
pub fn untrained_network() -> Result<Network, ModelError> {
    let mut net = Network::random(default_config(), 0)?;
    net.class_names = crate::data::FASHION_CLASSES
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
    match crate::data::bundled_test_images() {
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

/// The name the CLI accepts for Xie et al.'s R152-Denoise layout with random weights
/// (benchmarks).
pub const R152_DENOISE_MODEL: &str = "builtin:r152-denoise-random";

/// Resolves a model argument: [`DEFAULT_MODEL`], `builtin:NAME` for a [`SHIPPED`] model,
/// [`UNTRAINED_MODEL`], [`RESNET50_MODEL`] or a safetensors path.
pub fn load_model(spec: &str) -> Result<Network, ModelError> {
    match spec {
        DEFAULT_MODEL => default_network(),
        UNTRAINED_MODEL => untrained_network(),
        R152_DENOISE_MODEL => Network::random(
            ArchConfig::ResnetDenoise(
                crate::model::tensorpack::released("r152-denoise").ok_or_else(|| {
                    ModelError::Architecture("r152-denoise layout missing".into())
                })?,
            ),
            0,
        ),
        RESNET50_MODEL => Network::random(
            ArchConfig::ResnetDenoise(ResnetDenoiseConfig::resnet50_shaped()),
            0,
        ),
        other => match other.strip_prefix("builtin:") {
            Some(name) => shipped(name),
            None => crate::model::weights::load(std::path::Path::new(other)),
        },
    }
}

/// The `builtin:NAME` that `path` spells, if it names a built-in model rather than a file.
fn builtin_spec(path: &std::path::Path) -> Option<&str> {
    path.to_str().filter(|s| s.starts_with("builtin:"))
}

/// Whether `path` names a built-in model (`builtin:NAME`) rather than a file.
pub fn is_builtin(path: &std::path::Path) -> bool {
    builtin_spec(path).is_some()
}

/// [`load_model`] for a path: a built-in model by its `builtin:NAME`, any other path as a file
/// (not necessarily UTF-8).
pub fn load_model_path(path: &std::path::Path) -> Result<Network, ModelError> {
    match builtin_spec(path) {
        Some(spec) => load_model(spec),
        None => crate::model::weights::load(path),
    }
}

/// The sample photos shipped for ImageNet models (`photo:NAME` on the command line).
pub const PHOTOS: [(&str, &[u8]); 4] = [
    ("coffee", include_bytes!("../assets/photos/coffee.jpg")),
    ("chelsea", include_bytes!("../assets/photos/chelsea.jpg")),
    (
        "astronaut",
        include_bytes!("../assets/photos/astronaut.jpg"),
    ),
    ("rocket", include_bytes!("../assets/photos/rocket.jpg")),
];

/// Why a shipped photo cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    /// No photo has this name.
    #[error("no photo {name:?}; there are {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names there are, as the command line spells them.
        known: String,
    },
    /// The embedded bytes do not decode (a broken build).
    #[error("the built-in photo {name:?} does not decode: {source}")]
    Decode {
        /// The photo.
        name: String,
        /// The decoder's error.
        source: DecodeError,
    },
}

/// Decodes the shipped photo `name`.
pub fn photo(name: &str) -> Result<image::DynamicImage, PhotoError> {
    let (_, bytes) =
        PHOTOS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| PhotoError::Unknown {
                name: name.into(),
                known: PHOTOS
                    .iter()
                    .map(|(n, _)| format!("photo:{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    crate::data::decode_image(bytes).map_err(|source| PhotoError::Decode {
        name: name.into(),
        source,
    })
}
