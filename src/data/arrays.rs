//! A labelled set stored as NumPy arrays: an `.npz` archive (`numpy.savez(FILE, x=images,
//! y=labels)`) or two `.npy` files, the images named on the command line and the labels beside
//! them under the name with its `x` replaced by `y` (`x.npy` and `y.npy`, `x_test.npy` and
//! `y_test.npy`; `images.npy` and `labels.npy`). `x` is `uint8` 0–255 in `[N, H, W, C]` (or `[N, C, H, W]` when its second
//! dimension is the model's channels and its last is not), or floats in [0, 1] in `[N, C, H, W]`
//! (or `[N, H, W, C]` when its last dimension is the model's channels and its second is not),
//! or `[N, H, W]` for grey images; `y` is `[N]` integers. Arrays are not resized: their images
//! must have the model's input size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{DataError, Labelled};
use crate::array::Array;
use crate::model::MAX_FILE_BYTES;
use crate::model::npz::{self, TypedArray};

/// How far a float image value may lie outside [0, 1] (rounding in whoever wrote it).
const RANGE_SLACK: f32 = 1e-4;

/// Reads the `.npz` archive at `path` as a labelled set for a model taking `input` (`[C, H,
/// W]`) with `classes` classes.
pub fn open_arrays(path: &Path, input: [usize; 3], classes: usize) -> Result<Labelled, DataError> {
    let shown = path.display().to_string();
    let arrays = npz::read_npz_typed(path).map_err(|source| DataError::Npz {
        path: shown.clone(),
        source,
    })?;
    labelled_from_arrays(arrays, input, classes, &shown)
}

/// Reads the image array `path` (an `.npy` file) and the label array beside it (see the module
/// docs for its name) as a labelled set for a model taking `input` with `classes` classes.
pub fn open_npy_pair(
    path: &Path,
    input: [usize; 3],
    classes: usize,
) -> Result<Labelled, DataError> {
    let shown = path.display().to_string();
    let labels_path = label_file(path)?;
    let read = |p: &Path| {
        npz::read_npy_typed(p, MAX_FILE_BYTES).map_err(|source| DataError::Npz {
            path: p.display().to_string(),
            source,
        })
    };
    let arrays = BTreeMap::from([
        ("x".to_string(), read(path)?),
        ("y".to_string(), read(&labels_path)?),
    ]);
    let name = format!("{shown} with {}", labels_path.display());
    labelled_from_arrays(arrays, input, classes, &name)
}

/// The label file beside the image array `x`: the first of [`label_names`] that exists.
fn label_file(x: &Path) -> Result<PathBuf, DataError> {
    let stem = x
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let dir = x.parent().unwrap_or(Path::new(""));
    let names = label_names(&stem);
    if let Some(found) = names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        return Ok(found);
    }
    let reason = if names.is_empty() {
        "an .npy file holds the images only, and its name has no x or images part to find the \
         labels by: name the files x.npy and y.npy (or x_NAME.npy and y_NAME.npy), or save both \
         in one archive: numpy.savez(FILE.npz, x=images, y=labels)"
            .to_string()
    } else {
        format!(
            "the labels were looked for beside the images as {} and are not there: save them \
             with numpy.save, or save both in one archive: numpy.savez(FILE.npz, x=images, \
             y=labels)",
            names.join(" or ")
        )
    };
    Err(DataError::Arrays {
        path: x.display().to_string(),
        reason,
    })
}

/// The names the label file of the image array named `stem` may have: each `_`-, `-`- or
/// `.`-separated part `x` (either case) replaced by `y` (both cases), or `images` by `labels`.
fn label_names(stem: &str) -> Vec<String> {
    let parts: Vec<&str> = stem.split_inclusive(['_', '-', '.']).collect();
    let mut names = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let word = part.trim_end_matches(['_', '-', '.']);
        let sep = &part[word.len()..];
        let swaps: &[&str] = match word {
            "x" | "X" => &["y", "Y"],
            "images" => &["labels"],
            "Images" => &["Labels"],
            _ => continue,
        };
        for swap in swaps {
            let mut name: String = parts[..i].concat();
            name.push_str(swap);
            name.push_str(sep);
            name.push_str(&parts[i + 1..].concat());
            name.push_str(".npy");
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The labelled set that the arrays `x` and `y` of the archive `name` (for messages) hold, for
/// a model taking `input` with `classes` classes.
pub fn labelled_from_arrays(
    mut arrays: BTreeMap<String, TypedArray>,
    input: [usize; 3],
    classes: usize,
    name: &str,
) -> Result<Labelled, DataError> {
    let bad = |reason: String| DataError::Arrays {
        path: name.into(),
        reason,
    };
    let keys = arrays.keys().cloned().collect::<Vec<_>>().join(", ");
    let (Some(x), Some(y)) = (arrays.remove("x"), arrays.remove("y")) else {
        return Err(bad(format!(
            "the archive holds the arrays [{}]; a data set needs x (the images) and y (the \
             labels): numpy.savez(FILE, x=images, y=labels)",
            keys
        )));
    };
    let images = images_nchw(&x, input[0], name)?;
    let shape = [images.shape()[1], images.shape()[2], images.shape()[3]];
    if shape != input {
        return Err(DataError::Shape {
            what: format!("{name}: the images of x"),
            data: shape,
            model: input,
            hint: "; arrays are used as they are, not resized: resize the images before \
                   saving them, or save them as image files (an image folder is resized as \
                   the model is evaluated)"
                .into(),
        });
    }
    let labels = labels(&y, images.shape()[0], classes, name)?;
    Ok(Labelled { images, labels })
}

/// `x` as `[N, C, H, W]` in [0, 1], for a model of `channels` channels.
fn images_nchw(x: &TypedArray, channels: usize, name: &str) -> Result<Array, DataError> {
    let bad = |reason: String| DataError::Arrays {
        path: name.into(),
        reason,
    };
    let s = x.array.shape().to_vec();
    let (scale, channels_first) = match x.kind.as_str() {
        "u1" => (255.0, s.len() == 4 && s[1] == channels && s[3] != channels),
        "f2" | "f4" | "f8" => (1.0, !(s.len() == 4 && s[3] == channels && s[1] != channels)),
        other => {
            return Err(bad(format!(
                "x holds {}; images must be uint8 (0 to 255) or floats in [0, 1]",
                kind_name(other)
            )));
        }
    };
    let nchw = match *s.as_slice() {
        [n, h, w] => Array::new(vec![n, 1, h, w], x.array.data().to_vec()),
        [_, _, _, _] if channels_first => Ok(x.array.clone()),
        [_, _, _, _] => x.array.permuted(&[0, 3, 1, 2]),
        _ => {
            return Err(bad(format!(
                "x has shape {s:?}; images are [N, H, W, C] (uint8) or [N, C, H, W] (floats), \
                 or [N, H, W] for grey"
            )));
        }
    }
    .map_err(|e| bad(e.to_string()))?;
    let shape = nchw.shape().to_vec();
    let mut data = nchw.into_data();
    if scale == 1.0 {
        if let Some(v) = data
            .iter()
            .find(|v| !(-RANGE_SLACK..=1.0 + RANGE_SLACK).contains(*v))
        {
            return Err(bad(format!(
                "x holds the value {v}: float images must be in [0, 1] (divide 0–255 values \
                 by 255, or store them as uint8)"
            )));
        }
        data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    } else {
        data.iter_mut().for_each(|v| *v /= scale);
    }
    Array::new(shape, data).map_err(|e| bad(e.to_string()))
}

/// `y` as labels of `n` images for `classes` classes.
fn labels(y: &TypedArray, n: usize, classes: usize, name: &str) -> Result<Vec<usize>, DataError> {
    let bad = |reason: String| DataError::Arrays {
        path: name.into(),
        reason,
    };
    if !y.is_integer() {
        return Err(bad(format!(
            "y holds {}; labels must be integers (class numbers)",
            kind_name(&y.kind)
        )));
    }
    let s = y.array.shape();
    if !(s == [n] || s == [n, 1]) {
        return Err(bad(format!(
            "y has shape {s:?}; the {n} images of x need labels of shape [{n}]"
        )));
    }
    y.array
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            // Integers up to 2^24 are exact in f32; anything larger is out of range anyway.
            if v >= 0.0 && (v as usize) < classes {
                Ok(v as usize)
            } else {
                Err(DataError::LabelRange {
                    place: format!("{name}: y[{i}]"),
                    label: v as i128,
                    classes,
                })
            }
        })
        .collect()
}

/// NumPy's name of an element type.
fn kind_name(kind: &str) -> String {
    let (family, bytes) = kind.split_at(kind.len().min(1));
    let bits = bytes.parse::<usize>().map_or(0, |b| b * 8);
    match family {
        "u" => format!("uint{bits}"),
        "i" => format!("int{bits}"),
        "f" => format!("float{bits}"),
        "b" => "bool".into(),
        _ => kind.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::label_names;

    #[test]
    fn label_names_swap_the_x_part() {
        assert_eq!(label_names("x"), ["y.npy", "Y.npy"]);
        assert_eq!(label_names("X_test"), ["y_test.npy", "Y_test.npy"]);
        assert_eq!(label_names("test-x"), ["test-y.npy", "test-Y.npy"]);
        assert_eq!(label_names("val_images"), ["val_labels.npy"]);
        assert!(label_names("pictures").is_empty());
        assert!(label_names("xray").is_empty());
    }
}
