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
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        source: FormatError,
    },
    /// The image and label files do not form a labelled set.
    #[error("{path}: {source}")]
    Labelled {
        /// The folder (or the bundled files).
        path: String,
        /// What is wrong.
        source: LabelledError,
    },
}

/// Why bytes are not an unsigned-byte IDX array.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer than the four bytes of the magic number.
    #[error("file too short for an IDX header")]
    TooShort,
    /// The magic number does not start with two zero bytes.
    #[error(
        "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
        .0[0], .0[1], .0[2], .0[3]
    )]
    Magic([u8; 4]),
    /// An element type other than unsigned byte.
    #[error("IDX element type 0x{0:02x} is not unsigned byte (0x08)")]
    ElementType(u8),
    /// A number of dimensions outside 1..=4.
    #[error("{0} dimensions; expected 1 to 4")]
    Rank(usize),
    /// The file ends inside the dimension list.
    #[error("truncated IDX header")]
    TruncatedHeader,
    /// The dimensions multiply to more than [`MAX_BYTES`] (or overflow).
    #[error("declared size {0:?} is too large")]
    TooLarge(Vec<usize>),
    /// The values after the header are more or fewer than the dimensions say.
    #[error(
        "declared size {dims:?} needs {needed} bytes but the file holds {actual}{}",
        if actual < needed { " (truncated)" } else { "" }
    )]
    Length {
        /// The declared dimensions.
        dims: Vec<usize>,
        /// Bytes they need.
        needed: usize,
        /// Bytes after the header.
        actual: usize,
    },
}

/// Why an image array and a label array do not form a labelled set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelledError {
    /// The images are not `[N, H, W]`.
    #[error("images have dimensions {0:?}, expected [N, H, W]")]
    ImageDims(Vec<usize>),
    /// The labels are not `[N]`.
    #[error("labels have dimensions {0:?}, expected [N]")]
    LabelDims(Vec<usize>),
    /// Different numbers of images and labels.
    #[error("{images} images but {labels} labels")]
    Count {
        /// Images.
        images: usize,
        /// Labels.
        labels: usize,
    },
    /// A label names no class.
    #[error("label {label} is out of range for {classes} classes")]
    LabelRange {
        /// The first such label.
        label: u8,
        /// The number of classes.
        classes: usize,
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
pub fn parse(bytes: &[u8]) -> Result<Idx, FormatError> {
    let &[m0, m1, kind, nd, ..] = bytes else {
        return Err(FormatError::TooShort);
    };
    if m0 != 0 || m1 != 0 {
        return Err(FormatError::Magic([m0, m1, kind, nd]));
    }
    if kind != 0x08 {
        return Err(FormatError::ElementType(kind));
    }
    let nd = nd as usize;
    if nd == 0 || nd > 4 {
        return Err(FormatError::Rank(nd));
    }
    let header = 4 + 4 * nd;
    let Some(sizes) = bytes.get(4..header) else {
        return Err(FormatError::TruncatedHeader);
    };
    let dims: Vec<usize> = sizes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let needed = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c as u64 <= MAX_BYTES)
        .ok_or_else(|| FormatError::TooLarge(dims.clone()))?;
    let body = &bytes[header..];
    if body.len() != needed {
        return Err(FormatError::Length {
            dims,
            needed,
            actual: body.len(),
        });
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
    parse(&bytes).map_err(|source| IdxError::Format {
        path: path.display().to_string(),
        source,
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
    pub fn from_idx(images: &Idx, labels: &Idx, classes: usize) -> Result<Self, LabelledError> {
        let &[n, h, w] = images.dims.as_slice() else {
            return Err(LabelledError::ImageDims(images.dims.clone()));
        };
        let &[m] = labels.dims.as_slice() else {
            return Err(LabelledError::LabelDims(labels.dims.clone()));
        };
        if n != m {
            return Err(LabelledError::Count {
                images: n,
                labels: m,
            });
        }
        if let Some(&label) = labels.data.iter().find(|&&l| l as usize >= classes) {
            return Err(LabelledError::LabelRange { label, classes });
        }
        let data = images.data.iter().map(|&v| f32::from(v) / 255.0).collect();
        // `parse` checked that the values are exactly `n·h·w` bytes, so the shape always fits;
        // should an `Idx` be built by hand with too few values, the dimensions are what is wrong.
        let images = Array::new(vec![n, 1, h, w], data)
            .map_err(|_| LabelledError::ImageDims(images.dims.clone()))?;
        Ok(Self {
            images,
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
    Labelled::from_idx(&images, &labels, FASHION_CLASSES.len()).map_err(|source| {
        IdxError::Labelled {
            path: dir.display().to_string(),
            source,
        }
    })
}

/// Where the bundled images come from, for error messages.
const BUNDLED: &str = "assets/fashion-mnist (built in)";

/// The first 500 Fashion-MNIST test images, shipped in assets/ (MIT, Zalando SE).
pub fn bundled_test_images() -> Result<Labelled, IdxError> {
    let images = include_bytes!("../../assets/fashion-mnist/t10k-first500-images-idx3-ubyte.gz");
    let labels = include_bytes!("../../assets/fashion-mnist/t10k-first500-labels-idx1-ubyte.gz");
    let decode = |gz: &[u8], name: &str| {
        let path = || format!("{BUNDLED}/{name}");
        let raw = gunzip(gz).map_err(|source| IdxError::Io {
            path: path(),
            source,
        })?;
        parse(&raw).map_err(|source| IdxError::Format {
            path: path(),
            source,
        })
    };
    let images = decode(images, "t10k-first500-images-idx3-ubyte.gz")?;
    let labels = decode(labels, "t10k-first500-labels-idx1-ubyte.gz")?;
    Labelled::from_idx(&images, &labels, FASHION_CLASSES.len()).map_err(|source| {
        IdxError::Labelled {
            path: BUNDLED.into(),
            source,
        }
    })
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
        let message = |b: &[u8]| parse(b).unwrap_err().to_string();
        let wrong_magic = idx([1, 2, 8, 1], &[1], &[0]);
        assert_eq!(parse(&wrong_magic), Err(FormatError::Magic([1, 2, 8, 1])));
        assert!(message(&wrong_magic).contains("magic number 01020801"));
        let truncated = idx([0, 0, 8, 3], &[2, 2, 2], &[0; 7]);
        assert!(message(&truncated).ends_with("needs 8 bytes but the file holds 7 (truncated)"));
        let too_long = idx([0, 0, 8, 1], &[2], &[0; 3]);
        assert!(message(&too_long).ends_with("needs 2 bytes but the file holds 3"));
        let huge = idx([0, 0, 8, 3], &[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(matches!(parse(&huge), Err(FormatError::TooLarge(_))));
        assert!(message(&huge).contains("too large"));
        let float = idx([0, 0, 0x0d, 1], &[1], &[0; 4]);
        assert!(message(&float).contains("0x0d is not unsigned byte"));
        assert_eq!(parse(&[0, 0]), Err(FormatError::TooShort));
        assert_eq!(parse(&[0, 0, 8, 5]), Err(FormatError::Rank(5)));
        assert_eq!(
            parse(&[0, 0, 8, 2, 0, 0, 0, 1]),
            Err(FormatError::TruncatedHeader)
        );
        // Counts that disagree, labels out of range.
        let imgs = parse(&idx([0, 0, 8, 3], &[2, 1, 1], &[0, 0])).unwrap();
        let one = parse(&idx([0, 0, 8, 1], &[1], &[0])).unwrap();
        let e = Labelled::from_idx(&imgs, &one, 10).unwrap_err();
        assert_eq!(e.to_string(), "2 images but 1 labels");
        let bad = parse(&idx([0, 0, 8, 1], &[2], &[0, 10])).unwrap();
        let e = Labelled::from_idx(&imgs, &bad, 10).unwrap_err();
        assert_eq!(
            e,
            LabelledError::LabelRange {
                label: 10,
                classes: 10
            }
        );
        assert!(e.to_string().contains("out of range"));
        let e = Labelled::from_idx(&one, &one, 10).unwrap_err();
        assert_eq!(e, LabelledError::ImageDims(vec![1]));
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
