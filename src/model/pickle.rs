//! A small pickle virtual machine for PyTorch state dicts that never runs anything from the file.
//!
//! Python's `pickle` calls whatever function a file names. This machine instead knows a fixed
//! allow-list of globals ([`Global`]) and builds plain data from them: dicts for
//! `collections.OrderedDict`, tensor descriptions ([`TensorRef`]) for `torch._utils`'s rebuild
//! functions, storage descriptions ([`StorageRef`]) for the persistent ids `torch.save` writes.
//! Any other global is an error that names it. Objects live in an arena and refer to each other by
//! index, so shared and even cyclic structures cost nothing special and dropping them never
//! recurses. Every length is checked against the bytes left before anything is allocated, and
//! the stack, the memo and the number of values built are capped.

use std::collections::HashMap;
use std::io::Read;

/// The most bytes one pickle may span (a state dict's pickle is kilobytes to a few megabytes;
/// the tensors' data lives outside it).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// The most values one pickle may build: objects, container slots and memo entries together.
pub const MAX_ITEMS: usize = 1 << 23;

/// The deepest the value stack (with the marks) may grow.
pub const MAX_STACK: usize = 1 << 20;

/// The most dimensions a tensor may have.
pub const MAX_DIMS: usize = 64;

/// Why a pickle cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The file names a Python global outside the allow-list.
    #[error(
        "the file refers to Python global `{0}`, which a state dict never needs; advlens does not run code from files"
    )]
    ForbiddenGlobal(String),
    /// An opcode this machine does not implement (text-protocol or object-building opcodes).
    #[error("pickle opcode {name} (0x{code:02x}) at byte {pos} is not supported")]
    UnsupportedOpcode {
        /// The opcode byte.
        code: u8,
        /// Its name in Python's `pickletools`.
        name: &'static str,
        /// Offset in the pickle.
        pos: u64,
    },
    /// The pickle ends before its STOP opcode.
    #[error("the file ends inside a pickle (truncated?)")]
    Truncated,
    /// The pickle is inconsistent (stack underflow, a string where a tuple belongs, ...).
    #[error("broken pickle at byte {pos}: {reason}")]
    Malformed {
        /// Offset in the pickle.
        pos: u64,
        /// What is wrong.
        reason: String,
    },
    /// The pickle is larger or builds more than this reader allows.
    #[error("the pickle is too large for advlens: {0}")]
    Limit(String),
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Element types of PyTorch storages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `torch.float32` (`FloatStorage`).
    F32,
    /// `torch.float64` (`DoubleStorage`).
    F64,
    /// `torch.float16` (`HalfStorage`).
    F16,
    /// `torch.bfloat16` (`BFloat16Storage`).
    BF16,
    /// `torch.int64` (`LongStorage`).
    I64,
    /// `torch.int32` (`IntStorage`).
    I32,
    /// `torch.int16` (`ShortStorage`).
    I16,
    /// `torch.int8` (`CharStorage`).
    I8,
    /// `torch.uint8` (`ByteStorage`).
    U8,
    /// `torch.bool` (`BoolStorage`).
    Bool,
}

impl Dtype {
    const ALL: [Dtype; 10] = [
        Dtype::F32,
        Dtype::F64,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U8,
        Dtype::Bool,
    ];

    /// Bytes per element.
    pub fn item_size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// Whether the type is a floating-point one.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16)
    }

    /// The storage class's name in module `torch`.
    pub fn storage_name(self) -> &'static str {
        match self {
            Dtype::F32 => "FloatStorage",
            Dtype::F64 => "DoubleStorage",
            Dtype::F16 => "HalfStorage",
            Dtype::BF16 => "BFloat16Storage",
            Dtype::I64 => "LongStorage",
            Dtype::I32 => "IntStorage",
            Dtype::I16 => "ShortStorage",
            Dtype::I8 => "CharStorage",
            Dtype::U8 => "ByteStorage",
            Dtype::Bool => "BoolStorage",
        }
    }
}

/// The Python globals a state dict may name: each is interpreted here, none is ever called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: builds a dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)` (older files).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`: the tensor itself.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`.
    RebuildParameterWithState,
    /// `torch.<Type>Storage`, only meaningful inside a persistent id.
    Storage(Dtype),
    /// `_codecs.encode(text, "latin1")`: how protocol 2 writes Python 3 `bytes`.
    CodecsEncode,
    /// `builtins.set` / `builtins.frozenset`: builds a set (kept as a list of values).
    Set,
}

impl Global {
    /// The allow-list: the global `module.name` stands for, or `None` when it is not allowed.
    pub fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("_codecs", "encode") => Global::CodecsEncode,
            ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
            ("torch", storage) => Global::Storage(
                Dtype::ALL
                    .into_iter()
                    .find(|d| d.storage_name() == storage)?,
            ),
            _ => return None,
        })
    }

    fn describe(self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildTensor => "torch._utils._rebuild_tensor".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::RebuildParameterWithState => {
                "torch._utils._rebuild_parameter_with_state".into()
            }
            Global::Storage(d) => format!("torch.{}", d.storage_name()),
            Global::CodecsEncode => "_codecs.encode".into(),
            Global::Set => "builtins.set".into(),
        }
    }
}

/// Index of an object in a [`Pickle`]'s arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjId(pub(crate) usize);

/// A pickled value: a scalar, an allowed global, or a reference to an object in the arena.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Value {
    /// `None`.
    #[default]
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// An allowed global.
    Global(Global),
    /// A heap object.
    Obj(ObjId),
}

/// A storage as a persistent id describes it: `('storage', torch.<Type>Storage, key, location,
/// numel[, view_metadata])`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    /// Element type.
    pub dtype: Dtype,
    /// Key of the data (a zip entry name under `data/`, or a legacy storage key).
    pub key: String,
    /// Device it was saved from (`cpu`, `cuda:0`); the data is the same.
    pub location: String,
    /// Elements in the whole storage.
    pub numel: u64,
    /// Legacy storage views: `(offset, len)` in elements of the whole storage that this
    /// reference sees.
    pub view: Option<(u64, u64)>,
}

impl StorageRef {
    /// The elements this reference sees: `(first, count)` within the whole storage.
    pub fn window(&self) -> (u64, u64) {
        self.view.unwrap_or((0, self.numel))
    }
}

/// A tensor as its rebuild call describes it (sizes and strides in elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage object (an [`Obj::Storage`]).
    pub storage: ObjId,
    /// First element, relative to the storage reference's window.
    pub offset: u64,
    /// Shape.
    pub size: Vec<u64>,
    /// Strides.
    pub stride: Vec<u64>,
}

/// Objects in the arena.
#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// An integer wider than 64 bits, little-endian two's complement.
    BigInt(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict or OrderedDict: pairs in insertion order; a repeated key appears twice, the last
    /// one wins.
    Dict(Vec<(Value, Value)>),
    /// A set or frozenset.
    Set(Vec<Value>),
    /// A storage reference.
    Storage(StorageRef),
    /// A tensor.
    Tensor(TensorRef),
}

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::Str(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::BigInt(_) => "int",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Set(_) => "set",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
        }
    }
}

/// The result of one pickle: its root value and the objects it refers to.
#[derive(Clone, Debug, Default)]
pub struct Pickle {
    /// The value STOP returned.
    pub root: Value,
    objs: Vec<Obj>,
}

impl Pickle {
    /// The object `v` refers to.
    pub fn obj(&self, v: Value) -> Option<&Obj> {
        match v {
            Value::Obj(ObjId(i)) => self.objs.get(i),
            _ => None,
        }
    }

    /// The object with index `id`.
    pub fn get(&self, id: ObjId) -> Option<&Obj> {
        self.objs.get(id.0)
    }

    /// All objects, in creation order.
    pub fn objects(&self) -> &[Obj] {
        &self.objs
    }

    /// `v` as a string.
    pub fn str(&self, v: Value) -> Option<&str> {
        match self.obj(v) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// `v` as a dict's pairs.
    pub fn dict(&self, v: Value) -> Option<&[(Value, Value)]> {
        match self.obj(v) {
            Some(Obj::Dict(d)) => Some(d),
            _ => None,
        }
    }

    /// `v` as a tuple's or a list's items.
    pub fn seq(&self, v: Value) -> Option<&[Value]> {
        match self.obj(v) {
            Some(Obj::Tuple(t) | Obj::List(t)) => Some(t),
            _ => None,
        }
    }

    /// `v` as a tensor.
    pub fn tensor(&self, v: Value) -> Option<&TensorRef> {
        match self.obj(v) {
            Some(Obj::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// The storage a tensor refers to.
    pub fn storage_of(&self, t: &TensorRef) -> Option<&StorageRef> {
        match self.get(t.storage) {
            Some(Obj::Storage(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether `v` is the integer `n` (however wide it was written).
    pub fn is_int(&self, v: Value, n: i128) -> bool {
        match (v, self.obj(v)) {
            (Value::Int(i), _) => i128::from(i) == n,
            (_, Some(Obj::BigInt(b))) => b.len() <= 16 && sign_extend_i128(b) == n,
            _ => false,
        }
    }

    /// A short name of `v`'s type, for messages.
    pub fn kind(&self, v: Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Global(_) => "global",
            Value::Obj(_) => self.obj(v).map_or("?", Obj::kind),
        }
    }
}

fn sign_extend_i128(b: &[u8]) -> i128 {
    let mut a = if b.last().is_some_and(|&x| x & 0x80 != 0) {
        [0xFFu8; 16]
    } else {
        [0u8; 16]
    };
    a[..b.len()].copy_from_slice(b);
    i128::from_le_bytes(a)
}

/// Python's `pickletools` name of an opcode, for messages.
fn opcode_name(code: u8) -> &'static str {
    match code {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "(unknown)",
    }
}

/// Reads one pickle (up to and including its STOP opcode) from `r`, which holds `available` more
/// bytes. Storages in persistent ids become [`Obj::Storage`]; nothing is read past STOP.
pub fn load(r: &mut impl Read, available: u64) -> Result<Pickle, PickleError> {
    let mut vm = Machine {
        r,
        pos: 0,
        available,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objs: Vec::new(),
        items: 0,
        op_pos: 0,
    };
    let root = vm.run()?;
    Ok(Pickle {
        root,
        objs: vm.objs,
    })
}

struct Machine<'r, R> {
    r: &'r mut R,
    /// Bytes read so far.
    pos: u64,
    /// Bytes the source holds.
    available: u64,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objs: Vec<Obj>,
    /// Values built so far (objects, container slots, memo entries).
    items: usize,
    /// Offset of the opcode being run, for messages.
    op_pos: u64,
}

type Res<T> = Result<T, PickleError>;

impl<R: Read> Machine<'_, R> {
    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            pos: self.op_pos,
            reason: reason.into(),
        }
    }

    /// Checks that `n` more bytes may be read.
    fn reserve(&self, n: u64) -> Res<()> {
        let end = self.pos.checked_add(n).ok_or(PickleError::Truncated)?;
        if end > self.available {
            return Err(PickleError::Truncated);
        }
        if end > MAX_PICKLE_BYTES {
            return Err(PickleError::Limit(format!(
                "it is longer than {MAX_PICKLE_BYTES} bytes"
            )));
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Res<()> {
        self.reserve(buf.len() as u64)?;
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => PickleError::Truncated,
            _ => PickleError::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0u8; N];
        self.fill(&mut a)?;
        Ok(a)
    }

    fn byte(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn bytes(&mut self, n: u64) -> Res<Vec<u8>> {
        self.reserve(n)?;
        let mut v = vec![0u8; n as usize];
        self.fill(&mut v)?;
        Ok(v)
    }

    /// A newline-terminated line (GLOBAL's arguments), at most 1 KiB.
    fn line(&mut self) -> Res<String> {
        let mut v = Vec::new();
        loop {
            let b = self.byte()?;
            if b == b'\n' {
                break;
            }
            if v.len() >= 1024 {
                return Err(self.malformed("a GLOBAL name longer than 1 KiB"));
            }
            v.push(b);
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn count(&mut self, n: usize) -> Res<()> {
        self.items = self.items.saturating_add(n);
        if self.items > MAX_ITEMS {
            return Err(PickleError::Limit(format!(
                "it builds more than {MAX_ITEMS} values"
            )));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> Res<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(PickleError::Limit(format!(
                "its stack grows past {MAX_STACK} values"
            )));
        }
        self.stack.push(v);
        Ok(())
    }

    fn alloc(&mut self, obj: Obj) -> Res<Value> {
        let n = match &obj {
            Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) => v.len(),
            Obj::Dict(d) => 2 * d.len(),
            _ => 0,
        };
        self.count(1 + n)?;
        self.objs.push(obj);
        Ok(Value::Obj(ObjId(self.objs.len() - 1)))
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Res<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("pops an empty stack"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("pops an empty stack"))
    }

    fn top(&self) -> Res<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("reads an empty stack"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("reads an empty stack"))
    }

    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK to pop to"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn str_value(&self, v: Value) -> Option<&str> {
        match v {
            Value::Obj(ObjId(i)) => match self.objs.get(i) {
                Some(Obj::Str(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    fn kind(&self, v: Value) -> &'static str {
        match v {
            Value::Obj(ObjId(i)) => self.objs.get(i).map_or("?", Obj::kind),
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Global(_) => "global",
        }
    }

    /// The container on top of the stack, for APPEND / SETITEM / ADDITEMS.
    fn top_obj_mut(&mut self) -> Res<&mut Obj> {
        let top = self.top()?;
        if let Value::Obj(ObjId(i)) = top
            && i < self.objs.len()
        {
            return Ok(&mut self.objs[i]);
        }
        let what = self.kind(top);
        Err(self.malformed(format!("adds items to a {what}")))
    }

    fn memo_put(&mut self, idx: u32) -> Res<()> {
        let v = self.top()?;
        self.count(1)?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Res<()> {
        let v = *self
            .memo
            .get(&idx)
            .ok_or_else(|| self.malformed(format!("memo entry {idx} was never stored")))?;
        self.push(v)
    }

    fn global(&self, module: &str, name: &str) -> Res<Value> {
        match Global::resolve(module, name) {
            Some(g) => Ok(Value::Global(g)),
            None => Err(PickleError::ForbiddenGlobal(printable(&format!(
                "{module}.{name}"
            )))),
        }
    }

    fn string(&mut self, n: u64) -> Res<()> {
        let b = self.bytes(n)?;
        let v = self.alloc(Obj::Str(String::from_utf8_lossy(&b).into_owned()))?;
        self.push(v)
    }

    fn raw_bytes(&mut self, n: u64) -> Res<()> {
        let b = self.bytes(n)?;
        let v = self.alloc(Obj::Bytes(b))?;
        self.push(v)
    }

    fn long(&mut self, n: u64) -> Res<()> {
        let b = self.bytes(n)?;
        let v = if b.len() <= 8 {
            if b.is_empty() {
                Value::Int(0)
            } else {
                Value::Int(sign_extend_i128(&b) as i64)
            }
        } else {
            self.alloc(Obj::BigInt(b))?
        };
        self.push(v)
    }

    fn len_i32(&mut self) -> Res<u64> {
        let n = i32::from_le_bytes(self.array()?);
        u64::try_from(n).map_err(|_| self.malformed(format!("negative length {n}")))
    }

    /// Runs opcodes until STOP.
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per pickle opcode: the VM reads clearest as one match"
    )]
    fn run(&mut self) -> Res<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.byte()?;
            match op {
                0x80 => {
                    let v = self.byte()?;
                    if v > 5 {
                        return Err(self.malformed(format!("unknown pickle protocol {v}")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint for buffering; the opcodes follow as usual.
                    self.array::<8>()?;
                }
                b'.' => return self.pop(),
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(PickleError::Limit(format!("more than {MAX_STACK} marks")));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    if self.stack.len() > self.floor() {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                b'}' => {
                    let v = self.alloc(Obj::Dict(Vec::new()))?;
                    self.push(v)?;
                }
                b']' => {
                    let v = self.alloc(Obj::List(Vec::new()))?;
                    self.push(v)?;
                }
                b')' => {
                    let v = self.alloc(Obj::Tuple(Vec::new()))?;
                    self.push(v)?;
                }
                0x8f => {
                    let v = self.alloc(Obj::Set(Vec::new()))?;
                    self.push(v)?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let v = self.alloc(Obj::Dict(pairs))?;
                    self.push(v)?;
                }
                b'l' | b't' | 0x91 => {
                    let items = self.pop_mark()?;
                    let obj = match op {
                        b'l' => Obj::List(items),
                        b't' => Obj::Tuple(items),
                        _ => Obj::Set(items),
                    };
                    let v = self.alloc(obj)?;
                    self.push(v)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let v = self.alloc(Obj::Tuple(items))?;
                    self.push(v)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.add_pairs(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.add_pairs(pairs)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.add_items(vec![v], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.add_items(items, false)?;
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    self.add_items(items, true)?;
                }
                b'q' => {
                    let i = self.byte()?;
                    self.memo_put(u32::from(i))?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len())
                        .map_err(|_| PickleError::Limit("memo overflow".into()))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.byte()?;
                    self.memo_get(u32::from(i))?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.global(&module, &name)?;
                    self.push(v)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(m), Some(n)) = (self.str_value(module), self.str_value(name)) else {
                        return Err(self.malformed("STACK_GLOBAL without two strings"));
                    };
                    let v = self.global(m, n)?;
                    self.push(v)?;
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?);
                    self.string(u64::from(n))?;
                }
                0x8c | b'U' => {
                    let n = self.byte()?;
                    self.string(u64::from(n))?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.array()?);
                    self.string(n)?;
                }
                b'T' => {
                    let n = self.len_i32()?;
                    self.string(n)?;
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.array()?);
                    self.raw_bytes(u64::from(n))?;
                }
                b'C' => {
                    let n = self.byte()?;
                    self.raw_bytes(u64::from(n))?;
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(self.array()?);
                    self.raw_bytes(n)?;
                }
                b'J' => {
                    let n = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(n)))?;
                }
                b'K' => {
                    let n = self.byte()?;
                    self.push(Value::Int(i64::from(n)))?;
                }
                b'M' => {
                    let n = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(n)))?;
                }
                0x8a => {
                    let n = self.byte()?;
                    self.long(u64::from(n))?;
                }
                0x8b => {
                    let n = self.len_i32()?;
                    self.long(n)?;
                }
                b'G' => {
                    let x = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(x))?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.call(callable, args)?;
                    self.push(v)?;
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // keyword arguments
                    }
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let obj = match cls {
                        Value::Global(Global::OrderedDict) => Obj::Dict(Vec::new()),
                        Value::Global(Global::Set) => Obj::Set(Vec::new()),
                        Value::Global(g) => {
                            return Err(self.malformed(format!(
                                "NEWOBJ of {}, which is not a class",
                                g.describe()
                            )));
                        }
                        other => {
                            let what = self.kind(other);
                            return Err(self.malformed(format!("NEWOBJ of a {what}")));
                        }
                    };
                    let v = self.alloc(obj)?;
                    self.push(v)?;
                }
                b'b' => {
                    // BUILD sets an object's state; the state of a dict (OrderedDict's
                    // `_metadata`) or a tensor is not needed.
                    self.pop()?;
                    let target = self.top()?;
                    let what = self.kind(target);
                    if !matches!(what, "dict" | "tensor") {
                        return Err(self.malformed(format!("BUILD (set state) on a {what}")));
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)?;
                }
                code => {
                    return Err(PickleError::UnsupportedOpcode {
                        code,
                        name: opcode_name(code),
                        pos: self.op_pos,
                    });
                }
            }
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Res<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("an odd number of dict items"));
        }
        let mut it = items.into_iter();
        let mut out = Vec::with_capacity(it.len() / 2);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn add_pairs(&mut self, pairs: Vec<(Value, Value)>) -> Res<()> {
        self.count(2 * pairs.len())?;
        match self.top_obj_mut()? {
            Obj::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            other => {
                let what = other.kind();
                Err(self.malformed(format!("SETITEM on a {what}")))
            }
        }
    }

    fn add_items(&mut self, items: Vec<Value>, set: bool) -> Res<()> {
        self.count(items.len())?;
        match (self.top_obj_mut()?, set) {
            (Obj::List(l), false) | (Obj::Set(l), true) => {
                l.extend(items);
                Ok(())
            }
            (other, _) => {
                let what = other.kind();
                Err(self.malformed(format!("APPEND / ADDITEMS on a {what}")))
            }
        }
    }

    fn tuple_items(&self, v: Value, what: &str) -> Res<Vec<Value>> {
        match v {
            Value::Obj(ObjId(i)) => match self.objs.get(i) {
                Some(Obj::Tuple(t) | Obj::List(t)) => Ok(t.clone()),
                _ => Err(self.malformed(format!("{what} is a {}, not a tuple", self.kind(v)))),
            },
            _ => Err(self.malformed(format!("{what} is a {}, not a tuple", self.kind(v)))),
        }
    }

    fn uint(&self, v: Value, what: &str) -> Res<u64> {
        match v {
            Value::Int(n) if n >= 0 => Ok(n as u64),
            _ => Err(self.malformed(format!("{what} is not a non-negative integer"))),
        }
    }

    /// Interprets a REDUCE: the callable must be an allowed global.
    fn call(&mut self, callable: Value, args: Value) -> Res<Value> {
        let Value::Global(g) = callable else {
            let what = self.kind(callable);
            return Err(self.malformed(format!("REDUCE calls a {what}")));
        };
        let args = self.tuple_items(args, "the arguments")?;
        let arity = |ok: bool| -> Res<()> {
            if ok {
                Ok(())
            } else {
                Err(self.malformed(format!(
                    "{} called with {} arguments",
                    g.describe(),
                    args.len()
                )))
            }
        };
        match g {
            Global::OrderedDict | Global::Set => {
                arity(args.len() <= 1)?;
                let items = match args.first() {
                    Some(&a) => self.tuple_items(a, "the initial items")?,
                    None => Vec::new(),
                };
                if g == Global::Set {
                    return self.alloc(Obj::Set(items));
                }
                let mut pairs = Vec::with_capacity(items.len());
                for item in items {
                    match self.tuple_items(item, "an OrderedDict item")?.as_slice() {
                        &[k, v] => pairs.push((k, v)),
                        _ => return Err(self.malformed("an OrderedDict item is not a pair")),
                    }
                }
                self.alloc(Obj::Dict(pairs))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                if g == Global::RebuildTensor {
                    arity(args.len() == 4)?;
                } else {
                    arity(args.len() == 6 || args.len() == 7)?;
                }
                self.rebuild_tensor(&args)
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                arity(args.len() == if g == Global::RebuildParameter { 3 } else { 4 })?;
                let data = args[0];
                if self.kind(data) != "tensor" {
                    return Err(self.malformed(format!(
                        "a parameter's data is a {}, not a tensor",
                        self.kind(data)
                    )));
                }
                Ok(data)
            }
            Global::CodecsEncode => {
                arity(args.len() == 2)?;
                let (Some(text), Some(enc)) = (self.str_value(args[0]), self.str_value(args[1]))
                else {
                    return Err(self.malformed("_codecs.encode without two strings"));
                };
                if !matches!(enc, "latin1" | "latin-1" | "iso-8859-1") {
                    return Err(self.malformed(format!("_codecs.encode to {enc:?}")));
                }
                let bytes = text
                    .chars()
                    .map(|c| u8::try_from(u32::from(c)))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| self.malformed("_codecs.encode of a non-latin-1 string"))?;
                self.alloc(Obj::Bytes(bytes))
            }
            Global::Storage(d) => Err(self.malformed(format!(
                "torch.{} is called instead of being named in a persistent id",
                d.storage_name()
            ))),
        }
    }

    fn rebuild_tensor(&mut self, args: &[Value]) -> Res<Value> {
        let storage = match args[0] {
            Value::Obj(id) if matches!(self.objs.get(id.0), Some(Obj::Storage(_))) => id,
            other => {
                let what = self.kind(other);
                return Err(self.malformed(format!("a tensor's storage is a {what}")));
            }
        };
        let offset = self.uint(args[1], "a tensor's storage offset")?;
        let dims = |this: &Self, v: Value, what: &str| -> Res<Vec<u64>> {
            this.tuple_items(v, what)?
                .into_iter()
                .map(|d| this.uint(d, what))
                .collect()
        };
        let size = dims(self, args[2], "a tensor's size")?;
        let stride = dims(self, args[3], "a tensor's stride")?;
        if size.len() != stride.len() || size.len() > MAX_DIMS {
            return Err(self.malformed(format!(
                "a tensor with {} sizes and {} strides",
                size.len(),
                stride.len()
            )));
        }
        self.alloc(Obj::Tensor(TensorRef {
            storage,
            offset,
            size,
            stride,
        }))
    }

    /// `('storage', torch.<Type>Storage, key, location, numel[, view_metadata])`.
    fn persistent_load(&mut self, pid: Value) -> Res<Value> {
        let items = self.tuple_items(pid, "a persistent id")?;
        match items.first().and_then(|&v| self.str_value(v)) {
            Some("storage") => {}
            Some("module") => {
                return Err(self.malformed(
                    "the file embeds a Python module's source (a whole pickled model): \
                     advlens reads state dicts only",
                ));
            }
            _ => return Err(self.malformed("a persistent id that is not a storage")),
        }
        if !(5..=6).contains(&items.len()) {
            return Err(self.malformed(format!(
                "a storage persistent id with {} fields",
                items.len()
            )));
        }
        let Value::Global(Global::Storage(dtype)) = items[1] else {
            return Err(self.malformed("a storage whose type is not a torch storage class"));
        };
        let key = self
            .str_value(items[2])
            .ok_or_else(|| self.malformed("a storage key that is not a string"))?
            .to_string();
        let location = self.str_value(items[3]).unwrap_or("?").to_string();
        let numel = self.uint(items[4], "a storage's size")?;
        let view = match items.get(5) {
            None | Some(Value::None) => None,
            Some(&meta) => {
                // Storage views of very old files: (view key, offset, size) in elements.
                let m = self.tuple_items(meta, "a storage view")?;
                if m.len() != 3 {
                    return Err(self.malformed("a storage view without 3 fields"));
                }
                let offset = self.uint(m[1], "a storage view's offset")?;
                let len = self.uint(m[2], "a storage view's size")?;
                if offset.checked_add(len).is_none_or(|end| end > numel) {
                    return Err(self.malformed(format!(
                        "a view of elements {offset}..+{len} of a {numel}-element storage"
                    )));
                }
                Some((offset, len))
            }
        };
        self.alloc(Obj::Storage(StorageRef {
            dtype,
            key,
            location,
            numel,
            view,
        }))
    }
}

/// `s` cut to 160 characters, with control characters replaced, for messages.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(160)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 160 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Res<Pickle> {
        load(&mut std::io::Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn builds_nested_data_and_shares_memo_objects() {
        // {'a': [1, -2, 3.5, None, True], 'b': <memo 1 again>, 'c': 2**70}
        let mut p = b"\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bh\x01".to_vec();
        p.extend_from_slice(b"X\x01\x00\x00\x00c\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40u.");
        let pk = run(&p).unwrap();
        let d = pk.dict(pk.root).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(pk.str(d[0].0), Some("a"));
        let a = pk.seq(d[0].1).unwrap();
        assert_eq!(
            a,
            &[
                Value::Int(1),
                Value::Int(-2),
                Value::Float(3.5),
                Value::None,
                Value::Bool(true)
            ]
        );
        assert_eq!(d[1].1, d[0].1, "the memo hands back the same object");
        assert!(pk.is_int(d[2].1, 1 << 70));
        assert!(!pk.is_int(d[2].1, 1 << 69));
    }

    #[test]
    fn rejects_globals_outside_the_allow_list() {
        for (p, name) in [
            (&b"\x80\x02cos\nsystem\n."[..], "os.system"),
            (b"\x80\x02cposix\nsystem\n.", "posix.system"),
            (b"\x80\x02ctorch\nload\n.", "torch.load"),
            (
                b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93.",
                "builtins.eval",
            ),
        ] {
            let e = run(p).unwrap_err();
            assert!(
                matches!(&e, PickleError::ForbiddenGlobal(g) if g == name),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("`{name}`")), "{e}");
        }
    }

    #[test]
    fn hostile_streams_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80\x02",
            b"\x80\x02X\xff\xff\xff\xff.", // string longer than the file
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff.", // u64 length
            b"\x80\x02\x8b\xff\xff\xff\xff.", // negative LONG4 length
            b"\x80\x02.",                  // STOP on an empty stack
            b"\x80\x02(.",                 // STOP reads below a mark
            b"\x80\x02h\x05.",             // memo entry never stored
            b"\x80\x02K\x01K\x02s.",       // SETITEM on an int
            b"\x80\x02K\x01)R.",           // REDUCE of an int
            b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.", // OrderedDict(1)
            b"\x80\x02i__main__\nX\n.",    // INST
            b"\x80\x02S'x'\n.",            // text STRING
            b"\x80\x09N.",                 // unknown protocol
            b"\x80\x02\xfe.",              // unknown opcode
        ];
        for c in cases {
            assert!(run(c).is_err(), "{c:?}");
        }
        let e = run(b"\x80\x02i__main__\nX\n.").unwrap_err();
        assert!(e.to_string().contains("INST"), "{e}");
    }

    #[test]
    fn deep_nesting_and_big_stacks_are_bounded() {
        // 2 million nested one-tuples: built iteratively, dropped flat.
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 2_000_000));
        p.push(b'.');
        let pk = run(&p).unwrap();
        assert_eq!(pk.objects().len(), 2_000_001);
        // A stack that keeps growing hits the limit instead of eating memory.
        let mut p = b"\x80\x02N".to_vec();
        p.extend(std::iter::repeat_n(b'2', MAX_STACK + 10));
        assert!(matches!(run(&p), Err(PickleError::Limit(_))));
    }
}
