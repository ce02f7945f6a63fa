//! Xie et al.'s tensorpack `.npz` models: the zip/npy reader against files with known contents
//! and against broken ones, architecture recognition from the key set for the released layouts
//! (checked against the reference's array counts), and a depth-50 denoise model written in the
//! released format that loads and computes exactly what the same weights compute when built
//! directly.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use advlens::array::Array;
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Engine, ForwardOptions};
use advlens::model::npz::{read_npy, read_npz, write_npz};
use advlens::model::tensorpack::recognise;
use advlens::model::{
    ArchConfig, DenoiseVariant, Network, Padding, Placement, ResnetDenoiseConfig,
};
use advlens::model::{BlockKind, StemKind};

fn released(
    blocks: [usize; 4],
    placement: Placement,
    variant: DenoiseVariant,
    x101: bool,
) -> ResnetDenoiseConfig {
    ResnetDenoiseConfig {
        in_channels: 3,
        image_size: [224, 224],
        num_classes: 1000,
        stem_width: 64,
        widths: vec![64, 128, 256, 512],
        blocks: blocks.to_vec(),
        denoise: variant,
        placement,
        denoise_stages: None,
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
        block: BlockKind::Bottleneck,
        stem: StemKind::Imagenet,
        cardinality: if x101 { 32 } else { 1 },
        bottleneck_factor: if x101 { 4 } else { 1 },
        channel_order: vec![2, 1, 0],
        eval_resize: Some(256),
    }
}

fn r152() -> ResnetDenoiseConfig {
    released(
        [3, 8, 36, 3],
        Placement::None,
        DenoiseVariant::NonlocalGaussian,
        false,
    )
}
fn r152_denoise() -> ResnetDenoiseConfig {
    released(
        [3, 8, 36, 3],
        Placement::AfterStage,
        DenoiseVariant::NonlocalGaussian,
        false,
    )
}
fn x101_denoise_all() -> ResnetDenoiseConfig {
    released(
        [3, 4, 23, 3],
        Placement::AfterEveryBlock,
        DenoiseVariant::DotProduct,
        true,
    )
}

/// The shape a parameter has in a tensorpack file: kernels HWIO, the classifier `[in, out]`.
fn tensorpack_shape(name: &str, shape: &[usize]) -> Vec<usize> {
    match shape {
        &[o, i, kh, kw] => vec![kh, kw, i, o],
        &[o, i] if name == "linear/W" => vec![i, o],
        s => s.to_vec(),
    }
}

#[test]
fn released_layouts_have_the_reference_array_counts() {
    // (arrays, floats including the BN statistics), from the reference's enumeration.
    for (cfg, arrays, floats) in [
        (r152(), 777, 60_344_232usize),
        (r152_denoise(), 805, 71_500_712),
        (x101_denoise_all(), 687, 127_069_608),
    ] {
        let g = cfg.build().unwrap();
        let total: usize = g
            .params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        assert_eq!((g.params.len(), total), (arrays, floats), "{cfg:?}");
    }
    // The library's named layouts are these configurations.
    let named = advlens::model::tensorpack::released;
    assert_eq!(named("r152").unwrap(), r152());
    assert_eq!(named("r152-denoise").unwrap(), r152_denoise());
    assert_eq!(named("x101-denoise-all").unwrap(), x101_denoise_all());
    let x = x101_denoise_all().build().unwrap();
    let w = &x
        .params
        .iter()
        .find(|p| p.name == "group0/block0/conv2/W")
        .unwrap()
        .shape;
    assert_eq!(w, &vec![256, 8, 3, 3], "32 groups of 8 channels");
    assert_eq!(x.denoise_blocks.len(), 33);
    assert_eq!(x.denoise_blocks[0].name, "group0/block0/non_local");
}

#[test]
fn the_key_set_alone_identifies_each_released_model() {
    for (cfg, name) in [
        (r152(), "ResNet-152 (Xie"),
        (
            r152_denoise(),
            "ResNet-152 with nonlocal_gaussian denoise blocks after each stage",
        ),
        (
            x101_denoise_all(),
            "ResNeXt-101 32×8d with dot_product denoise blocks after every block",
        ),
    ] {
        let g = cfg.build().unwrap();
        let arrays: BTreeMap<String, Array> = g
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Array::zeros(tensorpack_shape(&p.name, &p.shape)),
                )
            })
            .collect();
        let rec = recognise(&arrays).unwrap();
        assert_eq!(rec.config, cfg);
        assert!(rec.name.starts_with(name), "{}", rec.name);
    }
    let mut not_tp = BTreeMap::new();
    not_tp.insert("fc.weight".to_string(), Array::zeros(vec![2, 2]));
    assert!(
        recognise(&not_tp)
            .unwrap_err()
            .to_string()
            .contains("conv0/W")
    );
}

#[test]
fn tensorflow_same_padding_matches_the_reference_table() {
    let same = Padding::Same;
    assert_eq!(same.resolve(224, 224, [7, 7], 2), [2, 3, 2, 3]);
    assert_eq!(same.output_size(224, 224, [7, 7], 2), Some([112, 112]));
    assert_eq!(same.resolve(112, 112, [3, 3], 2), [0, 1, 0, 1]);
    assert_eq!(same.resolve(56, 56, [3, 3], 2), [0, 1, 0, 1]);
    assert_eq!(same.resolve(56, 56, [1, 1], 2), [0, 0, 0, 0]);
    assert_eq!(same.resolve(28, 28, [3, 3], 1), [1, 1, 1, 1]);
    // Odd sizes: 225 with 7×7/2 gives 113 outputs and 6 pixels of padding, 3 on each side; 15
    // with 3×3/2 gives 8 outputs and 2 pixels, 1 and 1.
    assert_eq!(same.resolve(225, 225, [7, 7], 2), [3, 3, 3, 3]);
    assert_eq!(same.output_size(15, 15, [3, 3], 2), Some([8, 8]));
    assert_eq!(same.resolve(15, 14, [3, 3], 2), [1, 1, 0, 1]);
}

fn tensorpack_arrays(net: &Network) -> Vec<(String, Array)> {
    net.weights
        .iter()
        .enumerate()
        .map(|(i, (name, a))| {
            let out = match *a.shape() {
                [o, ci, kh, kw] => {
                    let mut v = vec![0f32; a.len()];
                    for oo in 0..o {
                        for c in 0..ci {
                            for y in 0..kh {
                                for x in 0..kw {
                                    v[((y * kw + x) * ci + c) * o + oo] =
                                        a.data()[((oo * ci + c) * kh + y) * kw + x];
                                }
                            }
                        }
                    }
                    Array::new(vec![kh, kw, ci, o], v).unwrap()
                }
                [o, ci] if name == "linear/W" => {
                    let mut v = vec![0f32; a.len()];
                    for r in 0..o {
                        for c in 0..ci {
                            v[c * o + r] = a.data()[r * ci + c];
                        }
                    }
                    Array::new(vec![ci, o], v).unwrap()
                }
                _ => a.clone(),
            };
            // Some writers keep TensorFlow's ":0" suffix; the loader must not care.
            let key = if i % 3 == 0 {
                format!("{name}:0")
            } else {
                name.clone()
            };
            (key, out)
        })
        .collect()
}

#[test]
fn a_depth_50_denoise_model_in_the_released_format_loads_and_agrees() {
    let cfg = released(
        [3, 4, 6, 3],
        Placement::AfterStage,
        DenoiseVariant::NonlocalGaussian,
        false,
    );
    let mut net = Network::random(ArchConfig::ResnetDenoise(cfg.clone()), 3).unwrap();
    // Non-zero denoise gammas, so the blocks are not the identity.
    for (name, a) in net.weights.iter_mut() {
        if name.contains("_denoise/conv/bn/gamma") {
            a.data_mut().iter_mut().for_each(|v| *v = 0.5);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("R50-Denoise.npz");
    std::fs::write(&path, write_npz(&tensorpack_arrays(&net), true)).unwrap();
    let loaded = advlens::model::weights::load(&path).unwrap();
    assert_eq!(loaded.config, ArchConfig::ResnetDenoise(cfg));
    assert!(
        loaded.metadata["advlens.recognised"].starts_with("ResNet-50 with nonlocal_gaussian"),
        "{:?}",
        loaded.metadata
    );
    assert_eq!(loaded.class_names[0], "tench");
    for (name, a) in &net.weights {
        assert_eq!(loaded.weights[name].data(), a.data(), "{name}");
    }
    let x = Array::new(
        vec![1, 3, 224, 224],
        (0..3 * 224 * 224)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect(),
    )
    .unwrap();
    let opts = ForwardOptions::default();
    let a = CpuEngine::new(Arc::new(net))
        .unwrap()
        .forward(&x, &opts)
        .unwrap();
    let b = CpuEngine::new(Arc::new(loaded))
        .unwrap()
        .forward(&x, &opts)
        .unwrap();
    assert_eq!(a.logits.data(), b.logits.data());
    assert!(b.logits.all_finite());
}

fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn npy_and_npz_with_known_contents() {
    let dir = tempfile::tempdir().unwrap();
    // float64 big-endian and float32 little-endian are both read as f32.
    let be: Vec<u8> = [1.5f64, -2.0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let p = dir.path().join("be.npy");
    std::fs::write(&p, npy_bytes(">f8", "(2,)", &be)).unwrap();
    assert_eq!(read_npy(&p, 1 << 20).unwrap().data(), &[1.5, -2.0]);
    let le: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let p = dir.path().join("le.npy");
    std::fs::write(&p, npy_bytes("<f4", "(1, 2, 3)", &le)).unwrap();
    let a = read_npy(&p, 1 << 20).unwrap();
    assert_eq!(a.shape(), &[1, 2, 3]);
    assert_eq!(a.data()[5], 5.0);
    // Stored and deflated archives.
    let arrays = vec![
        (
            "a/b/W".to_string(),
            Array::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
        ),
        (
            "c".to_string(),
            Array::new(vec![3], vec![0.5, 0.25, 0.125]).unwrap(),
        ),
    ];
    for deflate in [false, true] {
        let p = dir.path().join(format!("x{deflate}.npz"));
        std::fs::write(&p, write_npz(&arrays, deflate)).unwrap();
        let m = read_npz(&p).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["a/b/W"].shape(), &[2, 2]);
        assert_eq!(m["c"].data(), &[0.5, 0.25, 0.125]);
    }
}

#[test]
fn broken_and_hostile_files_are_errors_not_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let arrays = vec![(
        "w".to_string(),
        Array::new(vec![64], vec![1.0; 64]).unwrap(),
    )];
    let good = write_npz(&arrays, true);
    // Truncated archive.
    let p = dir.path().join("cut.npz");
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    assert!(read_npz(&p).is_err());
    // Not a zip at all.
    let p = dir.path().join("text.npz");
    std::fs::write(&p, b"hello, this is not an archive at all").unwrap();
    assert!(read_npz(&p).unwrap_err().to_string().contains("zip"));
    // A header that declares far more data than the entry holds (a bomb): refused up front.
    let bomb = npy_bytes("<f4", "(100000, 100000)", &[0u8; 16]);
    let mut zip = write_npz(
        &[("x".to_string(), Array::new(vec![1], vec![0.0]).unwrap())],
        false,
    );
    let at = zip.windows(6).position(|w| w == b"\x93NUMPY").unwrap();
    let old_len = npy_bytes("<f4", "(1,)", &[0; 4]).len();
    zip.splice(at..at + old_len, bomb.iter().copied());
    let p = dir.path().join("bomb.npz");
    std::fs::write(&p, &zip).unwrap();
    assert!(read_npz(&p).is_err());
    // A .npy whose shape does not match its size.
    let p = dir.path().join("short.npy");
    std::fs::write(&p, npy_bytes("<f4", "(10,)", &[0u8; 8])).unwrap();
    assert!(
        read_npy(&p, 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("needs")
    );
    // Integer arrays are not weights.
    let p = dir.path().join("int.npy");
    std::fs::write(&p, npy_bytes("<i8", "(1,)", &[0u8; 8])).unwrap();
    assert!(
        read_npy(&p, 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("float")
    );
    // A tensorpack file missing a tensor names it.
    let net = Network::random(
        ArchConfig::ResnetDenoise(released(
            [1, 1, 1, 1],
            Placement::None,
            DenoiseVariant::NonlocalGaussian,
            false,
        )),
        1,
    )
    .unwrap();
    let mut arrays = tensorpack_arrays(&net);
    arrays.retain(|(k, _)| !k.starts_with("group2/block0/conv2/bn/beta"));
    let p = dir.path().join("missing.npz");
    std::fs::write(&p, write_npz(&arrays, false)).unwrap();
    let e = advlens::model::weights::load(&p).unwrap_err().to_string();
    assert!(e.contains("group2/block0/conv2/bn/beta"), "{e}");
}

#[test]
fn a_descr_that_is_empty_or_not_ascii_is_an_error() {
    // Found by tests/fuzz.rs: the byte-order mark was split off at byte 1, which panics inside a
    // multi-byte character or past the end of an empty string.
    let good = write_npz(
        &[("w".to_string(), Array::new(vec![1], vec![1.0]).unwrap())],
        false,
    );
    assert_eq!(
        advlens::model::npz::read_npz_bytes(&good).unwrap()["w"].data(),
        &[1.0]
    );
    for (replacement, shown) in [(&b"'',   "[..], "\"\""), ("'é4',".as_bytes(), "\"é4\"")] {
        let at = good.windows(6).position(|w| w == b"'<f4',").unwrap();
        let mut bad = good.clone();
        bad.splice(at..at + 6, replacement.iter().copied());
        assert_eq!(bad.len(), good.len(), "the entry's sizes still match");
        let e = advlens::model::npz::read_npz_bytes(&bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("element type {shown} is not a float type")),
            "{e}"
        );
    }
}

#[test]
fn eval_resize_scales_the_shorter_side_and_crops_the_centre() {
    use advlens::data::to_array_with;
    // 400×300 RGB: left half red, right half blue, a green band in the middle columns.
    let img = image::RgbImage::from_fn(400, 300, |x, _| {
        if (190..210).contains(&x) {
            image::Rgb([0, 255, 0])
        } else if x < 200 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let a = to_array_with(
        &image::DynamicImage::ImageRgb8(img),
        3,
        [224, 224],
        Some(256),
    )
    .unwrap();
    assert_eq!(a.shape(), &[1, 3, 224, 224]);
    let hw = 224 * 224;
    let px = |c: usize, x: usize| a.data()[c * hw + 112 * 224 + x];
    // 300 → 256 scales by 0.853: the 400-wide image becomes 341 wide, cropped from x = 58; the
    // green band (190..210) lands at about 104..121 of the crop.
    assert!(px(1, 112) > 0.9, "centre is green");
    assert!(px(0, 10) > 0.9 && px(2, 10) < 0.1, "left is red");
    assert!(px(2, 215) > 0.9 && px(0, 215) < 0.1, "right is blue");
}

#[test]
fn a_data_set_archive_reads_integers_with_their_element_type() {
    use advlens::model::npz::{RawArray, read_npz_bytes, read_npz_typed_bytes, write_npz_raw};
    let raw = |name: &str, descr: &str, shape: &[usize], data: Vec<u8>| RawArray {
        name: name.into(),
        descr: descr.into(),
        shape: shape.to_vec(),
        data,
    };
    let arrays = [
        raw("x", "|u1", &[2, 2], vec![0, 7, 200, 255]),
        raw(
            "y",
            ">i8",
            &[2],
            [-3i64, 999].iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
        raw("z", "<u2", &[1], 65535u16.to_le_bytes().to_vec()),
        raw("m", "|b1", &[3], vec![0, 1, 2]),
        raw("i", "|i1", &[2], vec![0x80, 0x7f]),
        raw("w", "<f4", &[1], 0.5f32.to_le_bytes().to_vec()),
    ];
    for deflate in [false, true] {
        let typed = read_npz_typed_bytes(&write_npz_raw(&arrays, deflate)).unwrap();
        assert_eq!(typed["x"].kind, "u1");
        assert_eq!(typed["x"].array.shape(), &[2, 2]);
        assert_eq!(typed["x"].array.data(), &[0.0, 7.0, 200.0, 255.0]);
        assert_eq!(typed["y"].kind, "i8");
        assert_eq!(typed["y"].array.data(), &[-3.0, 999.0]);
        assert_eq!(typed["z"].array.data(), &[65535.0]);
        assert_eq!(typed["m"].array.data(), &[0.0, 1.0, 1.0]);
        assert_eq!(typed["i"].array.data(), &[-128.0, 127.0]);
        assert!(typed["y"].is_integer() && !typed["w"].is_integer());
        assert_eq!(typed["w"].array.data(), &[0.5]);
    }
    // Weights stay floats: the model reader refuses the same archive.
    let e = read_npz_bytes(&write_npz_raw(&arrays, false)).unwrap_err();
    assert!(e.to_string().contains("\"|u1\" is not a float type"), "{e}");
    // Strings and complex numbers are no numbers.
    let text = [raw("s", "<U2", &[1], vec![0; 8])];
    let e = read_npz_typed_bytes(&write_npz_raw(&text, false)).unwrap_err();
    assert!(
        e.to_string().contains("\"<U2\" is not a number type"),
        "{e}"
    );
}
