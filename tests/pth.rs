//! PyTorch checkpoints read without running them: small state dicts written by PyTorch itself in
//! both formats (tests/data/pth, made by scripts/pth-fixtures.py) come back with exactly the
//! values the script's formulas define, through storage offsets, strides, shared storages and
//! every float type; integer tensors are skipped; training checkpoints and DataParallel prefixes
//! unwrap; files that name Python globals such as `os.system` are refused with the global's name;
//! truncated, bit-flipped and random files are errors, never panics or huge allocations. When
//! scripts/fetch-models.sh has fetched them, the released EfficientNet-Lite0 and a digit recognizer
//! (zip format) open too.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use advlens::model::pickle::PickleError;
use advlens::model::pth::{PthError, PthFile, PthFormat, read_pth, read_pth_bytes};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pth")
        .join(name)
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// The shared storage's values: v(k) = k / 8 - 1.
fn v(k: usize) -> f32 {
    k as f32 / 8.0 - 1.0
}

/// The state dict scripts/pth-fixtures.py saves, from the formulas in its docstring.
fn expected() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    let grid = |rows: usize, cols: usize, f: &dyn Fn(usize, usize) -> f32| -> Vec<f32> {
        (0..rows)
            .flat_map(|i| (0..cols).map(move |j| (i, j)))
            .map(|(i, j)| f(i, j))
            .collect()
    };
    let mut h16: Vec<f32> = (0..8).map(|k| k as f32 / 4.0 - 1.0).collect();
    h16.extend([65504.0, 2f32.powi(-24), -(2f32.powi(-14))]);
    let mut bf16: Vec<f32> = (0..6).map(|k| k as f32 / 2.0 - 2.0).collect();
    bf16.extend([2f32.powi(100), -(2f32.powi(-100))]);
    vec![
        ("a", vec![3, 4], grid(3, 4, &|i, j| v(4 * i + j))),
        ("a_t", vec![4, 3], grid(4, 3, &|i, j| v(4 * j + i))),
        ("tail", vec![2, 6], grid(2, 6, &|i, j| v(12 + 6 * i + j))),
        (
            "strided",
            vec![2, 3],
            grid(2, 3, &|i, j| v(1 + 12 * i + 2 * j)),
        ),
        (
            "d64",
            vec![5],
            (0..5).map(|k| ((k + 1) as f64 / 3.0) as f32).collect(),
        ),
        ("h16", vec![11], h16),
        ("bf16", vec![8], bf16),
        (
            "p",
            vec![2, 3],
            grid(2, 3, &|i, j| 0.5 - (3 * i + j) as f32 / 4.0),
        ),
        ("s", vec![], vec![2.5]),
        ("empty", vec![0, 3], vec![]),
    ]
}

const SKIPPED: [&str; 3] = ["bn.num_batches_tracked", "idx", "mask"];

fn assert_known_state_dict(f: &PthFile, what: &str) {
    let want = expected();
    assert_eq!(
        f.tensors.len(),
        want.len(),
        "{what}: {:?}",
        f.tensors.keys()
    );
    for (name, shape, values) in want {
        let a = f
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("{what}: {name} missing"));
        assert_eq!(a.shape(), shape.as_slice(), "{what}: {name}");
        // Exact: every value is representable in its source type and in f32.
        assert_eq!(a.data(), values.as_slice(), "{what}: {name}");
    }
    assert_eq!(f.skipped, SKIPPED, "{what}");
}

#[test]
fn both_formats_hold_the_known_state_dict() {
    let zip = read_pth(&fixture("state-zip.pth")).unwrap();
    assert_eq!(zip.format, PthFormat::Zip);
    assert_known_state_dict(&zip, "zip");
    let legacy = read_pth(&fixture("state-legacy.pth")).unwrap();
    assert_eq!(legacy.format, PthFormat::Legacy);
    assert_known_state_dict(&legacy, "legacy");
    // The in-memory entry point reads the same.
    let again = read_pth_bytes(&bytes("state-legacy.pth")).unwrap();
    assert_eq!(again.tensors, legacy.tensors);
}

#[test]
fn training_checkpoints_unwrap_to_their_state_dict() {
    // {'epoch': 3, ..., 'state_dict': {'module.a': ..., ...}} in the zip format.
    let nested = read_pth(&fixture("checkpoint-nested.pth")).unwrap();
    assert_eq!(nested.format, PthFormat::Zip);
    assert_known_state_dict(&nested, "nested, module. prefix");
    // {'model': {...}, 'step': 10**12, 'lr': 1e-3, 'note': b'bytes'} in the legacy format.
    let model = read_pth(&fixture("checkpoint-model-legacy.pth")).unwrap();
    assert_eq!(model.format, PthFormat::Legacy);
    assert_known_state_dict(&model, "model entry");
}

#[test]
fn python_globals_outside_the_allow_list_are_refused_by_name() {
    for (file, global) in [
        ("malicious-legacy.pth", "os.system"),
        ("malicious-zip.pth", "builtins.eval"),
    ] {
        let e = read_pth(&fixture(file)).unwrap_err();
        assert!(
            matches!(&e, PthError::Pickle(PickleError::ForbiddenGlobal(g)) if g == global),
            "{file}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{global}`")), "{msg}");
        assert!(msg.contains("does not run code"), "{msg}");
    }
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let e = read_pth(&fixture("truncated.pth")).unwrap_err();
    assert!(matches!(e, PthError::Truncated(_)), "{e:?}");
    assert!(e.to_string().contains("truncated"), "{e}");
    for name in ["state-legacy.pth", "state-zip.pth"] {
        let full = bytes(name);
        for cut in 0..full.len() {
            assert!(
                read_pth_bytes(&full[..cut]).is_err(),
                "{name} cut to {cut} bytes"
            );
        }
    }
}

#[test]
fn random_bytes_are_not_a_checkpoint() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut garbage = vec![0u8; 4096];
    for b in &mut garbage {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    garbage[0] = b'x';
    let e = read_pth_bytes(&garbage).unwrap_err();
    assert!(matches!(e, PthError::NotPth(_)), "{e:?}");
    assert!(e.to_string().contains("not a PyTorch checkpoint"), "{e}");
    // Garbage behind a pickle or zip signature is an error too.
    for prefix in [&b"\x80\x02"[..], b"PK\x03\x04"] {
        let mut g = garbage.clone();
        g[..prefix.len()].copy_from_slice(prefix);
        assert!(read_pth_bytes(&g).is_err());
    }
    assert!(read_pth_bytes(b"").is_err());
}

#[test]
fn corrupted_size_fields_are_errors() {
    // Legacy: the first storage's element count has bit 40 set.
    let e = read_pth(&fixture("legacy-badsize.pth")).unwrap_err();
    assert!(matches!(e, PthError::Storage { .. }), "{e:?}");
    let msg = e.to_string();
    let said: u64 = msg
        .split("holds ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(said & (1 << 40) != 0 && said < 1 << 41, "{msg}");
    // Zip: the shared storage's entry is 4 bytes longer than 24 floats.
    let e = read_pth(&fixture("zip-badsize.pth")).unwrap_err();
    assert!(
        matches!(&e, PthError::Storage { key, .. } if key == "0"),
        "{e:?}"
    );
    assert!(e.to_string().contains("100 bytes"), "{e}");
}

#[test]
fn flipped_bytes_never_panic() {
    for name in ["state-legacy.pth", "state-zip.pth"] {
        let full = bytes(name);
        for at in 0..full.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut b = full.clone();
                b[at] ^= mask;
                if let Ok(f) = read_pth_bytes(&b) {
                    for a in f.tensors.values() {
                        assert_eq!(a.shape().iter().product::<usize>(), a.len());
                    }
                }
            }
        }
    }
}

/// Builds legacy-format files by hand, for geometry the fixtures cannot express.
mod legacy {
    /// One tensor entry: key, storage class, storage key, storage numel, offset, size, stride.
    #[derive(Clone, Copy)]
    pub struct T<'a> {
        pub name: &'a str,
        pub class: &'a str,
        pub key: &'a str,
        pub numel: i32,
        pub offset: i32,
        pub size: &'a [i32],
        pub stride: &'a [i32],
        /// A storage view of very old files: (offset, size) in elements.
        pub view: Option<(i32, i32)>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn int(out: &mut Vec<u8>, n: i32) {
        out.push(b'J');
        out.extend(n.to_le_bytes());
    }

    fn tuple(out: &mut Vec<u8>, items: &[i32]) {
        out.push(b'(');
        for &n in items {
            int(out, n);
        }
        out.push(b't');
    }

    /// Magic number, protocol version and sys info, as torch writes them.
    pub fn header(little_endian: bool) -> Vec<u8> {
        let mut out = b"\x80\x02\x8a\x0a".to_vec();
        out.extend(&0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10]);
        out.extend(b".\x80\x02M\xe9\x03.\x80\x02}(");
        string(&mut out, "little_endian");
        out.push(if little_endian { 0x88 } else { 0x89 });
        out.extend(b"u.");
        out
    }

    /// The state-dict pickle for `tensors`.
    pub fn object(tensors: &[T]) -> Vec<u8> {
        let mut out = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
        for t in tensors {
            string(&mut out, t.name);
            out.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            string(&mut out, "storage");
            out.extend(format!("ctorch\n{}\n", t.class).as_bytes());
            string(&mut out, t.key);
            string(&mut out, "cpu");
            int(&mut out, t.numel);
            match t.view {
                Some((offset, len)) => {
                    out.push(b'(');
                    string(&mut out, "view");
                    int(&mut out, offset);
                    int(&mut out, len);
                    out.push(b't');
                }
                None => out.push(b'N'),
            }
            out.extend(b"tQ");
            int(&mut out, t.offset);
            tuple(&mut out, t.size);
            tuple(&mut out, t.stride);
            out.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        }
        out.extend(b"u.");
        out
    }

    /// A whole file: header, `object`, the key list and each storage (numel, then data).
    pub fn file(object: &[u8], storages: &[(&str, u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = header(true);
        out.extend(object);
        out.extend(b"\x80\x02(");
        for (key, _, _) in storages {
            string(&mut out, key);
        }
        out.extend(b"l.");
        for (_, numel, data) in storages {
            out.extend(numel.to_le_bytes());
            out.extend(data);
        }
        out
    }

    pub fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values.into_iter().flat_map(f32::to_le_bytes).collect()
    }
}

use legacy::T;

fn one(t: T, storage: (&str, u64, Vec<u8>)) -> Result<PthFile, PthError> {
    read_pth_bytes(&legacy::file(&legacy::object(&[t]), &[storage]))
}

#[test]
fn hand_built_files_check_geometry_before_allocating() {
    let ok = T {
        name: "w",
        class: "FloatStorage",
        key: "k",
        numel: 6,
        offset: 0,
        size: &[2, 3],
        stride: &[1, 2],
        view: None,
    };
    let data = || ("k", 6, legacy::floats((0..6).map(|k| k as f32)));
    // Column-major [2, 3]: w[i][j] = storage[i + 2j].
    let f = one(ok.clone_with(&[2, 3], &[1, 2], 0), data()).unwrap();
    assert_eq!(f.tensors["w"].data(), &[0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
    // Reaching past the storage, by offset or by stride, is an error naming the tensor.
    for (size, stride, offset) in [
        (&[2, 3][..], &[3, 1][..], 1),
        (&[2, 3], &[1, 3], 0),
        (&[7], &[1], 0),
    ] {
        let e = one(ok.clone_with(size, stride, offset), data()).unwrap_err();
        assert!(
            matches!(&e, PthError::Tensor { name, .. } if name == "w"),
            "{size:?} {stride:?} {offset}: {e:?}"
        );
    }
    // A storage view (old files) shifts the tensor and bounds it.
    let view = T {
        view: Some((2, 3)),
        ..ok.clone_with(&[3], &[1], 0)
    };
    assert_eq!(
        one(view, data()).unwrap().tensors["w"].data(),
        &[2.0, 3.0, 4.0]
    );
    let e = one(T { size: &[4], ..view }, data()).unwrap_err();
    assert!(matches!(e, PthError::Tensor { .. }), "{e:?}");
    let e = one(
        T {
            view: Some((4, 3)),
            ..view
        },
        data(),
    )
    .unwrap_err();
    assert!(matches!(e, PthError::Pickle(_)), "{e:?}");
    // Stride 0 may repeat elements, but not into a huge allocation from a tiny file.
    let e = one(
        ok.clone_with(&[1 << 20, 1 << 10], &[0, 0], 0),
        ("k", 6, legacy::floats([0.0; 6])),
    )
    .unwrap_err();
    assert!(matches!(e, PthError::TooLarge(_)), "{e:?}");
    let f = one(ok.clone_with(&[2, 3], &[0, 1], 3), data()).unwrap();
    assert_eq!(f.tensors["w"].data(), &[3.0, 4.0, 5.0, 3.0, 4.0, 5.0]);
    // A storage that claims more elements than the file holds.
    let e = one(
        T {
            numel: 1 << 30,
            ..ok.clone_with(&[2, 3], &[3, 1], 0)
        },
        ("k", 1 << 30, legacy::floats([0.0; 6])),
    )
    .unwrap_err();
    assert!(matches!(e, PthError::Truncated(_)), "{e:?}");
    // A storage whose data is missing, and one listed twice.
    let obj = legacy::object(&[ok.clone_with(&[6], &[1], 0)]);
    assert!(matches!(
        read_pth_bytes(&legacy::file(&obj, &[])),
        Err(PthError::Storage { .. })
    ));
    assert!(matches!(
        read_pth_bytes(&legacy::file(&obj, &[data(), data()])),
        Err(PthError::Storage { .. })
    ));
    // A big-endian file, and a root that is not a dict.
    let mut be = legacy::header(false);
    be.extend(&obj);
    assert!(matches!(read_pth_bytes(&be), Err(PthError::Unsupported(_))));
    let mut list = legacy::header(true);
    list.extend(b"\x80\x02]q\x00.\x80\x02].");
    let e = read_pth_bytes(&list).unwrap_err();
    assert!(matches!(e, PthError::NotStateDict(_)), "{e:?}");
}

#[test]
fn unknown_storage_classes_are_refused() {
    let t = T {
        name: "c",
        class: "ComplexFloatStorage",
        key: "k",
        numel: 1,
        offset: 0,
        size: &[1],
        stride: &[1],
        view: None,
    };
    let e = one(t, ("k", 1, vec![0; 8])).unwrap_err();
    assert!(e.to_string().contains("`torch.ComplexFloatStorage`"), "{e}");
}

impl<'a> T<'a> {
    fn clone_with(&self, size: &'a [i32], stride: &'a [i32], offset: i32) -> T<'a> {
        T {
            size,
            stride,
            offset,
            ..*self
        }
    }
}

#[test]
fn the_released_efficientnet_lite0_checkpoint_opens() {
    let Some(path) = common::efficientnet_lite0() else {
        return;
    };
    let f = read_pth(&path).unwrap();
    assert_eq!(f.format, PthFormat::Legacy);
    assert_eq!(f.tensors.len(), 247);
    assert_eq!(f.skipped.len(), 49);
    assert!(f.skipped.iter().all(|k| k.ends_with("num_batches_tracked")));
    assert_eq!(f.tensors["_conv_stem.weight"].shape(), &[32, 3, 3, 3]);
    assert_eq!(f.tensors["_fc.weight"].shape(), &[1000, 1280]);
    let params: usize = f
        .tensors
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, a)| a.len())
        .sum();
    assert_eq!(params, 4_652_008);
    assert!(f.tensors.values().all(|a| a.all_finite()));
}

#[test]
fn the_digit_recognizer_checkpoint_opens() {
    let Some(path) = common::fetched_file("ADVLENS_DIGIT_PTH", "data/models/handwriting_model.pth")
    else {
        return;
    };
    let f = read_pth(&path).unwrap();
    assert_eq!(f.format, PthFormat::Zip);
    let keys: Vec<&str> = f.tensors.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "conv_layers.0.bias",
            "conv_layers.0.weight",
            "conv_layers.3.bias",
            "conv_layers.3.weight",
            "conv_layers.6.bias",
            "conv_layers.6.weight",
            "fc_layers.0.bias",
            "fc_layers.0.weight",
            "fc_layers.2.bias",
            "fc_layers.2.weight",
        ]
    );
    assert_eq!(f.tensors["conv_layers.0.weight"].shape(), &[32, 1, 3, 3]);
    assert_eq!(f.tensors["fc_layers.0.weight"].shape(), &[256, 1152]);
    // 3×3 convolutions 1→32→64→128, then 1152→256→10.
    let params: usize = f.tensors.values().map(|a| a.len()).sum();
    assert_eq!(params, 320 + 18_496 + 73_856 + 295_168 + 2_570);
    assert!(f.tensors.values().all(|a| a.all_finite()));
}
