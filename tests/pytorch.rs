//! PyTorch checkpoints as models: small state dicts in the torchvision-ResNet and
//! EfficientNet-Lite layouts written by PyTorch itself (tests/data/torch, made by
//! scripts/torch-model-fixtures.py, in both the zip and the legacy format) are recognised from
//! their keys and compute the logits PyTorch computed; a state dict in safetensors without advlens
//! metadata opens the same way; unknown layouts are errors that say what advlens knows. When the
//! released EfficientNet-Lite0 checkpoint has been fetched (scripts/fetch-models.sh), it must
//! classify the bundled photos as the reference's numpy forward pass does.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use advlens::array::{Array, softmax, top_k};
use advlens::engine::cpu::CpuEngine;
use advlens::engine::{Engine, ForwardOptions};
use advlens::model::{ArchConfig, Network, weights};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch")
        .join(name)
}

/// The fixture script's input: `x[c, h, w] = ((31c + 7h + 3w) mod 101) / 100`.
fn test_input() -> Array {
    let mut data = Vec::with_capacity(3 * 224 * 224);
    for c in 0..3 {
        for h in 0..224 {
            for w in 0..224 {
                data.push(((31 * c + 7 * h + 3 * w) % 101) as f32 / 100.0);
            }
        }
    }
    Array::new(vec![1, 3, 224, 224], data).unwrap()
}

fn expected_logits(name: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(fixture("expected-logits.json")).unwrap();
    let all: BTreeMap<String, Vec<f32>> = serde_json::from_str(&text).unwrap();
    all[name].clone()
}

fn logits(net: Network, x: &Array) -> Vec<f32> {
    let mut engine = CpuEngine::new(Arc::new(net)).unwrap();
    engine
        .forward(x, &ForwardOptions::default())
        .unwrap()
        .logits
        .data()
        .to_vec()
}

fn assert_logits_match(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale + 1e-5,
            "{what}: logit {k} is {g}, PyTorch computed {w}"
        );
    }
}

#[test]
fn torchvision_resnets_compute_what_pytorch_computed() {
    // resnet-basic.pth is in the zip format, resnet-bottleneck.pth in the legacy format.
    for (name, summary) in [
        (
            "resnet-basic",
            "torchvision ResNet-12 3x224x224 → 7 classes",
        ),
        (
            "resnet-bottleneck",
            "torchvision ResNeXt-17 2×32d 3x224x224 → 5 classes",
        ),
    ] {
        let net = weights::load(&fixture(&format!("{name}.pth"))).unwrap();
        assert!(matches!(net.config, ArchConfig::TorchResnet(_)), "{name}");
        assert_eq!(net.config.summary(), summary);
        assert_eq!(net.class_names[0], "class 0");
        assert_logits_match(&logits(net, &test_input()), &expected_logits(name), name);
    }
}

#[test]
fn efficientnet_lite_computes_what_pytorch_computed() {
    let net = weights::load(&fixture("efficientnet-lite.pth")).unwrap();
    let ArchConfig::EfficientNetLite(cfg) = &net.config else {
        panic!("recognised as {}", net.config.summary())
    };
    assert_eq!(cfg.stem_width, 8);
    assert_eq!(cfg.head_width, 48);
    let repeats: Vec<usize> = cfg.stages.iter().map(|s| s.repeats).collect();
    assert_eq!(repeats, [1, 2, 1, 2, 1, 2, 1]);
    assert_eq!(cfg.eval_resize, Some(256));
    assert!(net.graph.tap("_blocks.3").is_some());
    assert_logits_match(
        &logits(net, &test_input()),
        &expected_logits("efficientnet-lite"),
        "efficientnet-lite",
    );
}

#[test]
fn a_state_dict_in_safetensors_without_metadata_is_recognised() {
    let net = weights::load(&fixture("resnet-basic.pth")).unwrap();
    let raw: Vec<(String, Vec<u8>, Vec<usize>)> = net
        .weights
        .iter()
        .map(|(k, a)| {
            let b = a.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), b, a.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = raw
        .iter()
        .map(|(k, b, s)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (k.clone(), v)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let again = weights::from_bytes(&bytes).unwrap();
    assert_eq!(again.config, net.config);
    assert_eq!(
        again.metadata["advlens.recognised"],
        "torchvision ResNet-12"
    );
    assert_logits_match(
        &logits(again, &test_input()),
        &expected_logits("resnet-basic"),
        "resnet-basic from safetensors",
    );
}

#[test]
fn unknown_and_inconsistent_state_dicts_are_errors() {
    let net = weights::load(&fixture("resnet-basic.pth")).unwrap();
    // Unknown keys: the message names the families advlens knows.
    let mut w = BTreeMap::new();
    w.insert("encoder.weight".to_string(), Array::zeros(vec![4, 4]));
    let e = advlens::model::pytorch::network_from_state_dict(w)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("encoder.weight") && e.contains("EfficientNet-Lite"),
        "{e}"
    );
    // A missing tensor and a wrong shape are named.
    let mut w = net.weights.clone();
    w.remove("layer2.0.downsample.1.running_var");
    let e = advlens::model::pytorch::network_from_state_dict(w)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer2.0.downsample.1.running_var"), "{e}");
    let mut w = net.weights.clone();
    w.insert("fc.bias".into(), Array::zeros(vec![3]));
    let e = advlens::model::pytorch::network_from_state_dict(w)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fc.bias"), "{e}");
}

#[test]
fn released_efficientnet_lite0_classifies_the_bundled_photos() {
    let Some(path) = common::efficientnet_lite0() else {
        return;
    };
    let net = weights::load(&path).unwrap();
    assert_eq!(net.metadata["advlens.recognised"], "EfficientNet-Lite0");
    assert_eq!(net.graph.param_count(), 4_694_024);
    let [c, h, w] = net.input_shape();
    let eval_resize = net.eval_resize();
    let mut engine = CpuEngine::new(Arc::new(net)).unwrap();
    // Golden values from the reference's numpy forward pass with (x − 127) / 128 on the
    // scikit-image originals (../shared/reference/tools/eff_results.txt); the bundled photos
    // are smaller JPEG copies and the `image` crate's bicubic differs from PIL's, hence the
    // tolerance on the probabilities.
    for (photo, class, name, p_ref, tol) in [
        ("coffee", 967, "espresso", 0.951, 0.05),
        ("chelsea", 282, "tiger cat", 0.386, 0.15),
    ] {
        let img = advlens::zoo::photo(photo).unwrap();
        let x = advlens::data::to_array_with(&img, c, [h, w], eval_resize).unwrap();
        let out = engine.forward(&x, &ForwardOptions::default()).unwrap();
        let p = softmax(out.logits.data());
        let top = top_k(&p, 3);
        assert_eq!(engine.network().class_name(class), name);
        assert!(
            top.iter().any(|&(k, _)| k == class),
            "{photo}: top-3 {top:?} lacks {class} ({name})"
        );
        assert!(
            (p[class] - p_ref).abs() <= tol,
            "{photo}: p({name}) = {}, reference {p_ref}",
            p[class]
        );
        eprintln!("{photo}: top-3 {top:?}");
    }
}
