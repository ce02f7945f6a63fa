//! Xie et al.'s released ImageNet models (`R152.npz`, `R152-Denoise.npz`, `X101-DenoiseAll.npz`
//! and the same layouts at other depths), written by tensorpack: the architecture is recognised
//! from the key set alone and built on the resnet-denoise family, whose node and parameter names
//! are tensorpack's. Kernels are converted from TensorFlow's HWIO to OIHW and the classifier
//! from `[in, out]` to `[out, in]`; BGR input scaled to [-1, 1] and the evaluation resize
//! (shorter side 256, bicubic, centre crop 224) are part of the model.

use std::collections::BTreeMap;
use std::path::Path;

use super::npz::{NpzError, read_npz};
use super::resnet::{BlockKind, StemKind};
use super::{ArchConfig, DenoiseVariant, ModelError, Network, Placement, ResnetDenoiseConfig};
use crate::array::Array;

/// A recognised tensorpack ImageNet architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct Recognised {
    /// Human-readable name, e.g. `ResNet-152 with non-local denoise blocks after each stage`.
    pub name: String,
    /// The configuration that rebuilds it.
    pub config: ResnetDenoiseConfig,
}

fn bad(reason: impl Into<String>) -> ModelError {
    ModelError::BadFile {
        // [`load`] puts the file's path in.
        path: "<memory>".into(),
        reason: reason.into(),
    }
}

/// Strips the `:0` suffix TensorFlow sometimes leaves on variable names.
pub fn canonical_key(k: &str) -> &str {
    k.strip_suffix(":0").unwrap_or(k)
}

/// Recognises the architecture from the arrays' names and shapes (canonical keys).
pub fn recognise(arrays: &BTreeMap<String, Array>) -> Result<Recognised, ModelError> {
    let shape = |k: &str| arrays.get(k).map(|a| a.shape().to_vec());
    let stem = shape("conv0/W").ok_or_else(|| {
        bad("no conv0/W: not one of Xie et al.'s tensorpack ResNets (R152, R152-Denoise, X101-DenoiseAll)")
    })?;
    if stem.len() != 4 || stem[0] != 7 || stem[1] != 7 {
        return Err(bad(format!(
            "conv0/W has shape {stem:?}, expected [7, 7, C, 64]"
        )));
    }
    let (in_channels, stem_width) = (stem[2], stem[3]);
    let mut blocks = Vec::new();
    for g in 0.. {
        let n = (0..)
            .take_while(|b| arrays.contains_key(&format!("group{g}/block{b}/conv1/W")))
            .count();
        if n == 0 {
            break;
        }
        blocks.push(n);
    }
    if blocks.is_empty() {
        return Err(bad("no residual blocks (group0/block0/conv1/W missing)"));
    }
    let mut widths = Vec::new();
    for g in 0..blocks.len() {
        let name = format!("group{g}/block0/conv3/W");
        let c3 =
            shape(&name).ok_or_else(|| bad(format!("{name} missing: not a bottleneck ResNet")))?;
        let &[_, _, _, out] = c3.as_slice() else {
            return Err(bad(format!(
                "{name} has shape {c3:?}, expected 4 dimensions"
            )));
        };
        widths.push(out / 4);
    }
    let c1 = shape("group0/block0/conv1/W").unwrap_or_default();
    let c2 = shape("group0/block0/conv2/W").unwrap_or_default();
    if c1.len() != 4 || c2.len() != 4 || c2[2] == 0 {
        return Err(bad("group0/block0 convolutions have unexpected ranks"));
    }
    let inner = c1[3];
    let cardinality = inner / c2[2];
    let factor = inner / widths[0].max(1);
    let classes = shape("linear/b")
        .and_then(|s| s.first().copied())
        .ok_or_else(|| bad("linear/b missing"))?;
    let stage_denoise: Vec<usize> = (0..blocks.len())
        .filter(|g| arrays.contains_key(&format!("group{g}_denoise/conv/W")))
        .collect();
    let block_denoise = arrays.keys().any(|k| k.ends_with("/non_local/conv/W"));
    let embedded = arrays.keys().any(|k| k.contains("embedding_theta"));
    let (placement, denoise, stages) = match (stage_denoise.is_empty(), block_denoise) {
        (true, false) => (Placement::None, DenoiseVariant::NonlocalGaussian, None),
        (false, false) => {
            let stages = (stage_denoise.len() < blocks.len()).then(|| stage_denoise.clone());
            let v = if embedded {
                DenoiseVariant::NonlocalGaussian
            } else {
                DenoiseVariant::GaussianNoEmbed
            };
            (Placement::AfterStage, v, stages)
        }
        (true, true) => {
            let v = if embedded {
                DenoiseVariant::NonlocalGaussian
            } else {
                DenoiseVariant::DotProduct
            };
            (Placement::AfterEveryBlock, v, None)
        }
        (false, true) => {
            return Err(bad(
                "denoise blocks both after stages and after blocks: not a released layout",
            ));
        }
    };
    let depth = 2 + 3 * blocks.iter().sum::<usize>();
    let family = if cardinality > 1 {
        format!("ResNeXt-{depth} {cardinality}×{}d", inner / cardinality)
    } else {
        format!("ResNet-{depth}")
    };
    let what = match placement {
        Placement::None => String::new(),
        Placement::AfterStage => format!(
            " with {} denoise blocks after {}",
            denoise,
            if stages.is_some() {
                "some stages"
            } else {
                "each stage"
            }
        ),
        Placement::AfterEveryBlock => format!(" with {denoise} denoise blocks after every block"),
    };
    let config = ResnetDenoiseConfig {
        in_channels,
        image_size: [224, 224],
        num_classes: classes,
        stem_width,
        widths,
        blocks,
        denoise,
        placement,
        denoise_stages: stages,
        mean: vec![0.5; in_channels],
        std: vec![0.5; in_channels],
        block: BlockKind::Bottleneck,
        stem: StemKind::Imagenet,
        cardinality,
        bottleneck_factor: factor.max(1),
        channel_order: if in_channels == 3 {
            vec![2, 1, 0]
        } else {
            vec![]
        },
        eval_resize: Some(256),
    };
    Ok(Recognised {
        name: format!("{family}{what} (Xie et al., tensorpack)"),
        config,
    })
}

/// Converts tensorpack layouts to the ones the architecture description uses: 4-D kernels
/// HWIO → OIHW, the classifier `[in, out]` → `[out, in]`.
pub fn convert(key: &str, a: Array) -> Result<Array, ModelError> {
    match a.shape().len() {
        4 if key.ends_with("/W") => a.permuted(&[3, 2, 0, 1]),
        2 if key == "linear/W" => a.permuted(&[1, 0]),
        _ => return Ok(a),
    }
    .map_err(|e| bad(e.to_string()))
}

/// The released layouts, by name: `r152`, `r152-denoise`, `x101-denoise-all` (also at other
/// depths: `r50`, `r101`, `r50-denoise`, ...).
pub fn released(name: &str) -> Option<ResnetDenoiseConfig> {
    let (base, denoise) = match name.strip_suffix("-denoise-all") {
        Some(b) => (b, Some(Placement::AfterEveryBlock)),
        None => match name.strip_suffix("-denoise") {
            Some(b) => (b, Some(Placement::AfterStage)),
            None => (name, None),
        },
    };
    let (x101, depth) = match base.strip_prefix('x') {
        Some(d) => (true, d),
        None => (false, base.strip_prefix('r')?),
    };
    let blocks = match depth {
        "50" => vec![3, 4, 6, 3],
        "101" => vec![3, 4, 23, 3],
        "152" => vec![3, 8, 36, 3],
        _ => return None,
    };
    let (placement, variant) = match denoise {
        None => (Placement::None, DenoiseVariant::NonlocalGaussian),
        Some(Placement::AfterStage) => (Placement::AfterStage, DenoiseVariant::NonlocalGaussian),
        Some(_) => (Placement::AfterEveryBlock, DenoiseVariant::DotProduct),
    };
    Some(ResnetDenoiseConfig {
        in_channels: 3,
        image_size: [224, 224],
        num_classes: 1000,
        stem_width: 64,
        widths: vec![64, 128, 256, 512],
        blocks,
        denoise: variant,
        placement,
        denoise_stages: None,
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
        block: BlockKind::Bottleneck,
        stem: StemKind::Imagenet,
        cardinality: if x101 { 32 } else { 1 },
        bottleneck_factor: if x101 { 4 } else { 1 },
        channel_order: vec![2, 1, 0],
        eval_resize: Some(256),
    })
}

/// The inverse of [`convert`]: a parameter in tensorpack's layout (for writing `.npz` files).
pub fn to_tensorpack(key: &str, a: &Array) -> Result<Array, ModelError> {
    match a.shape().len() {
        4 => a.permuted(&[2, 3, 1, 0]),
        2 if key == "linear/W" => a.permuted(&[1, 0]),
        _ => return Ok(a.clone()),
    }
    .map_err(|e| bad(e.to_string()))
}

/// Opens a tensorpack `.npz`, recognises it and builds the network.
pub fn load(path: &Path) -> Result<Network, ModelError> {
    let file = path.display().to_string();
    let raw = read_npz(path).map_err(|e| match e {
        NpzError::Io(source) => ModelError::Io {
            path: file.clone(),
            source,
        },
        other => ModelError::BadFile {
            path: file.clone(),
            reason: other.to_string(),
        },
    })?;
    from_arrays(raw).map_err(|e| match e {
        ModelError::BadFile { reason, .. } => ModelError::BadFile {
            path: file.clone(),
            reason,
        },
        other => other,
    })
}

/// Recognises the arrays of a tensorpack archive (as [`read_npz`] returns them, keys possibly
/// with TensorFlow's `:0`) and builds the network.
pub fn from_arrays(raw: BTreeMap<String, Array>) -> Result<Network, ModelError> {
    let mut arrays = BTreeMap::new();
    for (k, a) in raw {
        arrays.insert(canonical_key(&k).to_string(), a);
    }
    let rec = recognise(&arrays)?;
    let mut weights = BTreeMap::new();
    for (k, a) in arrays {
        weights.insert(k.clone(), convert(&k, a)?);
    }
    let config = ArchConfig::ResnetDenoise(rec.config.clone());
    let class_names =
        (rec.config.num_classes == crate::data::IMAGENET_CLASSES).then(crate::data::imagenet_names);
    let mut net = Network::from_weights(config, weights, class_names)?;
    net.metadata
        .insert("advlens.recognised".into(), rec.name.clone());
    Ok(net)
}
