//! The IDX format of (Fashion-)MNIST (`magic = 0x00 0x00 type ndims`, big-endian u32 sizes, then
//! the values), gzip-compressed or not, and Fashion-MNIST as labelled image batches.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::array::Array;

/// Largest decompressed IDX payload accepted (the full training images are 47 MB).
pub const MAX_BYTES: u64 = 256 << 20;

/// The Fashion-MNIST class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Errors reading IDX files.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be read or decompressed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes are not a valid unsigned-byte IDX file.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A decoded unsigned-byte IDX array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<u8>,
}

/// Parses IDX bytes (already decompressed).
pub fn parse(bytes: &[u8]) -> Result<Idx, String> {
    if bytes.len() < 4 {
        return Err("file too short for an IDX header".into());
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        ));
    }
    let nd = bytes[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(format!("{nd} dimensions; expected 1 to 4"));
    }
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c as u64 <= MAX_BYTES)
        .ok_or_else(|| format!("declared size {dims:?} is too large"))?;
    let body = &bytes[header..];
    if body.len() != count {
        return Err(format!(
            "declared size {dims:?} needs {count} bytes but the file holds {}{}",
            body.len(),
            if body.len() < count {
                " (truncated)"
            } else {
                ""
            }
        ));
    }
    Ok(Idx {
        dims,
        data: body.to_vec(),
    })
}

/// Reads an IDX file, gunzipping it when its name ends in `.gz`.
pub fn read(path: &Path) -> Result<Idx, IdxError> {
    let io = |source| IdxError::Io {
        path: path.display().to_string(),
        source,
    };
    let raw = crate::io::read_limited(path, MAX_BYTES).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        gunzip(&raw).map_err(io)?
    } else {
        raw
    };
    parse(&bytes).map_err(|reason| IdxError::Format {
        path: path.display().to_string(),
        reason,
    })
}

/// Decompresses gzip bytes, refusing more than [`MAX_BYTES`] of output.
pub fn gunzip(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "decompresses to more than the size limit",
        ));
    }
    Ok(out)
}

/// Labelled images `[N, 1, 28, 28]` in [0, 1].
#[derive(Clone, Debug)]
pub struct Labelled {
    /// Images.
    pub images: Array,
    /// Labels.
    pub labels: Vec<usize>,
}

impl Labelled {
    /// Builds a labelled set from image and label IDX arrays, checking that they agree.
    pub fn from_idx(images: &Idx, labels: &Idx, classes: usize) -> Result<Self, String> {
        let &[n, h, w] = images.dims.as_slice() else {
            return Err(format!(
                "images have dimensions {:?}, expected [N, H, W]",
                images.dims
            ));
        };
        let &[m] = labels.dims.as_slice() else {
            return Err(format!(
                "labels have dimensions {:?}, expected [N]",
                labels.dims
            ));
        };
        if n != m {
            return Err(format!("{n} images but {m} labels"));
        }
        if let Some(bad) = labels.data.iter().find(|&&l| l as usize >= classes) {
            return Err(format!("label {bad} is out of range for {classes} classes"));
        }
        let data = images.data.iter().map(|&v| f32::from(v) / 255.0).collect();
        Ok(Self {
            images: Array::new(vec![n, 1, h, w], data).map_err(|e| e.to_string())?,
            labels: labels.data.iter().map(|&l| l as usize).collect(),
        })
    }

    /// The examples at `indices`.
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            images: self.images.select(indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Which Fashion-MNIST split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60 000 training images.
    Train,
    /// 10 000 test images.
    Test,
}

/// Loads a Fashion-MNIST split from a folder made by `scripts/fetch-data.sh`.
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Labelled, IdxError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let file = |kind: &str| -> PathBuf { dir.join(format!("{prefix}-{kind}-ubyte.gz")) };
    let images = read(&file("images-idx3"))?;
    let labels = read(&file("labels-idx1"))?;
    Labelled::from_idx(&images, &labels, FASHION_CLASSES.len()).map_err(|reason| IdxError::Format {
        path: dir.display().to_string(),
        reason,
    })
}

/// The first 500 Fashion-MNIST test images, shipped in assets/ (MIT, Zalando SE).
pub fn bundled_test_images() -> Result<Labelled, String> {
    let images = include_bytes!("../../assets/fashion-mnist/t10k-first500-images-idx3-ubyte.gz");
    let labels = include_bytes!("../../assets/fashion-mnist/t10k-first500-labels-idx1-ubyte.gz");
    let images = parse(&gunzip(images).map_err(|e| e.to_string())?)?;
    let labels = parse(&gunzip(labels).map_err(|e| e.to_string())?)?;
    Labelled::from_idx(&images, &labels, FASHION_CLASSES.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: [u8; 4], dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_vec();
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(body);
        v
    }

    #[test]
    fn parses_known_contents() {
        let b = idx([0, 0, 8, 3], &[2, 1, 3], &[0, 1, 2, 253, 254, 255]);
        let p = parse(&b).unwrap();
        assert_eq!(p.dims, vec![2, 1, 3]);
        assert_eq!(p.data, vec![0, 1, 2, 253, 254, 255]);
        let l = parse(&idx([0, 0, 8, 1], &[2], &[7, 9])).unwrap();
        let set = Labelled::from_idx(&p, &l, 10).unwrap();
        assert_eq!(set.images.shape(), &[2, 1, 1, 3]);
        assert_eq!(set.images.data()[5], 1.0);
        assert_eq!(set.labels, vec![7, 9]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let wrong_magic = idx([1, 2, 8, 1], &[1], &[0]);
        assert!(parse(&wrong_magic).unwrap_err().contains("magic"));
        let truncated = idx([0, 0, 8, 3], &[2, 2, 2], &[0; 7]);
        assert!(parse(&truncated).unwrap_err().contains("truncated"));
        let too_long = idx([0, 0, 8, 1], &[2], &[0; 3]);
        assert!(parse(&too_long).is_err());
        let huge = idx([0, 0, 8, 3], &[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(parse(&huge).unwrap_err().contains("too large"));
        let float = idx([0, 0, 0x0d, 1], &[1], &[0; 4]);
        assert!(parse(&float).unwrap_err().contains("unsigned byte"));
        assert!(parse(&[0, 0]).is_err());
        // Counts that disagree, labels out of range.
        let imgs = parse(&idx([0, 0, 8, 3], &[2, 1, 1], &[0, 0])).unwrap();
        let one = parse(&idx([0, 0, 8, 1], &[1], &[0])).unwrap();
        assert!(
            Labelled::from_idx(&imgs, &one, 10)
                .unwrap_err()
                .contains("2 images but 1")
        );
        let bad = parse(&idx([0, 0, 8, 1], &[2], &[0, 10])).unwrap();
        assert!(
            Labelled::from_idx(&imgs, &bad, 10)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(gunzip(b"not gzip").is_err());
    }

    #[test]
    fn bundled_images_are_the_first_500_test_images() {
        let set = bundled_test_images().unwrap();
        assert_eq!(set.images.shape(), &[500, 1, 28, 28]);
        // Known facts of the Fashion-MNIST test set: it starts with an ankle boot, a pullover
        // and two trousers, and the first 500 labels hold 55 T-shirts.
        assert_eq!(&set.labels[..4], &[9, 2, 1, 1]);
        assert_eq!(set.labels.iter().filter(|&&l| l == 0).count(), 55);
        assert!(set.images.data().iter().any(|&v| v > 0.9));
    }
}
