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

/// The parsed header of an `.npy` array.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    /// Element type: `f4`, `f8` or `f2`.
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
        match self.kind.as_str() {
            "f8" => 8,
            "f2" => 2,
            _ => 4,
        }
    }

    /// Elements.
    pub fn count(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// Reads the header of an `.npy` stream (the magic string, version and the Python dict).
pub fn read_header(r: &mut impl Read, name: &str) -> Result<NpyHeader, NpzError> {
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
    if !matches!(kind, "f4" | "f8" | "f2") {
        return Err(bad(format!(
            "element type {descr:?} is not a float type (f2, f4, f8)"
        )));
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
    let data: Vec<f32> = match (h.kind.as_str(), h.big_endian) {
        ("f4", false) => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        ("f4", true) => bytes
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        ("f8", big) => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                (if big {
                    f64::from_be_bytes(a)
                } else {
                    f64::from_le_bytes(a)
                }) as f32
            })
            .collect(),
        (_, big) => bytes
            .chunks_exact(2)
            .map(|c| {
                let b = if big { [c[1], c[0]] } else { [c[0], c[1]] };
                f16_to_f32(u16::from_le_bytes(b))
            })
            .collect(),
    };
    let shape = if h.shape.is_empty() {
        vec![1]
    } else {
        h.shape.clone()
    };
    Array::new(shape, data).map_err(|e| bad(e.to_string()))
}

/// Reads one `.npy` file (at most `max_bytes`).
pub fn read_npy(path: &Path, max_bytes: u64) -> Result<Array, NpzError> {
    let name = path.display().to_string();
    let len = std::fs::metadata(path)?.len();
    if len > max_bytes {
        return Err(NpzError::Array {
            name,
            reason: format!("file is {len} bytes, more than the limit of {max_bytes}"),
        });
    }
    let mut r = BufReader::new(File::open(path)?);
    let h = read_header(&mut r, &name)?;
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
    read_data(&mut r, &h, &name, len as usize)
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
        let h = read_header(&mut body, &key)?;
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
        let a = read_data(&mut body, &h, &key, reserve)?;
        out.insert(key, a);
    }
    Ok(out)
}

/// Writes arrays as an `.npz` archive, compressed (`deflate`) or stored: for tests and for
/// exporting; the inverse of [`read_npz`].
pub fn write_npz(arrays: &[(String, Array)], deflate: bool) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, a) in arrays {
        let mut npy = Vec::new();
        let shape: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
        let shape = if shape.len() == 1 {
            format!("({},)", shape[0])
        } else {
            format!("({})", shape.join(", "))
        };
        let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while !(10 + dict.len() + 1).is_multiple_of(64) {
            dict.push(' ');
        }
        dict.push('\n');
        npy.extend_from_slice(b"\x93NUMPY\x01\x00");
        npy.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        npy.extend_from_slice(dict.as_bytes());
        for v in a.data() {
            npy.extend_from_slice(&v.to_le_bytes());
        }
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
