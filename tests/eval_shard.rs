//! `eval` across machines and models, through the command line: shards add up to the unsharded
//! run image for image, an interrupted per-image file resumes without redoing finished images,
//! `merge` refuses shards of different runs, adversarial images saved by one run give the same
//! accuracy when read back, and the transfer matrix's diagonal is the white-box accuracy.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use advlens::analysis::{EvalReport, ImageResult, TransferMatrix, merge_reports, wilson95};

fn advlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_advlens"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = advlens(args);
    assert!(
        out.status.success(),
        "advlens {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The common eval arguments: 60 bundled images, two attacks, batches of 20.
fn eval_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "eval",
        "--engine",
        "cpu",
        "--data",
        "bundled",
        "--n",
        "60",
        "--attacks",
        "fgsm,pgd5",
        "--batch",
        "20",
    ];
    v.extend_from_slice(extra);
    v
}

fn report(path: &Path) -> EvalReport {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn records(path: &Path) -> Vec<ImageResult> {
    let mut r: Vec<ImageResult> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    r.sort_by_key(ImageResult::key);
    r
}

/// The numbers two reports must share to be the same evaluation.
fn counts(r: &EvalReport) -> Vec<usize> {
    let mut v = vec![r.images, r.clean_correct];
    v.extend(r.rows.iter().flat_map(|row| [row.images, row.correct]));
    v.push(r.all_robust.as_ref().map_or(usize::MAX, |w| w.correct));
    v
}

#[test]
fn shards_add_up_to_the_unsharded_run_image_for_image() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (full_json, full_lines) = (p("full.json"), p("full.jsonl"));
    ok(&eval_args(&[
        "--json",
        &full_json,
        "--per-image",
        &full_lines,
    ]));
    let mut shard_reports = Vec::new();
    let mut shard_lines = Vec::new();
    // Three shards of 20 images with batches of 7: batches differ from the unsharded run's.
    for i in 0..3 {
        let (json, lines, shard) = (
            p(&format!("s{i}.json")),
            p(&format!("s{i}.jsonl")),
            format!("{i}/3"),
        );
        let mut args = eval_args(&["--json", &json, "--per-image", &lines, "--shard", &shard]);
        let at = args.iter().position(|a| *a == "20").unwrap();
        args[at] = "7";
        ok(&args);
        shard_reports.push(json);
        shard_lines.extend(records(Path::new(&lines)));
    }
    shard_lines.sort_by_key(ImageResult::key);
    let whole = records(Path::new(&full_lines));
    assert_eq!(whole.len(), 120, "one line per image and attack");
    assert_eq!(shard_lines, whole);

    let mut merge = vec!["merge".to_string(), p("merged.json")];
    merge.extend(shard_reports.iter().rev().cloned());
    let out = ok(&merge.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&out.stdout).contains("per-image worst case"));
    let merged = report(Path::new(&p("merged.json")));
    let full = report(Path::new(&full_json));
    assert_eq!(counts(&merged), counts(&full));
    assert!(merged.complete);
    assert_eq!(merged.rows[1].ci95, full.rows[1].ci95);
    // The per-image lines and the report agree.
    for (k, row) in full.rows.iter().enumerate() {
        let robust = whole.iter().filter(|r| r.row == k && r.robust).count();
        assert_eq!(robust, row.correct, "row {k}");
    }
    let every = (0..60)
        .filter(|&i| whole.iter().filter(|r| r.index == i).all(|r| r.robust))
        .count();
    assert_eq!(Some(every), full.all_robust.as_ref().map(|w| w.correct));

    // Two shards missing: the merge says it is partial. The same shard twice: refused.
    let partial = merge_reports(vec![report(Path::new(&shard_reports[0]))]).unwrap();
    assert!(!partial.complete);
    for reports in [[1, 1, 2], [0, 2, 2]] {
        let twice = merge_reports(
            reports
                .iter()
                .map(|&i| report(Path::new(&shard_reports[i])))
                .collect(),
        );
        let err = twice.unwrap_err().to_string();
        assert!(err.contains("shard") && err.contains("/3"), "{err}");
    }
}

#[test]
fn merge_refuses_shards_of_different_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    ok(&eval_args(&["--json", &p("a.json"), "--shard", "0/2"]));
    ok(&eval_args(&[
        "--json",
        &p("b.json"),
        "--shard",
        "1/2",
        "--seed",
        "7",
    ]));
    let out = advlens(&["merge", &p("m.json"), &p("a.json"), &p("b.json")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("attack settings"), "{err}");
    assert!(!Path::new(&p("m.json")).exists());
}

#[test]
fn an_interrupted_per_image_file_resumes_without_redoing_finished_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (json, lines) = (p("run.json"), p("run.jsonl"));
    ok(&eval_args(&["--json", &json, "--per-image", &lines]));
    let whole = records(Path::new(&lines));
    let full = report(Path::new(&json));

    // Cut the run after its first batch (20 images): the batch file keeps its header and first
    // batch; the per-image file keeps that batch, a torn line and a line of the second batch.
    let batches = p("run.batches.jsonl");
    let kept: Vec<String> = std::fs::read_to_string(&batches)
        .unwrap()
        .lines()
        .take(2)
        .map(str::to_string)
        .collect();
    std::fs::write(&batches, kept.join("\n") + "\n").unwrap();
    let text = std::fs::read_to_string(&lines).unwrap();
    let mut first: Vec<String> = text.lines().take(40).map(str::to_string).collect();
    // Mark a finished image's line: were its batch redone, the mark would be gone.
    first[0] = first[0].replace("\"linf\":", "\"marked\":true,\"linf\":");
    let second = text.lines().nth(40).unwrap();
    std::fs::write(
        &lines,
        format!("{}\n{second}\n{{\"index\":4", first.join("\n")),
    )
    .unwrap();

    let out = ok(&eval_args(&["--json", &json, "--per-image", &lines]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("20 images done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&lines).unwrap();
    assert_eq!(
        text.matches("\"marked\":true").count(),
        1,
        "a finished batch was redone"
    );
    assert_eq!(records(Path::new(&lines)), whole);
    assert_eq!(counts(&report(Path::new(&json))), counts(&full));

    // Another evaluation may not take the file over.
    let out = advlens(&eval_args(&["--per-image", &lines, "--seed", "3"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different evaluation"));
}

#[test]
fn saved_adversarial_images_read_back_give_the_white_box_accuracy_and_the_transfer_diagonal() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let adv = p("adv");
    ok(&eval_args(&["--json", &p("run.json"), "--save-adv", &adv]));
    let run = report(Path::new(&p("run.json")));
    ok(&[
        "eval",
        "--engine",
        "cpu",
        "--adv-from",
        &adv,
        "--json",
        &p("from.json"),
    ]);
    let from: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("from.json")).unwrap()).unwrap();
    let results = from["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (k, r) in results.iter().enumerate() {
        // The same model on its own stored images: exactly the robust accuracy.
        assert_eq!(r[1]["images"], 60);
        assert_eq!(r[1]["clean_correct"], run.rows[k].correct, "row {k}");
    }

    ok(&[
        "transfer",
        "--engine",
        "cpu",
        "--models",
        "builtin:default,builtin:clean",
        "--attack",
        "pgd5",
        "--data",
        "bundled",
        "--n",
        "60",
        "--batch",
        "20",
        "--json",
        &p("t.json"),
    ]);
    let m: TransferMatrix = serde_json::from_slice(&std::fs::read(p("t.json")).unwrap()).unwrap();
    assert_eq!(m.images, 60);
    assert_eq!(m.correct[0][0], run.rows[1].correct, "diagonal = white-box");
    assert_eq!(m.clean_correct[0], run.clean_correct);
    assert!(
        m.correct[1][1] < m.correct[1][0],
        "the clean model falls to its own attack"
    );
}

#[test]
fn wilson_intervals_match_published_values() {
    // p = 0.5, n = 100: 40.38 % to 59.62 %; 0 of 10: 0 to 27.75 %.
    let (lo, hi) = wilson95(50, 100);
    assert!(
        (lo - 40.383).abs() < 0.01 && (hi - 59.617).abs() < 0.01,
        "{lo} {hi}"
    );
    let (lo, hi) = wilson95(0, 10);
    assert!(lo == 0.0 && (hi - 27.75).abs() < 0.01, "{hi}");
}
