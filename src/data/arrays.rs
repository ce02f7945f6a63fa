//! A labelled set stored as NumPy arrays in an `.npz` archive (`numpy.savez(FILE, x=images,
//! y=labels)`): `x` is `uint8` 0–255 in `[N, H, W, C]` (or `[N, C, H, W]` when its second
//! dimension is the model's channels and its last is not), or floats in [0, 1] in `[N, C, H, W]`
//! (or `[N, H, W, C]` when its last dimension is the model's channels and its second is not),
//! or `[N, H, W]` for grey images; `y` is `[N]` integers. Arrays are not resized: their images
//! must have the model's input size.

use std::collections::BTreeMap;
use std::path::Path;

use super::{DataError, Labelled};
use crate::array::Array;
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
