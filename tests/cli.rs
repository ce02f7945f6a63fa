//! The command line end to end: `new-model`, `inspect` and `attack` on real files, and clear
//! errors with a non-zero exit for bad input.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use image::GenericImageView as _;
use std::process::Command;

fn advlens(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_advlens"))
        .args(args)
        .output()
        .unwrap()
}

fn write_png(path: &Path, w: u32, h: u32) {
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 128]));
    img.save(path).unwrap();
}

#[test]
fn new_model_inspect_and_attack_write_what_they_promise() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let out = advlens(&[
        "new-model",
        "--out",
        model.to_str().unwrap(),
        "--denoise",
        "median",
        "--placement",
        "after-every-block",
        "--channels",
        "3",
        "--size",
        "16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = advlens(&["inspect", model.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("group0/block0/non_local/before"), "{text}");
    assert!(text.contains("parameters:"));

    // Two photos of a different size than the model's input: they are resized.
    let a = dir.path().join("a.png");
    let b = dir.path().join("b photo.png");
    write_png(&a, 40, 30);
    write_png(&b, 16, 16);
    let outdir = dir.path().join("out");
    let out = advlens(&[
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--image",
        a.to_str().unwrap(),
        "--image",
        b.to_str().unwrap(),
        "--attack",
        "pgd",
        "--eps",
        "8/255",
        "--alpha",
        "2/255",
        "--steps",
        "3",
        "--seed",
        "5",
        "--out",
        outdir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outdir.join("record.json")).unwrap()).unwrap();
    assert_eq!(rec["attack"]["kind"], "pgd");
    assert_eq!(rec["attack"]["seed"], 5);
    assert_eq!(rec["attack"]["steps"], 3);
    assert!(rec["engine"].as_str().unwrap().starts_with("cpu"));
    let images = rec["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for im in images {
        assert_eq!(im["clean_top5"].as_array().unwrap().len(), 5);
        assert_eq!(im["history"].as_array().unwrap().len(), 4);
        assert!(im["linf"].as_f64().unwrap() <= 8.0 / 255.0 + 1e-6);
        for f in im["files"].as_array().unwrap() {
            let img = image::open(f.as_str().unwrap()).unwrap();
            assert_eq!((img.width(), img.height()), (16, 16));
        }
    }
    assert!(outdir.join("001_b_photo_adv.png").exists());
}

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let out = advlens(&[
        "attack",
        "--image",
        junk.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.png") && err.contains("decode"), "{err}");

    let out = advlens(&["attack", "--image", "builtin:default", "--eps", "eight"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fraction"));

    // A typo in a typed value is rejected with the list of values.
    let out = advlens(&["attack", "--image", "builtin:default", "--attack", "zoo"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'zoo'") && err.contains("fgsm, bim, pgd"),
        "{err}"
    );
    let out = advlens(&["eval", "--data", "bundled", "--norm", "l3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'l3'") && err.contains("linf, l2"), "{err}");
    let out = advlens(&["attack", "--image", "builtin:default", "--target", "rnd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("least-likely or a class number"), "{err}");

    let out = advlens(&[
        "inspect",
        dir.path().join("missing.safetensors").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.safetensors"));

    let out = advlens(&[
        "new-model",
        "--out",
        "/tmp/x.safetensors",
        "--denoise",
        "gauss",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown denoise variant"));
}

#[test]
fn bundled_images_come_with_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let out = advlens(&[
        "attack",
        "--image",
        "fashion:3",
        "--image",
        "builtin:default",
        "--attack",
        "fgsm",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("record.json")).unwrap()).unwrap();
    // Fashion-MNIST test image 3 is a trouser (1), image 0 an ankle boot (9).
    assert_eq!(rec["images"][0]["label"], 1);
    assert_eq!(rec["images"][1]["label"], 9);
    let out = advlens(&["attack", "--image", "fashion:500"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("500 bundled images"));
}

#[test]
fn maps_writes_the_denoise_block_figure_and_exact_npy_inputs_are_used_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maps.png");
    let o = advlens(&[
        "maps",
        "--engine",
        "cpu",
        "--image",
        "fashion:3",
        "--attack",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "3",
        "--tap",
        "group2_denoise",
        "--channel",
        "5",
        "--channel",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The relative change at the block's input, operation output and output.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let noise = stdout
        .lines()
        .find(|l| l.starts_with("‖ΔA‖/‖A‖: "))
        .unwrap();
    let columns: Vec<&str> = noise.split(" → ").collect();
    assert_eq!(columns.len(), 3, "{noise}");
    assert!(columns[1].starts_with("op output 0."), "{noise}");
    let mut widths = vec![];
    for c in [5, 7] {
        let img = image::open(dir.path().join(format!("maps_c{c}.png"))).unwrap();
        // Three columns (input, op output, output) of 7×7 maps scaled up to 224, three rows.
        assert!(
            img.width() > 3 * 224 && img.height() > 3 * 224,
            "{:?}",
            (img.width(), img.height())
        );
        widths.push(img.width());
    }
    // The op tap names the same block; the |Δ| rows' own scale adds a colour bar.
    let own = dir.path().join("own.png");
    let o = advlens(&[
        "maps",
        "--engine",
        "cpu",
        "--image",
        "fashion:3",
        "--attack",
        "fgsm",
        "--tap",
        "group2_denoise/op",
        "--channel",
        "5",
        "--delta-own-scale",
        "--out",
        own.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(image::open(&own).unwrap().width() > widths[0]);
    let o = advlens(&[
        "maps",
        "--engine",
        "cpu",
        "--tap",
        "group9",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tap \"group9\""));

    // An exact input: a [1, 28, 28] float array in [0, 1] is used without resizing.
    let npy = dir.path().join("x.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 28, 28), }".to_string();
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    for i in 0..784 {
        bytes.extend_from_slice(&((i % 28) as f32 / 27.0).to_le_bytes());
    }
    std::fs::write(&npy, &bytes).unwrap();
    let rec_dir = dir.path().join("rec");
    let o = advlens(&[
        "attack",
        "--engine",
        "cpu",
        "--attack",
        "fgsm",
        "--image",
        npy.to_str().unwrap(),
        "--out",
        rec_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec_dir.join("record.json")).unwrap()).unwrap();
    assert_eq!(
        rec["images"][0]["clean_logits"].as_array().unwrap().len(),
        10
    );
    // The wrong shape is refused with the shape the model wants.
    std::fs::write(&npy, &bytes[..bytes.len() - 4]).unwrap();
    let o = advlens(&[
        "attack",
        "--image",
        npy.to_str().unwrap(),
        "--out",
        rec_dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

#[test]
fn a_released_layout_npz_is_recognised_and_attacked_on_a_shipped_photo() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("R50-Denoise.npz");
    let o = advlens(&[
        "new-model",
        "--tensorpack",
        "r50-denoise",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = advlens(&["inspect", model.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("ResNet-50 with nonlocal_gaussian denoise blocks after each stage"),
        "{text}"
    );
    let out = dir.path().join("out");
    let o = advlens(&[
        "attack",
        "--engine",
        "cpu",
        "--model",
        model.to_str().unwrap(),
        "--image",
        "photo:coffee",
        "--attack",
        "fgsm",
        "--eps",
        "16/255",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("record.json")).unwrap()).unwrap();
    let img = &rec["images"][0];
    assert_eq!(img["clean_logits"].as_array().unwrap().len(), 1000);
    // Class names are ImageNet's.
    let name = img["clean_top5"][0]["name"].as_str().unwrap();
    assert!(!name.starts_with("class "), "{name}");
    let adv_path = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_adv.png"))
        .unwrap();
    let adv = image::open(adv_path).unwrap();
    assert_eq!((adv.width(), adv.height()), (224, 224));
    let o = advlens(&[
        "attack",
        "--image",
        "photo:teapot",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("photo:coffee"));
}

/// `attack` runs the diagnostics: a two-step PGD leaves the loss still rising, which is printed
/// as a warning on stderr and written in the record; records without diagnostics still parse.
#[test]
fn attack_prints_and_records_its_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let out = advlens(&[
        "attack",
        "--engine",
        "cpu",
        "--image",
        "fashion:0",
        "--image",
        "fashion:1",
        "--attack",
        "pgd",
        "--steps",
        "2",
        "--eps",
        "0.02",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: not_converged: the rescaled loss still rose")
            && stderr.contains(" — the attack's loss was still rising"),
        "{stderr}"
    );
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("record.json")).unwrap()).unwrap();
    let flags = rec["diagnostics"].as_array().unwrap();
    assert!(
        flags
            .iter()
            .any(|d| d["flag"] == "not_converged" && d["images"].as_u64().unwrap() > 0),
        "{flags:?}"
    );
    rec.as_object_mut().unwrap().remove("diagnostics");
    let old: advlens::attack::RunRecord = serde_json::from_value(rec).unwrap();
    assert!(old.diagnostics.is_empty());
}

#[test]
fn l2_budgets_are_read_as_written_and_linf_levels_as_eighths_of_255() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let eps_of = |args: &[&str]| {
        let mut all = vec![
            "attack",
            "--image",
            "fashion:3",
            "--attack",
            "fgsm",
            "--out",
            d,
        ];
        all.extend_from_slice(args);
        let out = advlens(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("record.json")).unwrap())
                .unwrap();
        rec["attack"]["eps"].as_f64().unwrap()
    };
    assert!((eps_of(&["--norm", "l2", "--eps", "1.5"]) - 1.5).abs() < 1e-6);
    assert!((eps_of(&["--eps", "8"]) - 8.0 / 255.0).abs() < 1e-6);
    assert!((eps_of(&["--norm", "l2", "--eps", "8/255"]) - 8.0 / 255.0).abs() < 1e-6);
}

#[test]
fn an_autoattack_record_names_what_ran_and_each_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = advlens(&[
        "attack",
        "--image",
        "fashion:3",
        "--attack",
        "autoattack",
        "--eps",
        "0.1",
        "--steps",
        "5",
        "--queries",
        "20",
        "--apgd-targets",
        "2",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("record.json")).unwrap()).unwrap();
    assert_eq!(rec["attack_name"], "AutoAttack standard without FAB-T");
    let stages: Vec<&str> = rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["attack"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["apgd-ce", "apgd-t", "square"]);
}

#[test]
fn bench_data_times_a_generated_jpeg_folder() {
    let dir = tempfile::tempdir().unwrap();
    let jpegs = dir.path().join("jpegs");
    let out = advlens(&[
        "bench",
        "--make-jpegs",
        jpegs.to_str().unwrap(),
        "--n",
        "10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One folder per shipped photo, the images dealt round them: 3, 3, 2, 2.
    let count = |p: &str| std::fs::read_dir(jpegs.join(p)).unwrap().count();
    assert_eq!(
        (count("coffee"), count("chelsea"), count("rocket")),
        (3, 3, 2)
    );
    let img = advlens::data::load_image(&jpegs.join("coffee/00000.jpg")).unwrap();
    assert!(
        (300..=450).contains(&img.width().min(img.height())),
        "{:?}",
        img.dimensions()
    );
    // A broken file is counted, not fatal.
    std::fs::write(jpegs.join("rocket/broken.jpg"), b"not a jpeg").unwrap();
    let out = advlens(&[
        "bench",
        "--data",
        jpegs.to_str().unwrap(),
        "--batch",
        "4",
        "--reps",
        "1",
        "--no-attack",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("(11 images, 4 classes)"), "{text}");
    assert!(
        text.contains("| decode only | – | 10 (1 unreadable) |"),
        "{text}"
    );
    assert!(
        text.contains("| decode + forward + input gradient (Prefetch) | cpu"),
        "{text}"
    );
    assert!(!text.contains("PGD-10"), "{text}");
}
