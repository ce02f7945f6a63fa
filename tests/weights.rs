//! Weight files: save/load round trips, and every kind of bad file gives an error that names
//! the problem.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Engine, ForwardOptions};
use advlens::model::weights::{self, META_ARCH};
use advlens::model::{DenoiseVariant, ModelError, Placement};
use safetensors::tensor::{Dtype, TensorView};

fn sample_net() -> advlens::model::Network {
    let mut net = common::randomized(
        common::tiny_config(DenoiseVariant::Bilateral, Placement::AfterStage),
        3,
    );
    net.class_names = (0..5).map(|k| format!("thing {k}")).collect();
    net.metadata
        .insert("advlens.train".into(), "{\"epochs\":2}".into());
    net
}

/// Rewrites a saved file's tensors and metadata through `edit`.
fn rewrite(
    bytes: &[u8],
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>, &mut HashMap<String, String>),
) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap_or_default();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors, &mut meta);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn round_trip_keeps_weights_names_metadata_and_outputs() {
    let net = sample_net();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    weights::save(&net, &path).unwrap();
    let back = weights::load(&path).unwrap();
    assert_eq!(back.config, net.config);
    assert_eq!(back.weights, net.weights);
    assert_eq!(back.class_names, net.class_names);
    assert_eq!(
        back.metadata.get("advlens.train").unwrap(),
        "{\"epochs\":2}"
    );
    let x = common::random_images(2, [2, 8, 8], 1);
    let a = CpuEngine::new(Arc::new(net))
        .unwrap()
        .forward(&x, &ForwardOptions::default())
        .unwrap();
    let b = CpuEngine::new(Arc::new(back))
        .unwrap()
        .forward(&x, &ForwardOptions::default())
        .unwrap();
    assert_eq!(a.logits, b.logits);
}

#[test]
fn bad_files_give_errors_that_name_the_problem() {
    let bytes = weights::to_bytes(&sample_net()).unwrap();
    let err = |b: &[u8]| weights::from_bytes(b).unwrap_err();

    // Truncated, empty, not safetensors at all.
    assert!(matches!(
        err(&bytes[..bytes.len() - 100]),
        ModelError::BadFile { .. }
    ));
    assert!(matches!(err(&bytes[..5]), ModelError::BadFile { .. }));
    assert!(matches!(
        err(b"GIF89a not weights"),
        ModelError::BadFile { .. }
    ));

    // A missing tensor.
    let b = rewrite(&bytes, |t, _| t.retain(|(n, _, _)| n != "linear/W"));
    let e = err(&b);
    assert!(
        matches!(&e, ModelError::MissingTensor(n) if n == "linear/W"),
        "{e}"
    );

    // An unexpected tensor.
    let b = rewrite(&bytes, |t, _| {
        t.push(("extra/W".into(), vec![1], vec![0; 4]));
    });
    assert!(matches!(err(&b), ModelError::UnexpectedTensor(n) if n == "extra/W"));

    // A mis-shaped tensor.
    let b = rewrite(&bytes, |t, _| {
        for (n, s, d) in t.iter_mut() {
            if n == "linear/b" {
                *s = vec![4];
                d.truncate(16);
            }
        }
    });
    let e = err(&b);
    assert!(
        e.to_string().contains("linear/b") && e.to_string().contains("[5]"),
        "{e}"
    );

    // NaN in a weight.
    let b = rewrite(&bytes, |t, _| {
        for (n, _, d) in t.iter_mut() {
            if n == "conv0/W" {
                d[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
        }
    });
    assert!(matches!(err(&b), ModelError::NonFinite(n) if n == "conv0/W"));

    // No architecture, an unknown denoise variant, a nonsensical config.
    let b = rewrite(&bytes, |_, m| {
        m.remove(META_ARCH);
    });
    assert!(err(&b).to_string().contains("which architecture"));
    let b = rewrite(&bytes, |_, m| {
        let a = m[META_ARCH].replace("\"bilateral\"", "\"wavelet\"");
        m.insert(META_ARCH.into(), a);
    });
    let e = err(&b).to_string();
    assert!(e.contains("wavelet"), "{e}");
    let b = rewrite(&bytes, |_, m| {
        let a = m[META_ARCH].replace("\"blocks\":[1,1]", "\"blocks\":[1]");
        m.insert(META_ARCH.into(), a);
    });
    assert!(err(&b).to_string().contains("block counts"));
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let e = weights::load(std::path::Path::new("/nonexistent/m.safetensors")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/m.safetensors"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.safetensors");
    std::fs::write(&p, [0u8; 64]).unwrap();
    let e = weights::load(&p).unwrap_err();
    assert!(e.to_string().contains("junk.safetensors"), "{e}");
}

#[test]
fn one_damaged_digit_in_the_architecture_cannot_ask_for_a_huge_graph_or_resize() {
    // Found by probing the metadata's numbers with the huge values tests/fuzz.rs uses: a block
    // count of 4294967295 built graph nodes until memory ran out (65536 took 1.5 s and 260 MB
    // before the missing tensor was noticed), and an evaluation resize of 4294967295 loaded and
    // then made every image conversion allocate without bound.
    let bytes = weights::to_bytes(&sample_net()).unwrap();
    let edit = |from: &str, to: &str| {
        rewrite(&bytes, |_, m| {
            assert!(m[META_ARCH].contains(from), "{}", m[META_ARCH]);
            let a = m[META_ARCH].replace(from, to);
            m.insert(META_ARCH.into(), a);
        })
    };
    let start = std::time::Instant::now();
    let e = weights::from_bytes(&edit("\"blocks\":[1,1]", "\"blocks\":[4294967295,1]"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("4294967295 blocks in a stage"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    let e = weights::from_bytes(&edit("\"eval_resize\":null", "\"eval_resize\":4294967295"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("evaluation resize of 4294967295 pixels"), "{e}");
    // The largest allowed values still load.
    let ok = edit("\"eval_resize\":null", "\"eval_resize\":4096");
    assert_eq!(weights::from_bytes(&ok).unwrap().eval_resize(), Some(4096));
}
