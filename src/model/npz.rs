//! NumPy `.npy` arrays and `.npz` archives (a zip of `.npy` entries, stored or deflate-compressed,
//! zip64 included) read without trusting the file: every entry's declared size must match the
//! shape in its header before anything is allocated, decompression stops at the declared size,
//! and an archive is read one entry at a time from disk, so peak memory is about the arrays
//! themselves.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;

use super::zip::{self, ZipError};
use crate::array::{Array, f16_to_f32};

/// Why an `.npy` or `.npz` file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The zip structure is broken or uses a feature this reader does not have.
    #[error("not a readable .npz archive: {0}")]
    Zip(String),
    /// An array entry is broken or of an unsupported kind.
    #[error("array {name:?}: {reason}")]
    Array {
        /// Entry name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// The most values one archive may hold (4 G floats, 16 GB): a guard against absurd headers.
pub const MAX_VALUES: usize = 4 << 30;

fn zip_err(e: ZipError, key: &str) -> NpzError {
    match e {
        ZipError::Io(e) => NpzError::Io(e),
        ZipError::Format(m) => NpzError::Zip(m),
        ZipError::Entry { reason, .. } => NpzError::Array {
            name: key.into(),
            reason,
        },
    }
}

/// The element types a reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Floats only (`f2`, `f4`, `f8`): weights.
    Floats,
    /// Floats, integers of 1 to 8 bytes (`u1` … `i8`) and booleans (`b1`): data sets, where
    /// images are often `uint8` and labels `int64`.
    Numbers,
}

/// The integer and boolean element types [`Accept::Numbers`] adds to the floats.
const INTEGER_KINDS: [&str; 9] = ["u1", "i1", "b1", "u2", "i2", "u4", "i4", "u8", "i8"];

/// An array as stored: its element type and its values converted to `f32` (integers above
/// 2^24 lose their last bits).
#[derive(Clone, Debug)]
pub struct TypedArray {
    /// Element type without the byte order: `f4`, `f8`, `f2`, `u1`, `i8`, `b1`, ...
    pub kind: String,
    /// The values.
    pub array: Array,
}

impl TypedArray {
    /// Whether the elements are integers (booleans included).
    pub fn is_integer(&self) -> bool {
        !self.kind.starts_with('f')
    }
}

/// The parsed header of an `.npy` array.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    /// Element type: `f4`, `f8` or `f2`; with [`Accept::Numbers`] also `u1`, `i1`, `b1`, `u2`,
    /// `i2`, `u4`, `i4`, `u8` or `i8`.
    pub kind: String,
    /// Big-endian data.
    pub big_endian: bool,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes before the data.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Bytes per element.
    pub fn item_size(&self) -> usize {
        match self.kind.as_bytes().get(1) {
            Some(b'8') => 8,
            Some(b'2') => 2,
            Some(b'1') => 1,
            _ => 4,
        }
    }

    /// Elements.
    pub fn count(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// Reads the header of a float `.npy` stream (the magic string, version and the Python dict).
pub fn read_header(r: &mut impl Read, name: &str) -> Result<NpyHeader, NpzError> {
    read_header_of(r, name, Accept::Floats)
}

/// [`read_header`] accepting the element types `accept` says.
pub fn read_header_of(
    r: &mut impl Read,
    name: &str,
    accept: Accept,
) -> Result<NpyHeader, NpzError> {
    let bad = |reason: String| NpzError::Array {
        name: name.into(),
        reason,
    };
    let mut pre = [0u8; 10];
    r.read_exact(&mut pre)
        .map_err(|_| bad("shorter than an .npy header".into()))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy array (bad magic)".into()));
    }
    let (len, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            let mut more = [0u8; 2];
            r.read_exact(&mut more)
                .map_err(|_| bad("truncated header".into()))?;
            (
                u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    if len > 1 << 16 {
        return Err(bad(format!("header of {len} bytes is implausible")));
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text)
        .map_err(|_| bad("truncated header".into()))?;
    let text = String::from_utf8_lossy(&text);
    let field = |key: &str| -> Option<String> {
        let at = text.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr").ok_or_else(|| bad("header has no descr".into()))?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad("unreadable descr".into()))?;
    // The byte-order mark is optional and the text is not ASCII when the file is damaged:
    // strip it as a character, never split at a byte offset.
    let (big_endian, kind) = match descr.strip_prefix('>') {
        Some(k) => (true, k),
        None => (false, descr.strip_prefix(['<', '|', '=']).unwrap_or(descr)),
    };
    let float = matches!(kind, "f4" | "f8" | "f2");
    match accept {
        Accept::Floats if !float => {
            return Err(bad(format!(
                "element type {descr:?} is not a float type (f2, f4, f8)"
            )));
        }
        Accept::Numbers if !float && !INTEGER_KINDS.contains(&kind) => {
            return Err(bad(format!(
                "element type {descr:?} is not a number type (floats f2, f4, f8; integers \
                 u1 to i8; b1)"
            )));
        }
        _ => {}
    }
    let fortran =
        field("fortran_order").ok_or_else(|| bad("header has no fortran_order".into()))?;
    if fortran.starts_with("True") {
        return Err(bad("Fortran-ordered arrays are not supported".into()));
    }
    let shape = field("shape").ok_or_else(|| bad("header has no shape".into()))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("unreadable shape".into()))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad(format!("bad dimension {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NpyHeader {
        kind: kind.into(),
        big_endian,
        shape,
        data_offset: start + len,
    })
}

/// Reads the data of an array whose header was read, as `f32`. At most `reserve` bytes are set
/// aside before any data arrives: a header may claim far more data than the stream holds, and
/// memory then grows only with the bytes actually read.
fn read_data(
    r: &mut impl Read,
    h: &NpyHeader,
    name: &str,
    reserve: usize,
) -> Result<Array, NpzError> {
    let bad = |reason: String| NpzError::Array {
        name: name.into(),
        reason,
    };
    let n = h.count().ok_or_else(|| bad("shape overflows".into()))?;
    let len = n
        .checked_mul(h.item_size())
        .ok_or_else(|| bad("shape overflows".into()))?;
    let mut bytes = Vec::with_capacity(len.min(reserve));
    r.take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read its data: {e}")))?;
    if bytes.len() != len {
        return Err(bad("data shorter than its shape says (truncated?)".into()));
    }
    let data = values(&bytes, &h.kind, h.big_endian);
    let shape = if h.shape.is_empty() {
        vec![1]
    } else {
        h.shape.clone()
    };
    Array::new(shape, data).map_err(|e| bad(e.to_string()))
}

/// Converts the little- or big-endian elements of type `kind` in `bytes` to `f32`.
fn values(bytes: &[u8], kind: &str, big: bool) -> Vec<f32> {
    /// The `N` bytes of an element, in little-endian order.
    fn le<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        if big {
            a.reverse();
        }
        a
    }
    macro_rules! each {
        ($n:literal, $t:ty) => {
            bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(le::<$n>(c, big)) as f32)
                .collect()
        };
    }
    match kind {
        "f4" => each!(4, f32),
        "f8" => each!(8, f64),
        "f2" => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes(le::<2>(c, big))))
            .collect(),
        "u1" => bytes.iter().map(|&b| f32::from(b)).collect(),
        "i1" => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
        "b1" => bytes.iter().map(|&b| f32::from(u8::from(b != 0))).collect(),
        "u2" => each!(2, u16),
        "i2" => each!(2, i16),
        "u4" => each!(4, u32),
        "i4" => each!(4, i32),
        "u8" => each!(8, u64),
        "i8" => each!(8, i64),
        // The header reader admits no other kind.
        _ => Vec::new(),
    }
}

/// Reads one float `.npy` file (at most `max_bytes`).
pub fn read_npy(path: &Path, max_bytes: u64) -> Result<Array, NpzError> {
    read_npy_of(path, max_bytes, Accept::Floats).map(|t| t.array)
}

/// Reads one `.npy` file of numbers (images as `uint8`, labels as integers; at most
/// `max_bytes`), with its element type.
pub fn read_npy_typed(path: &Path, max_bytes: u64) -> Result<TypedArray, NpzError> {
    read_npy_of(path, max_bytes, Accept::Numbers)
}

/// One `.npy` file whose element type `accept` admits.
fn read_npy_of(path: &Path, max_bytes: u64, accept: Accept) -> Result<TypedArray, NpzError> {
    let name = path.display().to_string();
    let len = std::fs::metadata(path)?.len();
    if len > max_bytes {
        return Err(NpzError::Array {
            name,
            reason: format!("file is {len} bytes, more than the limit of {max_bytes}"),
        });
    }
    let mut r = BufReader::new(File::open(path)?);
    let h = read_header_of(&mut r, &name, accept)?;
    let expected = h
        .count()
        .and_then(|n| n.checked_mul(h.item_size()))
        .and_then(|n| n.checked_add(h.data_offset));
    if expected != Some(len as usize) {
        return Err(NpzError::Array {
            name,
            reason: format!(
                "the header's shape {:?} needs {} bytes, the file has {len}",
                h.shape,
                expected.map_or("too many".into(), |e| e.to_string())
            ),
        });
    }
    // The size was checked against the file's: reserving it all is safe.
    let array = read_data(&mut r, &h, &name, len as usize)?;
    Ok(TypedArray {
        kind: h.kind.clone(),
        array,
    })
}

/// Reads every array of an `.npz` archive, keyed by entry name without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Array>, NpzError> {
    let file_len = std::fs::metadata(path)?.len();
    read_npz_from(&mut BufReader::new(File::open(path)?), file_len)
}

/// [`read_npz`] for an archive held in memory.
pub fn read_npz_bytes(bytes: &[u8]) -> Result<BTreeMap<String, Array>, NpzError> {
    read_npz_from(&mut Cursor::new(bytes), bytes.len() as u64)
}

/// [`read_npz`] for the `file_len`-byte archive `r`.
pub fn read_npz_from<R: Read + Seek>(
    r: &mut R,
    file_len: u64,
) -> Result<BTreeMap<String, Array>, NpzError> {
    let typed = read_entries(r, file_len, Accept::Floats)?;
    Ok(typed.into_iter().map(|(k, t)| (k, t.array)).collect())
}

/// Reads every array of an `.npz` archive of numbers (a data set: `uint8` images, `int64`
/// labels), with its element type, keyed by entry name without the `.npy` suffix.
pub fn read_npz_typed(path: &Path) -> Result<BTreeMap<String, TypedArray>, NpzError> {
    let file_len = std::fs::metadata(path)?.len();
    read_entries(
        &mut BufReader::new(File::open(path)?),
        file_len,
        Accept::Numbers,
    )
}

/// [`read_npz_typed`] for an archive held in memory.
pub fn read_npz_typed_bytes(bytes: &[u8]) -> Result<BTreeMap<String, TypedArray>, NpzError> {
    read_entries(&mut Cursor::new(bytes), bytes.len() as u64, Accept::Numbers)
}

/// The arrays of the `file_len`-byte archive `r` whose element types `accept` admits.
fn read_entries<R: Read + Seek>(
    r: &mut R,
    file_len: u64,
    accept: Accept,
) -> Result<BTreeMap<String, TypedArray>, NpzError> {
    let entries = zip::read_directory(r, file_len).map_err(|e| zip_err(e, ""))?;
    if entries.is_empty() {
        return Err(NpzError::Zip("the archive is empty".into()));
    }
    let mut out = BTreeMap::new();
    let mut total = 0usize;
    for e in entries {
        if e.name.ends_with('/') {
            continue;
        }
        let key = e.name.strip_suffix(".npy").unwrap_or(&e.name).to_string();
        let bad = |reason: String| NpzError::Array {
            name: key.clone(),
            reason,
        };
        // Never reads past the declared size, whatever the stream says.
        let mut body = zip::open_entry(r, &e, file_len).map_err(|err| zip_err(err, &key))?;
        let h = read_header_of(&mut body, &key, accept)?;
        let expected = h
            .count()
            .and_then(|n| n.checked_mul(h.item_size()))
            .and_then(|n| n.checked_add(h.data_offset));
        if expected != Some(e.size as usize) {
            return Err(bad(format!(
                "the header's shape {:?} does not match the entry's size of {} bytes",
                h.shape, e.size
            )));
        }
        total = total.saturating_add(h.count().unwrap_or(usize::MAX));
        if total > MAX_VALUES {
            return Err(bad(format!(
                "the archive holds more than {MAX_VALUES} values"
            )));
        }
        // A deflated entry's declared size is only a claim until the stream delivers it; the
        // stored bytes (which lie inside the file) are a size worth reserving up front.
        let reserve = usize::try_from(e.compressed).unwrap_or(usize::MAX);
        let array = read_data(&mut body, &h, &key, reserve)?;
        out.insert(
            key,
            TypedArray {
                kind: h.kind.clone(),
                array,
            },
        );
    }
    Ok(out)
}

/// Writes arrays as an `.npz` archive of `float32` entries, compressed (`deflate`) or stored:
/// for tests and for exporting; the inverse of [`read_npz`].
pub fn write_npz(arrays: &[(String, Array)], deflate: bool) -> Vec<u8> {
    let raw: Vec<RawArray> = arrays
        .iter()
        .map(|(name, a)| RawArray {
            name: name.clone(),
            descr: "<f4".into(),
            shape: a.shape().to_vec(),
            data: a.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
        .collect();
    write_npz_raw(&raw, deflate)
}

/// An array to write as it is stored: NumPy's element type and the bytes.
#[derive(Clone, Debug)]
pub struct RawArray {
    /// Entry name, without `.npy`.
    pub name: String,
    /// NumPy's type string, byte order included: `<f4`, `|u1`, `<i8`, ...
    pub descr: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// The elements' bytes, row-major, in `descr`'s byte order.
    pub data: Vec<u8>,
}

/// One array as the bytes of an `.npy` file (format 1.0): what `numpy.save` writes.
pub fn write_npy_raw(a: &RawArray) -> Vec<u8> {
    let shape: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
    let shape = if shape.len() == 1 {
        format!("({},)", shape[0])
    } else {
        format!("({})", shape.join(", "))
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        a.descr
    );
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut npy = Vec::with_capacity(10 + dict.len() + a.data.len());
    npy.extend_from_slice(b"\x93NUMPY\x01\x00");
    npy.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    npy.extend_from_slice(dict.as_bytes());
    npy.extend_from_slice(&a.data);
    npy
}

/// Writes arrays of any element type as an `.npz` archive, compressed (`deflate`) or stored
/// (a data set's `uint8` images and `int64` labels, in tests).
pub fn write_npz_raw(arrays: &[RawArray], deflate: bool) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for a in arrays {
        let name = &a.name;
        let npy = write_npy_raw(a);
        let (method, body) = if deflate {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = enc.write_all(&npy);
            (8u16, enc.finish().unwrap_or_default())
        } else {
            (0u16, npy.clone())
        };
        let crc = zip::crc32(&npy);
        let fname = format!("{name}.npy");
        let offset = out.len() as u32;
        let header = |sig: u32, central_entry: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central_entry {
                h.extend_from_slice(&20u16.to_le_bytes());
            }
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&method.to_le_bytes());
            h.extend_from_slice(&[0; 4]);
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(body.len() as u32).to_le_bytes());
            h.extend_from_slice(&(npy.len() as u32).to_le_bytes());
            h.extend_from_slice(&(fname.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            if central_entry {
                // Comment length, disk, internal and external attributes, then the offset.
                h.extend_from_slice(&[0; 10]);
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(fname.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend_from_slice(&body);
        central.extend(header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
    out.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
