//! Weight files: safetensors with the architecture configuration in the file's metadata, so that
//! one file is enough to open a model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{ArchConfig, ModelError, Network};
use crate::array::Array;

/// Metadata key holding the [`ArchConfig`] as JSON.
pub const META_ARCH: &str = "advlens.arch";
/// Metadata key holding the class names as a JSON list.
pub const META_CLASSES: &str = "advlens.classes";
/// Metadata key holding the format version.
pub const META_FORMAT: &str = "advlens.format";
/// The format version this build writes.
pub const FORMAT_VERSION: &str = "1";
use super::limits::MAX_EVAL_RESIZE;
/// Largest weight file advlens opens; defined in [`super::limits`], named here for the readers
/// of advlens's own files.
pub use super::limits::MAX_FILE_BYTES;

/// Serialises a network to safetensors bytes.
pub fn to_bytes(net: &Network) -> Result<Vec<u8>, ModelError> {
    to_bytes_with(net, &[])
}

/// Serialises a network and `extra` tensors (names outside the network's, e.g. a trainer's
/// momentum buffers in a checkpoint) to safetensors bytes.
pub fn to_bytes_with(net: &Network, extra: &[(String, Array)]) -> Result<Vec<u8>, ModelError> {
    let mut meta: HashMap<String, String> = net
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bad = |reason: String| ModelError::BadFile {
        path: "<memory>".into(),
        reason,
    };
    meta.insert(
        META_ARCH.into(),
        serde_json::to_string(&net.config).map_err(|e| bad(e.to_string()))?,
    );
    meta.insert(
        META_CLASSES.into(),
        serde_json::to_string(&net.class_names).map_err(|e| bad(e.to_string()))?,
    );
    meta.insert(META_FORMAT.into(), FORMAT_VERSION.into());
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = net
        .weights
        .iter()
        .chain(extra.iter().map(|(k, v)| (k, v)))
        .map(|(name, a)| {
            let b: Vec<u8> = a.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), b, a.shape().to_vec())
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (name, b, shape) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), b).map_err(|e| bad(e.to_string()))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))
}

/// Saves a network atomically.
pub fn save(net: &Network, path: &Path) -> Result<(), ModelError> {
    let bytes = to_bytes(net)?;
    crate::io::write_atomic(path, &bytes).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Loads a network from a file: a safetensors file written by [`save`] (or a safetensors
/// state dict of a family [`super::pytorch`] recognises), by extension one of Xie et al.'s
/// tensorpack models (`.npz`) or a PyTorch checkpoint (`.pth`, `.pt`).
pub fn load(path: &Path) -> Result<Network, ModelError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("npz") => return super::tensorpack::load(path),
        Some("pth" | "pt") => return super::pytorch::load(path),
        _ => {}
    }
    let bytes = crate::io::read_limited(path, MAX_FILE_BYTES).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_bytes(&bytes).map_err(|e| match e {
        ModelError::BadFile { reason, .. } => ModelError::BadFile {
            path: path.display().to_string(),
            reason,
        },
        other => other,
    })
}

/// Parses safetensors bytes into a network.
pub fn from_bytes(bytes: &[u8]) -> Result<Network, ModelError> {
    from_bytes_with(bytes, None).map(|(net, _)| net)
}

/// Parses safetensors bytes into a network, setting aside the tensors whose names start with
/// `extra_prefix` (written by [`to_bytes_with`]).
pub fn from_bytes_with(
    bytes: &[u8],
    extra_prefix: Option<&str>,
) -> Result<(Network, Vec<(String, Array)>), ModelError> {
    let bad = |reason: String| ModelError::BadFile {
        path: "<memory>".into(),
        reason,
    };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let Some(arch_json) = meta.get(META_ARCH) else {
        return state_dict_without_config(&st, extra_prefix.is_some()).map_err(|e| match e {
            ModelError::Architecture(reason) => bad(format!(
                "no {META_ARCH:?} entry in the metadata: this file does not say which architecture it holds, and {reason}"
            )),
            other => other,
        });
    };
    let config: ArchConfig = serde_json::from_str(arch_json).map_err(|e| {
        bad(format!(
            "the architecture in the metadata is not valid: {e}"
        ))
    })?;
    let class_names = match meta.get(META_CLASSES) {
        Some(s) => Some(serde_json::from_str::<Vec<String>>(s).map_err(|e| {
            bad(format!(
                "the class names in the metadata are not valid: {e}"
            ))
        })?),
        None => None,
    };
    let mut weights = BTreeMap::new();
    let mut extra = Vec::new();
    for (name, view) in st.tensors() {
        let data = decode_f32(&name, &view).map_err(bad)?;
        let array = Array::new(view.shape().to_vec(), data).map_err(|e| bad(e.to_string()))?;
        if extra_prefix.is_some_and(|p| name.starts_with(p)) {
            extra.push((name, array));
        } else {
            weights.insert(name, array);
        }
    }
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    let mut net = Network::from_weights(config, weights, class_names)?;
    // Images are scaled to this size before the centre crop: a damaged digit here would make
    // every later image conversion allocate without bound.
    if let Some(r) = net.eval_resize().filter(|&r| r > MAX_EVAL_RESIZE) {
        return Err(bad(format!(
            "the architecture's evaluation resize of {r} pixels is larger than the \
             {MAX_EVAL_RESIZE} advlens allows"
        )));
    }
    net.metadata = meta
        .into_iter()
        .filter(|(k, _)| k != META_ARCH && k != META_CLASSES && k != META_FORMAT)
        .collect();
    Ok((net, extra))
}

/// A safetensors file without advlens metadata (e.g. a converted PyTorch state dict): the
/// architecture is recognised from the tensor names, integer tensors are left out.
fn state_dict_without_config(
    st: &SafeTensors<'_>,
    with_extra: bool,
) -> Result<(Network, Vec<(String, Array)>), ModelError> {
    let bad = |reason: String| ModelError::BadFile {
        path: "<memory>".into(),
        reason,
    };
    if with_extra {
        return Err(bad(format!(
            "no {META_ARCH:?} entry in the metadata: not an advlens checkpoint"
        )));
    }
    let mut weights = BTreeMap::new();
    for (name, view) in st.tensors() {
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F64) {
            continue;
        }
        let data = decode_f32(&name, &view).map_err(bad)?;
        let array = Array::new(view.shape().to_vec(), data).map_err(|e| bad(e.to_string()))?;
        weights.insert(name, array);
    }
    Ok((
        super::pytorch::network_from_state_dict(weights)?,
        Vec::new(),
    ))
}

fn decode_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let raw = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        Dtype::F64 => Ok(raw
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect()),
        other => Err(format!(
            "tensor {name:?} has dtype {other:?}; advlens reads F32 and F64"
        )),
    }
}
