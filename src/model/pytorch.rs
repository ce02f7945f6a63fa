//! PyTorch state dicts as models: a checkpoint's keys say which family it is (torchvision ResNet,
//! EfficientNet-Lite), its shapes give the configuration, and the tensors load by name, since
//! those families name their nodes after PyTorch's modules. The files are read by [`super::pth`],
//! which never runs anything from them.

use std::collections::BTreeMap;
use std::path::Path;

use super::efficientnet::EfficientNetLiteConfig;
use super::pth::{PthError, read_pth};
use super::torchvision::TorchResnetConfig;
use super::{ArchConfig, ModelError, Network};
use crate::array::Array;

/// Metadata key naming the recognised architecture.
pub const META_RECOGNISED: &str = "advlens.recognised";

/// The families this build recognises, for error messages.
pub const KNOWN: &str =
    "torchvision ResNet-18/34/50/101/152 (and ResNeXt / Wide ResNet), EfficientNet-Lite";

/// Recognises the architecture of a PyTorch state dict: its name and configuration, or `None`
/// when the keys belong to no family this build knows.
pub fn recognise(
    tensors: &BTreeMap<String, Array>,
) -> Option<Result<(String, ArchConfig), ModelError>> {
    if let Some(cfg) = TorchResnetConfig::recognise(tensors) {
        return Some(cfg.map(|c| {
            (
                format!("torchvision {}", c.name()),
                ArchConfig::TorchResnet(c),
            )
        }));
    }
    EfficientNetLiteConfig::recognise(tensors)
        .map(|cfg| cfg.map(|c| (c.name(), ArchConfig::EfficientNetLite(c))))
}

/// Builds a network from a state dict's float tensors, recognising the family. Class names are
/// ImageNet's for a 1000-class model.
pub fn network_from_state_dict(
    mut tensors: BTreeMap<String, Array>,
) -> Result<Network, ModelError> {
    let (name, config) = recognise(&tensors).ok_or_else(|| {
        let sample: Vec<&str> = tensors.keys().take(4).map(String::as_str).collect();
        ModelError::Architecture(format!(
            "the state dict's keys (e.g. {sample:?}) match no architecture advlens knows ({KNOWN})"
        ))
    })??;
    let graph = config.build()?;
    // Keys outside the architecture that a state dict legitimately carries are dropped:
    // torchvision's `num_batches_tracked` counters are integers and never reach here, but
    // converted files may keep them as floats.
    tensors.retain(|k, _| {
        !k.ends_with(".num_batches_tracked") || graph.params.iter().any(|p| &p.name == k)
    });
    let class_names =
        (graph.num_classes == crate::data::IMAGENET_CLASSES).then(crate::data::imagenet_names);
    let mut net = Network::from_weights(config, tensors, class_names)?;
    net.metadata.insert(META_RECOGNISED.into(), name);
    Ok(net)
}

/// Opens a PyTorch checkpoint (`.pth` / `.pt`, legacy or zip format) as a network.
pub fn load(path: &Path) -> Result<Network, ModelError> {
    let file = path.display().to_string();
    let pth = read_pth(path).map_err(|e| match e {
        PthError::Io(source) => ModelError::Io {
            path: file.clone(),
            source,
        },
        other => ModelError::BadFile {
            path: file.clone(),
            reason: other.to_string(),
        },
    })?;
    network_from_state_dict(pth.tensors).map_err(|e| match e {
        ModelError::Architecture(reason) => ModelError::BadFile {
            path: file.clone(),
            reason,
        },
        other => other,
    })
}
