//! PyTorch checkpoints (`.pth` / `.pt`) read without running anything from them: both the zip
//! format `torch.save` writes since PyTorch 1.6 and the legacy format before it (a few pickles
//! followed by the raw storages). The pickles go through [`super::pickle`], a small machine that
//! only builds data from an allow-list of globals.
//!
//! Every size in the file is checked against the file before anything is allocated: each
//! storage's byte size must equal its element count times its element size and lie inside the
//! file, each tensor's sizes, strides and offset must stay inside its storage, and the floats all
//! tensors expand to are bounded by the file's size. Storages are read one at a time, so peak
//! memory is about the float tensors themselves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use super::limits::MAX_FILE_BYTES;
use super::pickle::{self, Dtype, Obj, Pickle, PickleError, StorageRef, TensorRef, Value};
use super::zip::{self, ZipEntry, ZipError};
use crate::array::{Array, bf16_to_f32, f16_to_f32};

/// The number a legacy `torch.save` file starts with.
pub const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;

/// The legacy format's protocol version.
pub const LEGACY_PROTOCOL: i128 = 1001;

/// Keys under which training checkpoints keep the model's state dict, in order of preference.
pub const NESTED_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

/// Why a PyTorch checkpoint cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    /// Opening or reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is neither format.
    #[error("not a PyTorch checkpoint: {0}")]
    NotPth(String),
    /// A PyTorch file of a kind advlens does not read.
    #[error("{0}")]
    Unsupported(String),
    /// The pickle is broken or refers to something outside the allow-list.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// The zip structure is broken.
    #[error("broken zip checkpoint: {0}")]
    Zip(ZipError),
    /// The file ends before the data it describes.
    #[error("the file ends early: {0} (truncated?)")]
    Truncated(String),
    /// A storage's size or data does not agree with its description.
    #[error("storage {key:?}: {reason}")]
    Storage {
        /// The storage's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor does not fit its storage.
    #[error("tensor {name:?}: {reason}")]
    Tensor {
        /// The state-dict key.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint holds no state dict.
    #[error("{0}")]
    NotStateDict(String),
    /// The file or what it expands to is larger than advlens allows.
    #[error("{0}")]
    TooLarge(String),
}

impl From<ZipError> for PthError {
    fn from(e: ZipError) -> Self {
        match e {
            ZipError::Io(e) => PthError::Io(e),
            other => PthError::Zip(other),
        }
    }
}

/// The two container formats of `torch.save`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PthFormat {
    /// Before PyTorch 1.6 (or `_use_new_zipfile_serialization=False`): pickles, then storages.
    Legacy,
    /// A zip archive with `data.pkl` and one entry per storage.
    Zip,
}

/// The tensors of a checkpoint's state dict.
#[derive(Clone, Debug)]
pub struct PthFile {
    /// The container format.
    pub format: PthFormat,
    /// Floating-point tensors (f32, f64, f16, bf16 → f32) by key, in the checkpoint's layout
    /// (row-major, shape as in torch), with a common `module.` prefix (DataParallel) removed.
    pub tensors: BTreeMap<String, Array>,
    /// Keys of the entries that were left out: integer and bool tensors (such as
    /// `num_batches_tracked`) and values that are not tensors.
    pub skipped: Vec<String>,
}

/// Reads a checkpoint file (at most [`MAX_FILE_BYTES`]).
pub fn read_pth(path: &Path) -> Result<PthFile, PthError> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FILE_BYTES {
        return Err(PthError::TooLarge(format!(
            "the file is {len} bytes, more than the limit of {MAX_FILE_BYTES}"
        )));
    }
    read_from(&mut BufReader::new(File::open(path)?), len)
}

/// Reads a checkpoint held in memory.
pub fn read_pth_bytes(bytes: &[u8]) -> Result<PthFile, PthError> {
    read_from(&mut Cursor::new(bytes), bytes.len() as u64)
}

/// Reads a checkpoint of `len` bytes from `r`, telling the formats apart by their first bytes.
pub fn read_from<R: Read + Seek>(r: &mut R, len: u64) -> Result<PthFile, PthError> {
    let mut head = vec![0u8; len.min(512) as usize];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut head)?;
    r.seek(SeekFrom::Start(0))?;
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        read_zip(r, len)
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        read_legacy(r, len)
    } else if head.get(257..262) == Some(b"ustar") {
        Err(PthError::Unsupported(
            "this is the tar-based checkpoint format of PyTorch 0.1, which advlens does not read"
                .into(),
        ))
    } else {
        Err(PthError::NotPth(format!(
            "the {len}-byte file starts with neither a zip header nor a pickle"
        )))
    }
}

/// One float tensor to produce.
struct Planned {
    name: String,
    tensor: TensorRef,
    storage: StorageRef,
    numel: usize,
}

/// What a pickle's state dict asks for.
struct Plan {
    tensors: Vec<Planned>,
    /// Storage key → indices into `tensors`.
    by_storage: HashMap<String, Vec<usize>>,
    skipped: Vec<String>,
    /// Every storage the pickle names: key → (type, elements).
    storages: BTreeMap<String, (Dtype, u64)>,
}

impl Plan {
    /// Whether any float tensor reads storage `key`.
    fn needs(&self, key: &str) -> bool {
        self.by_storage.contains_key(key)
    }

    /// Produces the float tensors of storage `key` from its `bytes`.
    fn materialize(
        &self,
        key: &str,
        bytes: &[u8],
        out: &mut BTreeMap<String, Array>,
    ) -> Result<(), PthError> {
        let wanted = self.by_storage.get(key).map_or(&[][..], Vec::as_slice);
        for p in wanted.iter().filter_map(|&i| self.tensors.get(i)) {
            let data =
                gather(bytes, &p.storage, &p.tensor, p.numel).ok_or_else(|| PthError::Storage {
                    key: key.into(),
                    reason: format!("holds {} bytes, too few for its tensors", bytes.len()),
                })?;
            let shape = p.tensor.size.iter().map(|&d| d as usize).collect();
            let a = Array::new(shape, data).map_err(|e| PthError::Tensor {
                name: p.name.clone(),
                reason: e.to_string(),
            })?;
            out.insert(p.name.clone(), a);
        }
        Ok(())
    }
}

/// Loads one pickle starting at `r`'s position.
fn load_pickle<R: Read + Seek>(r: &mut R, len: u64) -> Result<Pickle, PthError> {
    let pos = r.stream_position()?;
    Ok(pickle::load(r, len.saturating_sub(pos))?)
}

fn storage_err(key: &str, reason: String) -> PthError {
    PthError::Storage {
        key: key.into(),
        reason,
    }
}

/// Bytes of storage `key`: its element count times its element size.
fn storage_bytes(key: &str, dtype: Dtype, numel: u64) -> Result<u64, PthError> {
    numel
        .checked_mul(dtype.item_size() as u64)
        .ok_or_else(|| storage_err(key, format!("{numel} elements overflow")))
}

fn read_legacy<R: Read + Seek>(r: &mut R, len: u64) -> Result<PthFile, PthError> {
    let magic = load_pickle(r, len)?;
    if !magic.is_int(magic.root, LEGACY_MAGIC) {
        return Err(PthError::NotPth(
            "a pickle, but not one torch.save wrote (no magic number)".into(),
        ));
    }
    let protocol = load_pickle(r, len)?;
    if !protocol.is_int(protocol.root, LEGACY_PROTOCOL) {
        return Err(PthError::Unsupported(format!(
            "legacy checkpoint protocol {:?}; advlens reads protocol {LEGACY_PROTOCOL}",
            protocol.root
        )));
    }
    let sys_info = load_pickle(r, len)?;
    let little = sys_info.dict(sys_info.root).and_then(|d| {
        d.iter()
            .rev()
            .find(|(k, _)| sys_info.str(*k) == Some("little_endian"))
            .map(|&(_, v)| v)
    });
    if little == Some(Value::Bool(false)) {
        return Err(PthError::Unsupported(
            "a checkpoint saved on a big-endian machine".into(),
        ));
    }
    let object = load_pickle(r, len)?;
    let plan = plan(&object, len)?;
    let key_list = load_pickle(r, len)?;
    let keys: Vec<&str> = key_list
        .seq(key_list.root)
        .and_then(|s| s.iter().map(|&k| key_list.str(k)).collect())
        .ok_or_else(|| PthError::NotPth("the storage key list is not a list of strings".into()))?;

    // Check the layout of the storage section against the file before reading any of it.
    let mut listed = BTreeSet::new();
    let mut total = 0u64;
    for &key in &keys {
        if !listed.insert(key) {
            return Err(storage_err(key, "is listed twice".into()));
        }
        let &(dtype, numel) = plan
            .storages
            .get(key)
            .ok_or_else(|| storage_err(key, "has data but no tensor refers to it".into()))?;
        total = total
            .saturating_add(8)
            .saturating_add(storage_bytes(key, dtype, numel)?);
    }
    if let Some(key) = plan.storages.keys().find(|k| !listed.contains(k.as_str())) {
        return Err(storage_err(
            key,
            "is referred to but its data is not in the file".into(),
        ));
    }
    let start = r.stream_position()?;
    if total > len.saturating_sub(start) {
        return Err(PthError::Truncated(format!(
            "the storages need {total} bytes after byte {start}, the file has {} more",
            len.saturating_sub(start)
        )));
    }

    let mut tensors = BTreeMap::new();
    for key in keys {
        let (dtype, numel) = plan
            .storages
            .get(key)
            .copied()
            .ok_or_else(|| storage_err(key, "is not described".into()))?;
        let mut header = [0u8; 8];
        r.read_exact(&mut header)
            .map_err(|e| eof_as_truncated(e, "a storage header"))?;
        let count = u64::from_le_bytes(header);
        if count != numel {
            return Err(storage_err(
                key,
                format!(
                    "the file says it holds {count} elements, its description says {numel} \
                     (a corrupted size field?)"
                ),
            ));
        }
        let nbytes = storage_bytes(key, dtype, numel)?;
        if plan.needs(key) {
            let mut data = vec![0u8; nbytes as usize];
            r.read_exact(&mut data)
                .map_err(|e| eof_as_truncated(e, "a storage"))?;
            plan.materialize(key, &data, &mut tensors)?;
        } else {
            let skip = i64::try_from(nbytes)
                .map_err(|_| storage_err(key, format!("{nbytes} bytes overflow")))?;
            r.seek(SeekFrom::Current(skip))?;
        }
    }
    Ok(PthFile {
        format: PthFormat::Legacy,
        tensors,
        skipped: plan.skipped,
    })
}

fn eof_as_truncated(e: std::io::Error, what: &str) -> PthError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        PthError::Truncated(format!("inside {what}"))
    } else {
        PthError::Io(e)
    }
}

/// Reads a whole zip entry of at most `max` bytes.
fn read_entry<R: Read + Seek>(
    r: &mut R,
    entry: &ZipEntry,
    len: u64,
    max: u64,
) -> Result<Vec<u8>, PthError> {
    if entry.size > max {
        return Err(PthError::TooLarge(format!(
            "zip entry {:?} holds {} bytes, more than the limit of {max}",
            entry.name, entry.size
        )));
    }
    if entry.method != 0 || entry.compressed != entry.size {
        return Err(PthError::Unsupported(format!(
            "zip entry {:?} is compressed; torch.save stores its entries uncompressed",
            entry.name
        )));
    }
    let mut body = zip::open_entry(r, entry, len)?;
    let mut data = Vec::with_capacity(entry.size as usize);
    body.read_to_end(&mut data)?;
    if data.len() as u64 != entry.size {
        return Err(PthError::Truncated(format!(
            "inside zip entry {:?}",
            entry.name
        )));
    }
    Ok(data)
}

fn read_zip<R: Read + Seek>(r: &mut R, len: u64) -> Result<PthFile, PthError> {
    let entries = zip::read_directory(r, len)?;
    let by_name: HashMap<&str, &ZipEntry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let pickles: Vec<&ZipEntry> = entries
        .iter()
        .filter(|e| {
            e.name == "data.pkl"
                || (e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1)
        })
        .collect();
    let pkl = match pickles.as_slice() {
        [one] => *one,
        [] if entries.iter().any(|e| e.name.ends_with("constants.pkl")) => {
            return Err(PthError::Unsupported(
                "a TorchScript archive (torch.jit.save); advlens reads state dicts saved with \
                 torch.save"
                    .into(),
            ));
        }
        [] => {
            return Err(PthError::NotPth(
                "a zip archive without data.pkl (not written by torch.save)".into(),
            ));
        }
        _ => {
            return Err(PthError::NotPth(
                "a zip archive with several data.pkl".into(),
            ));
        }
    };
    let root = &pkl.name[..pkl.name.len() - "data.pkl".len()];
    if let Some(e) = by_name.get(format!("{root}byteorder").as_str()) {
        let order = read_entry(r, e, len, 64)?;
        if order.trim_ascii() != b"little" {
            return Err(PthError::Unsupported(format!(
                "a checkpoint with byte order {:?}; advlens reads little-endian ones",
                String::from_utf8_lossy(&order)
            )));
        }
    }
    let data = read_entry(r, pkl, len, pickle::MAX_PICKLE_BYTES)?;
    let object = pickle::load(&mut Cursor::new(&data), data.len() as u64)?;
    let plan = plan(&object, len)?;

    // Every storage entry must exist and have exactly the size its description gives.
    let mut storage_entries = HashMap::new();
    for (key, &(dtype, numel)) in &plan.storages {
        let name = format!("{root}data/{key}");
        let e = by_name
            .get(name.as_str())
            .ok_or_else(|| storage_err(key, format!("its data ({name}) is not in the archive")))?;
        let nbytes = storage_bytes(key, dtype, numel)?;
        if e.size != nbytes {
            return Err(storage_err(
                key,
                format!(
                    "entry {name} holds {} bytes, but {numel} elements of torch.{} take \
                     {nbytes}",
                    e.size,
                    dtype.storage_name()
                ),
            ));
        }
        storage_entries.insert(key.as_str(), *e);
    }
    let mut tensors = BTreeMap::new();
    for (key, e) in storage_entries {
        if plan.needs(key) {
            let bytes = read_entry(r, e, len, u64::MAX)?;
            plan.materialize(key, &bytes, &mut tensors)?;
        }
    }
    Ok(PthFile {
        format: PthFormat::Zip,
        tensors,
        skipped: plan.skipped,
    })
}

/// The dict holding the tensors: the root, or its `state_dict` / `model_state_dict` / `model`
/// entry when that is a dict.
fn select_state_dict(p: &Pickle) -> Result<&[(Value, Value)], PthError> {
    let Some(top) = p.dict(p.root) else {
        return Err(PthError::NotStateDict(format!(
            "the checkpoint holds a {}, not a dict of tensors",
            p.kind(p.root)
        )));
    };
    for wanted in NESTED_KEYS {
        if let Some(d) = top
            .iter()
            .rev()
            .find(|(k, _)| p.str(*k) == Some(wanted))
            .and_then(|&(_, v)| p.dict(v))
        {
            return Ok(d);
        }
    }
    Ok(top)
}

/// Works out which tensors the state dict holds and checks each against its storage.
fn plan(p: &Pickle, file_len: u64) -> Result<Plan, PthError> {
    let mut storages: BTreeMap<String, (Dtype, u64)> = BTreeMap::new();
    for obj in p.objects() {
        if let Obj::Storage(s) = obj {
            let seen = storages.entry(s.key.clone()).or_insert((s.dtype, s.numel));
            if *seen != (s.dtype, s.numel) {
                return Err(storage_err(
                    &s.key,
                    "is described twice with different types or sizes".into(),
                ));
            }
        }
    }

    let dict = select_state_dict(p)?;
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    for &(k, v) in dict {
        let key = p.str(k).ok_or_else(|| {
            PthError::NotStateDict(format!("a state dict key is a {}, not a string", p.kind(k)))
        })?;
        entries.insert(key.to_string(), v);
    }
    if !entries.values().any(|&v| p.tensor(v).is_some()) {
        let keys: Vec<&str> = entries.keys().take(8).map(String::as_str).collect();
        return Err(PthError::NotStateDict(format!(
            "the checkpoint holds no tensors where a state dict belongs (keys: {keys:?})"
        )));
    }
    let strip = entries.keys().all(|k| k.starts_with("module."));

    let mut tensors = Vec::new();
    let mut skipped = Vec::new();
    let mut total = 0u64;
    for (key, v) in entries {
        let name = match key.strip_prefix("module.") {
            Some(rest) if strip => rest.to_string(),
            _ => key,
        };
        let Some(t) = p.tensor(v) else {
            skipped.push(name);
            continue;
        };
        let storage = p.storage_of(t).ok_or_else(|| PthError::Tensor {
            name: name.clone(),
            reason: "has no storage".into(),
        })?;
        let numel = extent(t, storage).map_err(|reason| PthError::Tensor {
            name: name.clone(),
            reason,
        })?;
        if !storage.dtype.is_float() {
            skipped.push(name);
            continue;
        }
        total = total.saturating_add(numel as u64);
        tensors.push(Planned {
            name,
            tensor: t.clone(),
            storage: storage.clone(),
            numel,
        });
    }
    // Views may repeat storage elements (expanded or overlapping tensors); they may not turn a
    // small file into a huge allocation.
    let budget = file_len.saturating_mul(2).saturating_add(1 << 20);
    if total > budget {
        return Err(PthError::TooLarge(format!(
            "its tensors expand to {total} values, more than twice the file's {file_len} bytes"
        )));
    }
    let mut by_storage: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, t) in tensors.iter().enumerate() {
        by_storage.entry(t.storage.key.clone()).or_default().push(i);
    }
    Ok(Plan {
        tensors,
        by_storage,
        skipped,
        storages,
    })
}

/// Checks that tensor `t` lies inside the window of `s` and returns its element count.
fn extent(t: &TensorRef, s: &StorageRef) -> Result<usize, String> {
    let (_, window) = s.window();
    let overflow = || "its size overflows".to_string();
    let n = t
        .size
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(overflow)?;
    let numel = usize::try_from(n).map_err(|_| overflow())?;
    if n == 0 {
        if t.offset > window {
            return Err(format!(
                "its offset {} is past the end of its {window}-element storage",
                t.offset
            ));
        }
        return Ok(0);
    }
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            a.checked_add((d - 1).checked_mul(s)?)
        })
        .ok_or_else(overflow)?;
    if last >= window {
        return Err(format!(
            "shape {:?}, strides {:?} and offset {} reach element {last} of a {window}-element \
             storage",
            t.size, t.stride, t.offset
        ));
    }
    Ok(numel)
}

/// Element `i` of a storage of `dtype` as f32 (the caller checks the bounds).
fn decode(bytes: &[u8], dtype: Dtype, i: usize) -> f32 {
    match dtype {
        Dtype::F32 => {
            let b = &bytes[4 * i..4 * i + 4];
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
        Dtype::F64 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[8 * i..8 * i + 8]);
            f64::from_le_bytes(a) as f32
        }
        Dtype::F16 => f16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
        Dtype::BF16 => bf16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
        _ => 0.0,
    }
}

/// Copies tensor `t` out of the storage bytes `bytes` in row-major order, or `None` when the
/// bytes are too few for `s`'s window (which [`extent`] has checked `t` against).
fn gather(bytes: &[u8], s: &StorageRef, t: &TensorRef, numel: usize) -> Option<Vec<f32>> {
    let (first, window) = s.window();
    let end = first
        .checked_add(window)?
        .checked_mul(s.dtype.item_size() as u64)?;
    if (bytes.len() as u64) < end {
        return None;
    }
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return Some(out);
    }
    let base = (first + t.offset) as usize;
    let Some((&inner_n, outer)) = t.size.split_last() else {
        out.push(decode(bytes, s.dtype, base));
        return Some(out);
    };
    let inner_s = t.stride[outer.len()] as usize;
    let mut idx = vec![0u64; outer.len()];
    let mut row = base;
    loop {
        for j in 0..inner_n as usize {
            out.push(decode(bytes, s.dtype, row + j * inner_s));
        }
        // Advance the outer indices like an odometer.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return Some(out);
            }
            d -= 1;
            idx[d] += 1;
            row += t.stride[d] as usize;
            if idx[d] < outer[d] {
                break;
            }
            row -= (t.stride[d] * outer[d]) as usize;
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_and_bfloat_storages_decode_little_endian() {
        assert_eq!(decode(&[0x00, 0x3c, 0x00, 0xc0], Dtype::F16, 1), -2.0);
        let b = 1.5f32.to_bits();
        let bytes = ((b >> 16) as u16).to_le_bytes();
        assert_eq!(decode(&bytes, Dtype::BF16, 0), 1.5);
    }

    #[test]
    fn gather_follows_strides_and_offsets() {
        let storage = StorageRef {
            dtype: Dtype::F32,
            key: "0".into(),
            location: "cpu".into(),
            numel: 12,
            view: Some((2, 10)),
        };
        let bytes: Vec<u8> = (0..12).flat_map(|k| (k as f32).to_le_bytes()).collect();
        // A [2, 3] tensor with strides (1, 2) at offset 1 of the view starting at element 2.
        let t = TensorRef {
            storage: pickle::ObjId(0),
            offset: 1,
            size: vec![2, 3],
            stride: vec![1, 2],
        };
        assert_eq!(extent(&t, &storage), Ok(6));
        let got = gather(&bytes, &storage, &t, 6).unwrap();
        assert_eq!(got, vec![3.0, 5.0, 7.0, 4.0, 6.0, 8.0]);
        let far = TensorRef {
            size: vec![2, 5],
            ..t.clone()
        };
        assert!(extent(&far, &storage).is_err());
    }
}
