//! The zip container as the weight readers need it ([`super::npz`] archives and zip-format PyTorch
//! checkpoints, [`super::pth`]): the central directory (zip64 included) and bounded readers for
//! stored or deflate-compressed entries. Nothing is trusted: the directory must lie inside the
//! file, and an entry's reader never yields more than the entry's declared size.

use std::io::{Read, Seek, SeekFrom};

/// Why a zip archive or one of its entries cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The archive's structure is broken or uses a feature this reader does not have.
    #[error("{0}")]
    Format(String),
    /// One entry is broken or of an unsupported kind.
    #[error("zip entry {name:?}: {reason}")]
    Entry {
        /// The entry's name in the archive.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// One entry of the zip central directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    /// Name (path) in the archive.
    pub name: String,
    /// Compression method: 0 stored, 8 deflate.
    pub method: u16,
    /// Bytes the entry takes in the archive.
    pub compressed: u64,
    /// Bytes of the entry once decompressed.
    pub size: u64,
    /// Offset of the entry's local header.
    pub offset: u64,
}

fn format_err(m: impl Into<String>) -> ZipError {
    ZipError::Format(m.into())
}

/// The little-endian `u16` at `i` (the caller checks the bounds).
pub(crate) fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// The little-endian `u32` at `i` (the caller checks the bounds).
pub(crate) fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The little-endian `u64` at `i` (the caller checks the bounds).
pub(crate) fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Reads `len` bytes at `offset`; a short read is a format error (a truncated file).
pub fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> Result<Vec<u8>, ZipError> {
    r.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .map_err(|_| format_err("the file ends inside a zip record (truncated?)"))?;
    Ok(buf)
}

/// Reads the central directory of the `file_len`-byte archive `r`.
pub fn read_directory<R: Read + Seek>(r: &mut R, file_len: u64) -> Result<Vec<ZipEntry>, ZipError> {
    // The end-of-central-directory record is in the last 22 + 65535 bytes.
    let tail_len = file_len.min(22 + 65_535) as usize;
    if tail_len < 22 {
        return Err(format_err("file too short"));
    }
    let tail = read_at(r, file_len - tail_len as u64, tail_len)?;
    let eocd = (0..=tail_len - 22)
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| {
            format_err("no end-of-central-directory record (not a zip file, or truncated)")
        })?;
    let mut count = u16_at(&tail, eocd + 10) as u64;
    let mut cd_size = u32_at(&tail, eocd + 12) as u64;
    let mut cd_offset = u32_at(&tail, eocd + 16) as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // Zip64: a locator just before the record points at the zip64 end record.
        let loc = eocd
            .checked_sub(20)
            .filter(|&l| u32_at(&tail, l) == 0x0706_4b50)
            .ok_or_else(|| format_err("zip64 locator missing"))?;
        let rec_off = u64_at(&tail, loc + 8);
        let rec = read_at(r, rec_off, 56)?;
        if u32_at(&rec, 0) != 0x0606_4b50 {
            return Err(format_err("zip64 end record missing"));
        }
        count = u64_at(&rec, 32);
        cd_size = u64_at(&rec, 40);
        cd_offset = u64_at(&rec, 48);
    }
    if cd_offset.saturating_add(cd_size) > file_len || cd_size > 256 << 20 {
        return Err(format_err("central directory out of bounds"));
    }
    let cd = read_at(r, cd_offset, cd_size as usize)?;
    let mut entries = Vec::new();
    let mut i = 0usize;
    for _ in 0..count {
        if i + 46 > cd.len() || u32_at(&cd, i) != 0x0201_4b50 {
            return Err(format_err("broken central directory"));
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
            return Err(format_err("broken central directory entry"));
        }
        if flags & 1 != 0 {
            return Err(format_err("encrypted entries are not supported"));
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
        entries.push(ZipEntry {
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

/// Positions `r` at the data of `entry` and returns a reader of its decompressed bytes that
/// stops at the declared size, whatever the compressed stream says.
pub fn open_entry<'a, R: Read + Seek>(
    r: &'a mut R,
    entry: &ZipEntry,
    file_len: u64,
) -> Result<Box<dyn Read + 'a>, ZipError> {
    let bad = |reason: &str| ZipError::Entry {
        name: entry.name.clone(),
        reason: reason.into(),
    };
    if entry
        .offset
        .saturating_add(30)
        .saturating_add(entry.compressed)
        > file_len
    {
        return Err(bad("entry lies beyond the end of the file (truncated?)"));
    }
    let local = read_at(r, entry.offset, 30)?;
    if u32_at(&local, 0) != 0x0403_4b50 {
        return Err(bad("local header missing"));
    }
    let skip = 30 + u16_at(&local, 26) as u64 + u16_at(&local, 28) as u64;
    r.seek(SeekFrom::Start(entry.offset + skip))?;
    let raw = r.take(entry.compressed);
    let body: Box<dyn Read + 'a> = match entry.method {
        0 => Box::new(raw),
        8 => Box::new(flate2::read::DeflateDecoder::new(raw)),
        m => {
            return Err(ZipError::Entry {
                name: entry.name.clone(),
                reason: format!("compression method {m} is not supported"),
            });
        }
    };
    Ok(Box::new(body.take(entry.size)))
}

/// CRC-32 (IEEE), as zip stores it.
pub fn crc32(data: &[u8]) -> u32 {
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
