//! The command line's input-transformation defences (`--defense`, `--gradient`, `--eot`): the
//! record carries the defence, bad chains are clear errors, `eval` reports a random defence as
//! mean ± sd over draws and runs one table over several defences, and on a real model naive
//! gradients through JPEG are masked while BPDA gets through.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn advlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_advlens"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn record(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("record.json")).unwrap()).unwrap()
}

/// `attack` on six bundled images with builtin:clean behind JPEG, returning the record.
fn attack_jpeg(dir: &Path, attack: &str, gradient: &str) -> serde_json::Value {
    let mut args = vec![
        "attack",
        "--engine",
        "cpu",
        "--model",
        "builtin:clean",
        "--eps",
        "0.1",
        "--steps",
        "10",
    ];
    let images = [
        "fashion:0",
        "fashion:1",
        "fashion:2",
        "fashion:3",
        "fashion:4",
        "fashion:5",
    ];
    for i in &images {
        args.extend(["--image", i]);
    }
    let out = dir.to_str().unwrap();
    args.extend([
        "--attack",
        attack,
        "--defense",
        "jpeg:75",
        "--gradient",
        gradient,
    ]);
    args.extend(["--out", out]);
    let o = advlens(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("defence: jpeg:75 ({gradient})")),
        "{}",
        text(&o.stdout)
    );
    record(dir)
}

fn successes(rec: &serde_json::Value) -> usize {
    rec["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["success"].as_bool().unwrap())
        .count()
}

#[test]
fn attack_records_the_defence_and_bpda_gets_through_where_naive_gradients_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    // Naive PGD: JPEG's gradient is zero, so the attack cannot move and says why.
    let naive = attack_jpeg(&dir.path().join("naive"), "pgd", "naive");
    assert_eq!(
        naive["defense"],
        serde_json::json!({"chain": "jpeg:75", "gradient": "naive", "eot": 1, "seed": 0})
    );
    let flags: Vec<&str> = naive["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["flag"].as_str().unwrap())
        .collect();
    assert!(flags.contains(&"zero_gradient"), "{flags:?}");
    // Naive BIM has no random start: the adversarial image is the clean one.
    let bim = attack_jpeg(&dir.path().join("bim"), "bim", "naive");
    for img in bim["images"].as_array().unwrap() {
        assert_eq!(img["linf"].as_f64().unwrap(), 0.0, "{img}");
    }
    // BPDA: the identity backward pass through JPEG fools more of the same images.
    let bpda = attack_jpeg(&dir.path().join("bpda"), "pgd", "bpda");
    assert_eq!(bpda["defense"]["gradient"], "bpda");
    let (n, b) = (successes(&naive), successes(&bpda));
    assert!(b > n && b >= 4, "naive fooled {n}, BPDA {b} of 6");
    // Records without a defence (written before defences existed) still read.
    let mut old = bpda.clone();
    old.as_object_mut().unwrap().remove("defense");
    let old: advlens::attack::RunRecord = serde_json::from_value(old).unwrap();
    assert!(old.defense.is_none());
}

#[test]
fn bad_chains_exit_non_zero_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let cases = [
        ("jpeg:0", "quality 0; use 1 to 100"),
        ("median:4", "window 4; the side must be odd"),
        ("bits:0", "0 bits; use 1 to 8"),
        ("resize-pad:99", "the padded side 99 is over the limit"),
        ("blur:3", "unknown defence \"blur:3\""),
    ];
    for (chain, problem) in cases {
        for cmd in ["attack", "eval"] {
            let mut args = vec![cmd, "--engine", "cpu", "--defense", chain];
            if cmd == "attack" {
                args.extend(["--image", "fashion:0", "--out", out]);
            } else {
                args.extend(["--data", "bundled", "--n", "2"]);
            }
            let o = advlens(&args);
            let err = text(&o.stderr);
            assert!(!o.status.success(), "{cmd} {chain}");
            assert!(err.contains(problem), "{cmd} {chain}: {err}");
            assert!(err.contains("--defense"), "{cmd} {chain}: {err}");
        }
    }
    let o = advlens(&["attack", "--image", "fashion:0", "--gradient", "exact"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("expected naive or bpda"));
}

#[test]
fn eval_reports_a_random_defence_as_mean_and_spread_over_draws() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e.json");
    let o = advlens(&[
        "eval",
        "--engine",
        "cpu",
        "--model",
        "builtin:clean",
        "--data",
        "bundled",
        "--n",
        "20",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--defense",
        "resize-pad",
        "--defense-draws",
        "10",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("under 10 independent draws"), "{stdout}");
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(rep["defense"]["chain"], "resize-pad");
    for draws in [&rep["clean_draws"], &rep["rows"][0]["draws"]] {
        let acc: Vec<f64> = draws["accuracy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect();
        assert_eq!(acc.len(), 10);
        assert_eq!(draws["correct"].as_array().unwrap().len(), 10);
        let mean = acc.iter().sum::<f64>() / 10.0;
        let sd = (acc.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 9.0).sqrt();
        assert!((draws["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
        assert!((draws["sd"].as_f64().unwrap() - sd).abs() < 1e-9);
        let cell = format!("{mean:.2} ± {sd:.2}");
        assert!(
            stdout.contains(&format!("| {cell} |")),
            "{cell} in {stdout}"
        );
    }
    // On 20 images the clean accuracy moves between draws of the resize and pad.
    let clean = rep["clean_draws"]["correct"].as_array().unwrap();
    assert!(clean.iter().any(|c| c != &clean[0]), "{clean:?}");
}

#[test]
fn eval_runs_one_table_over_several_defences_and_gradient_modes() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    let o = advlens(&[
        "eval",
        "--engine",
        "cpu",
        "--model",
        "builtin:clean",
        "--data",
        "bundled",
        "--n",
        "8",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--defense",
        "none",
        "--defense",
        "jpeg:75",
        "--defense",
        "resize-pad",
        "--gradient",
        "naive,bpda",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    for row in [
        "| none | – | – | 8 |",
        "| jpeg:75 | naive | – | 8 |",
        "| jpeg:75 | bpda | – | 8 |",
        "| resize-pad | exact | 1 | 8 |",
    ] {
        assert!(stdout.contains(row), "{row} in {stdout}");
    }
    assert!(stdout.contains("| fgsm ε=0.1 % |"), "{stdout}");
    let suite: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let reports = suite["reports"].as_array().unwrap();
    let rows: Vec<(String, String)> = reports
        .iter()
        .map(|r| {
            let d = &r["defense"];
            (
                d["chain"].as_str().unwrap_or("none").to_string(),
                d["gradient"].as_str().unwrap_or("–").to_string(),
            )
        })
        .collect();
    let expected = [
        ("none", "–"),
        ("jpeg:75", "naive"),
        ("jpeg:75", "bpda"),
        ("resize-pad", "naive"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(rows, expected);
    // Naive gradients cannot pass JPEG: FGSM leaves at least as many images correct as BPDA.
    let acc = |i: usize| reports[i]["rows"][0]["correct"].as_u64().unwrap();
    assert!(acc(1) >= acc(2), "naive {} < bpda {}", acc(1), acc(2));
}

#[test]
fn maps_runs_behind_a_defence_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("m.png");
    let o = advlens(&[
        "maps",
        "--engine",
        "cpu",
        "--model",
        "builtin:clean",
        "--attack",
        "fgsm",
        "--eps",
        "0.1",
        "--defense",
        "bits:5",
        "--gradient",
        "naive",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("defence: bits:5 (naive)"),
        "{}",
        text(&o.stdout)
    );
    assert!(png.exists());
}

/// With several defence rows, `--per-image` keeps one file per row, and running the command
/// again resumes every row: nothing is recomputed and the table is the same.
#[test]
fn per_image_files_per_defence_row_resume_the_whole_table() {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("run.jsonl");
    let json = dir.path().join("s.json");
    let args = [
        "eval",
        "--engine",
        "cpu",
        "--model",
        "builtin:clean",
        "--data",
        "bundled",
        "--n",
        "12",
        "--batch",
        "6",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--defense",
        "none",
        "--defense",
        "jpeg:75",
        "--gradient",
        "bpda",
        "--per-image",
        lines.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    let first = advlens(&args);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let table = text(&first.stdout);
    for row in ["run.none.jsonl", "run.jpeg-75-bpda.jsonl"] {
        let p = dir.path().join(row);
        let n = std::fs::read_to_string(&p).unwrap().lines().count();
        assert_eq!(n, 12, "{row}: one line per image");
        assert!(
            dir.path()
                .join(row.replace(".jsonl", ".batches.jsonl"))
                .exists()
        );
    }
    assert!(!lines.exists(), "the base name itself is not written");
    let suite = std::fs::read(&json).unwrap();
    let again = advlens(&args);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let log = text(&again.stderr);
    assert_eq!(log.matches("12 images done").count(), 2, "{log}");
    assert_eq!(text(&again.stdout), table);
    let resumed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let original: serde_json::Value = serde_json::from_slice(&suite).unwrap();
    assert_eq!(resumed["reports"], original["reports"]);
}
