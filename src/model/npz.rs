//! NumPy `.npy` arrays and `.npz` archives (a zip of `.npy` entries, stored or deflate-compressed,
//! zip64 included) read without trusting the file: every entry's declared size must match the
//! shape in its header before anything is allocated, decompression stops at the declared size,
//! and an archive is read one entry at a time from disk, so peak memory is about the arrays
//! themselves.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::array::Array;

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

/// One entry of the zip central directory.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    method: u16,
    compressed: u64,
    size: u64,
    offset: u64,
}

fn zip_err(m: impl Into<String>) -> NpzError {
    NpzError::Zip(m.into())
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> Result<Vec<u8>, NpzError> {
    r.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .map_err(|_| zip_err("the file ends inside a zip record (truncated?)"))?;
    Ok(buf)
}

/// Reads the central directory.
fn directory<R: Read + Seek>(r: &mut R, file_len: u64) -> Result<Vec<Entry>, NpzError> {
    // The end-of-central-directory record is in the last 22 + 65535 bytes.
    let tail_len = file_len.min(22 + 65_535) as usize;
    if tail_len < 22 {
        return Err(zip_err("file too short"));
    }
    let tail = read_at(r, file_len - tail_len as u64, tail_len)?;
    let eocd = (0..=tail_len - 22)
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| {
            zip_err("no end-of-central-directory record (not a zip file, or truncated)")
        })?;
    let mut count = u16_at(&tail, eocd + 10) as u64;
    let mut cd_size = u32_at(&tail, eocd + 12) as u64;
    let mut cd_offset = u32_at(&tail, eocd + 16) as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // Zip64: a locator just before the record points at the zip64 end record.
        let loc = eocd
            .checked_sub(20)
            .filter(|&l| u32_at(&tail, l) == 0x0706_4b50)
            .ok_or_else(|| zip_err("zip64 locator missing"))?;
        let rec_off = u64_at(&tail, loc + 8);
        let rec = read_at(r, rec_off, 56)?;
        if u32_at(&rec, 0) != 0x0606_4b50 {
            return Err(zip_err("zip64 end record missing"));
        }
        count = u64_at(&rec, 32);
        cd_size = u64_at(&rec, 40);
        cd_offset = u64_at(&rec, 48);
    }
    if cd_offset.saturating_add(cd_size) > file_len || cd_size > 256 << 20 {
        return Err(zip_err("central directory out of bounds"));
    }
    let cd = read_at(r, cd_offset, cd_size as usize)?;
    let mut entries = Vec::new();
    let mut i = 0usize;
    for _ in 0..count {
        if i + 46 > cd.len() || u32_at(&cd, i) != 0x0201_4b50 {
            return Err(zip_err("broken central directory"));
        }
        let flags = u16_at(&cd, i + 8);
        let method = u16_at(&cd, i + 10);
        let mut compressed = u32_at(&cd, i + 20) as u64;
        let mut size = u32_at(&cd, i + 24) as u64;
        let name_len = u16_at(&cd, i + 28) as usize;
        let extra_len = u16_at(&cd, i + 30) as usize;
        let comment_len = u16_at(&cd, i + 32) as usize;
        let mut offset = u32_at(&cd, i + 42) as u64;
        let end = i + 46 + name_len + extra_len + comment_len;
        if end > cd.len() {
            return Err(zip_err("broken central directory entry"));
        }
        if flags & 1 != 0 {
            return Err(zip_err("encrypted entries are not supported"));
        }
        let name = String::from_utf8_lossy(&cd[i + 46..i + 46 + name_len]).into_owned();
        // Zip64 extended information: the 64-bit values, in order, for the fields set to ~0.
        let mut extra = &cd[i + 46 + name_len..i + 46 + name_len + extra_len];
        while extra.len() >= 4 {
            let id = u16_at(extra, 0);
            let len = u16_at(extra, 2) as usize;
            let body = extra.get(4..4 + len).unwrap_or_default();
            if id == 0x0001 {
                let mut k = 0;
                let mut next = |v: &mut u64| {
                    if *v == 0xFFFF_FFFF && k + 8 <= body.len() {
                        *v = u64_at(body, k);
                        k += 8;
                    }
                };
                next(&mut size);
                next(&mut compressed);
                next(&mut offset);
            }
            extra = extra.get(4 + len..).unwrap_or_default();
        }
        entries.push(Entry {
            name,
            method,
            compressed,
            size,
            offset,
        });
        i = end;
    }
    Ok(entries)
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
    let (big_endian, kind) = match descr.split_at(1) {
        ("<" | "|" | "=", k) => (false, k),
        (">", k) => (true, k),
        _ => (false, descr),
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

/// Reads the data of an array whose header was read, as `f32`.
fn read_data(r: &mut impl Read, h: &NpyHeader, name: &str) -> Result<Array, NpzError> {
    let bad = |reason: String| NpzError::Array {
        name: name.into(),
        reason,
    };
    let n = h.count().ok_or_else(|| bad("shape overflows".into()))?;
    let mut bytes = vec![0u8; n * h.item_size()];
    r.read_exact(&mut bytes)
        .map_err(|_| bad("data shorter than its shape says (truncated?)".into()))?;
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

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
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
    read_data(&mut r, &h, &name)
}

/// Reads every array of an `.npz` archive, keyed by entry name without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Array>, NpzError> {
    let file_len = std::fs::metadata(path)?.len();
    let mut r = BufReader::new(File::open(path)?);
    let entries = directory(&mut r, file_len)?;
    if entries.is_empty() {
        return Err(zip_err("the archive is empty"));
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
        if e.offset.saturating_add(30).saturating_add(e.compressed) > file_len {
            return Err(bad(
                "entry lies beyond the end of the file (truncated?)".into()
            ));
        }
        let local = read_at(&mut r, e.offset, 30)?;
        if u32_at(&local, 0) != 0x0403_4b50 {
            return Err(bad("local header missing".into()));
        }
        let skip = 30 + u16_at(&local, 26) as u64 + u16_at(&local, 28) as u64;
        r.seek(SeekFrom::Start(e.offset + skip))?;
        let raw = (&mut r).take(e.compressed);
        let mut body: Box<dyn Read + '_> = match e.method {
            0 => Box::new(raw),
            8 => Box::new(flate2::read::DeflateDecoder::new(raw)),
            m => return Err(bad(format!("compression method {m} is not supported"))),
        };
        // Never read past the declared size, whatever the stream says.
        let mut body = (&mut body).take(e.size);
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
        let a = read_data(&mut body, &h, &key)?;
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
        let crc = crc32(&npy);
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

/// CRC-32 (IEEE), as zip stores it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
