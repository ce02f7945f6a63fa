//! Mutations of valid files: bit flips, byte insertions and deletions, truncations, length
//! fields set to huge values (binary and decimal) and duplicated zip entries. Random offsets
//! rarely land on a length field in a file of 300 kB, so half the field mutations aim at
//! [`hints`]: the offsets where the formats under test keep their sizes.

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

/// One change to a file, with what it takes to repeat it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Inverts bit `bit` of the byte at `at`.
    FlipBit { at: usize, bit: u8 },
    /// Inserts `bytes` before offset `at`.
    Insert { at: usize, bytes: Vec<u8> },
    /// Removes `len` bytes from `at`.
    Delete { at: usize, len: usize },
    /// Keeps the first `len` bytes.
    Truncate { len: usize },
    /// Overwrites `width` bytes at `at` with `value` (its low bytes).
    HugeField {
        at: usize,
        width: usize,
        big_endian: bool,
        value: u64,
    },
    /// Replaces the run of ASCII digits at `at` (`len` digits) with `digits`.
    HugeDigits {
        at: usize,
        len: usize,
        digits: &'static str,
    },
    /// Lists the `index`-th central-directory entry of a zip archive twice.
    DuplicateZipEntry { index: usize },
}

/// Values that break size arithmetic: the type limits, just past them, and powers of two that
/// overflow when multiplied.
const HUGE: [u64; 10] = [
    0,
    0x7F,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
    0x8000_0000_0000_0000,
];

/// The same as decimal text (JSON offsets and shapes, NumPy shapes).
const HUGE_DIGITS: [&str; 7] = [
    "0",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
];

/// Offsets in `data` where a format under test keeps a size, a count or an offset: the first 32
/// bytes (every header here starts there), the fields of zip records, the start of each run of
/// ASCII digits (safetensors' JSON, NumPy headers), the length after a pickle opcode that takes
/// one, PNG chunk lengths and JPEG segment lengths and dimensions.
pub fn hints(data: &[u8]) -> Vec<usize> {
    let mut out: Vec<usize> = (0..data.len().min(32)).collect();
    let at = |i: usize, sig: &[u8]| data.get(i..i + sig.len()) == Some(sig);
    for i in 0..data.len() {
        let fields: &[isize] = if at(i, b"PK\x03\x04") {
            &[18, 22, 26, 28]
        } else if at(i, b"PK\x01\x02") {
            &[20, 24, 28, 30, 32, 42]
        } else if at(i, b"PK\x05\x06") {
            &[8, 10, 12, 16]
        } else if at(i, b"PK\x06\x06") {
            &[24, 32, 40, 48]
        } else if at(i, b"IHDR") || at(i, b"IDAT") {
            // The chunk length precedes the type; IHDR's width and height follow it.
            &[-4, 4, 8]
        } else if data[i] == 0xFF && matches!(data.get(i + 1), Some(0xC0..=0xCF | 0xDA | 0xDB)) {
            &[2, 5, 7]
        } else if matches!(data[i], b'X' | b'B' | 0x95 | b'J' | 0x8A | 0x8C | b'T') {
            // BINUNICODE, BINBYTES, FRAME, BININT, LONG1, SHORT_BINUNICODE, BINSTRING.
            &[1]
        } else {
            &[]
        };
        out.extend(fields.iter().filter_map(|&f| i.checked_add_signed(f)));
        let digit = |k: usize| data.get(k).is_some_and(u8::is_ascii_digit);
        if digit(i) && (i == 0 || !digit(i - 1)) {
            out.push(i);
        }
    }
    out.retain(|&i| i < data.len());
    out.sort_unstable();
    out.dedup();
    out
}

/// Applies one to four random mutations to `data` and returns them.
pub fn mutate(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, hints: &[usize]) -> Vec<Mutation> {
    let mut done = Vec::new();
    loop {
        let m = pick(rng, data, hints);
        apply(data, &m);
        done.push(m);
        if done.len() == 4 || rng.random_bool(0.5) {
            return done;
        }
    }
}

/// Repeats recorded mutations.
pub fn replay(data: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        apply(data, m);
    }
}

/// An offset: a hint half of the time, anywhere otherwise.
fn offset(rng: &mut ChaCha8Rng, len: usize, hints: &[usize]) -> usize {
    let aimed = hints
        .get(rng.random_range(0..hints.len().max(1)))
        .filter(|&&h| h < len);
    match aimed {
        Some(&h) if rng.random_bool(0.5) => h,
        _ => rng.random_range(0..len.max(1)),
    }
}

fn pick(rng: &mut ChaCha8Rng, data: &[u8], hints: &[usize]) -> Mutation {
    let len = data.len();
    if len == 0 {
        return Mutation::Insert {
            at: 0,
            bytes: vec![rng.random()],
        };
    }
    match rng.random_range(0..100) {
        0..30 => Mutation::FlipBit {
            at: rng.random_range(0..len),
            bit: rng.random_range(0..8),
        },
        30..42 => {
            let n = rng.random_range(1..=16);
            // Random bytes, or a copy of bytes from elsewhere in the file (repeated structure).
            let bytes = if rng.random_bool(0.5) {
                (0..n).map(|_| rng.random()).collect()
            } else {
                let from = rng.random_range(0..len);
                data[from..(from + n).min(len)].to_vec()
            };
            Mutation::Insert {
                at: rng.random_range(0..=len),
                bytes,
            }
        }
        42..54 => {
            let at = rng.random_range(0..len);
            Mutation::Delete {
                at,
                len: rng.random_range(1..=16).min(len - at),
            }
        }
        54..62 => Mutation::Truncate {
            len: rng.random_range(0..len),
        },
        62..84 => {
            let width = [1, 2, 4, 8][rng.random_range(0..4)];
            let value = if rng.random_bool(0.8) {
                HUGE[rng.random_range(0..HUGE.len())]
            } else {
                rng.random()
            };
            Mutation::HugeField {
                at: offset(rng, len, hints),
                width,
                big_endian: rng.random_bool(0.5),
                value,
            }
        }
        84..92 => match digit_run(data, number_offset(rng, data, hints)) {
            Some((at, n)) => Mutation::HugeDigits {
                at,
                len: n,
                digits: HUGE_DIGITS[rng.random_range(0..HUGE_DIGITS.len())],
            },
            None => Mutation::FlipBit {
                at: offset(rng, len, hints),
                bit: rng.random_range(0..8),
            },
        },
        _ => match zip_directory(data) {
            Some(entries) if !entries.is_empty() => Mutation::DuplicateZipEntry {
                index: rng.random_range(0..entries.len()),
            },
            _ => Mutation::Truncate {
                len: rng.random_range(0..len),
            },
        },
    }
}

/// Where to look for a decimal number: half of the time the start of a number of one to three
/// digits (counts and sizes in a configuration: blocks, widths, classes), which long offsets
/// would otherwise outnumber a hundred to one; otherwise [`offset`].
fn number_offset(rng: &mut ChaCha8Rng, data: &[u8], hints: &[usize]) -> usize {
    let short: Vec<usize> = hints
        .iter()
        .copied()
        .filter(|&h| {
            // Hints come from the seed; earlier mutations may have shortened the data.
            let n = data
                .get(h..)
                .unwrap_or_default()
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            (1..=3).contains(&n) && (h == 0 || !data[h - 1].is_ascii_digit())
        })
        .collect();
    match short.get(rng.random_range(0..short.len().max(1))) {
        Some(&h) if rng.random_bool(0.5) => h,
        _ => offset(rng, data.len(), hints),
    }
}

/// The run of ASCII digits at or after `from` (within 64 bytes): its start and length.
fn digit_run(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let start = (from..data.len().min(from + 64)).find(|&i| data[i].is_ascii_digit())?;
    let n = data[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    Some((start, n))
}

/// The end-of-central-directory offset and the `(start, end)` of each central-directory entry
/// of a (non-zip64) archive.
fn zip_directory(data: &[u8]) -> Option<Vec<(usize, usize)>> {
    let eocd = (0..data.len().saturating_sub(21))
        .rev()
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))?;
    let u16_at = |i: usize| Some(u16::from_le_bytes([*data.get(i)?, *data.get(i + 1)?]) as usize);
    let u32_at = |i: usize| {
        let b = data.get(i..i + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u16_at(eocd + 10)?;
    let mut at = u32_at(eocd + 16)?;
    let mut entries = Vec::new();
    for _ in 0..count {
        if !data.get(at..)?.starts_with(b"PK\x01\x02") {
            return None;
        }
        let end = at + 46 + u16_at(at + 28)? + u16_at(at + 30)? + u16_at(at + 32)?;
        entries.push((at, end.min(eocd)));
        at = end;
    }
    Some(entries)
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len();
    match *m {
        Mutation::FlipBit { at, bit } => {
            if let Some(b) = data.get_mut(at) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Insert { at, ref bytes } => {
            let at = at.min(len);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete { at, len: n } => {
            let at = at.min(len);
            data.drain(at..(at + n).min(len));
        }
        Mutation::Truncate { len: n } => data.truncate(n),
        Mutation::HugeField {
            at,
            width,
            big_endian,
            value,
        } => {
            let bytes = if big_endian {
                value.to_be_bytes()[8 - width..].to_vec()
            } else {
                value.to_le_bytes()[..width].to_vec()
            };
            for (k, b) in bytes.into_iter().enumerate() {
                if let Some(d) = data.get_mut(at + k) {
                    *d = b;
                }
            }
        }
        Mutation::HugeDigits { at, len: n, digits } => {
            let at = at.min(len);
            data.splice(at..(at + n).min(len), digits.bytes());
        }
        Mutation::DuplicateZipEntry { index } => duplicate_zip_entry(data, index),
    }
}

/// Inserts a copy of central-directory entry `index` after it and updates the end record's
/// counts and directory size, so that the archive lists one name twice.
fn duplicate_zip_entry(data: &mut Vec<u8>, index: usize) {
    let Some(entries) = zip_directory(data) else {
        return;
    };
    let Some(&(start, end)) = entries.get(index) else {
        return;
    };
    let copy = data[start..end].to_vec();
    data.splice(end..end, copy.iter().copied());
    let Some(eocd) = (0..data.len().saturating_sub(21))
        .rev()
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))
    else {
        return;
    };
    let add16 = |d: &mut Vec<u8>, i: usize| {
        let v = u16::from_le_bytes([d[i], d[i + 1]]).wrapping_add(1);
        d[i..i + 2].copy_from_slice(&v.to_le_bytes());
    };
    add16(data, eocd + 8);
    add16(data, eocd + 10);
    let size = u32::from_le_bytes([
        data[eocd + 12],
        data[eocd + 13],
        data[eocd + 14],
        data[eocd + 15],
    ])
    .wrapping_add(copy.len() as u32);
    data[eocd + 12..eocd + 16].copy_from_slice(&size.to_le_bytes());
}
