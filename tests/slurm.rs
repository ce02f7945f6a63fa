//! `scripts/slurm-eval.sh` on a real one-node Slurm cluster started by the test (`.ci/run`:
//! `cargo test --release --test slurm -- --ignored`): an array of shards and a merge job that
//! depends on it, first with a stand-in for advlens that records what each job was asked to do,
//! then with the real `advlens eval --shard` and `advlens merge`, whose merged report and
//! per-image lines must equal those of the same eval run unsharded. Without slurmctld, slurmd,
//! munged and sbatch the cluster tests skip with a note, unless `ADVLENS_REQUIRE_SLURM` is set.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "slurm/local_cluster.rs"]
mod local_cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use local_cluster::LocalSlurm;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/slurm-eval.sh");
const SHARDS: usize = 4;
/// The evaluation, sharded and not: PGD-10 on 200 bundled images, on the cpu engine.
const EVAL_ARGS: &str = "--engine cpu --model builtin:default --data bundled --n 200 \
    --attacks pgd10 --eps 0.1 --seed 0";
/// How long the shards and the merge may take together.
const JOB_LIMIT: Duration = Duration::from_secs(300);

/// One cluster at a time: two would compete for the same few cores.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// A stand-in for the advlens binary: `eval` writes its arguments, one per line, to the file
/// after `--json` (after a second, so shards overlap; failing instead for the shard named in
/// `FAKE_FAIL_SHARD`), and `merge` fails unless every shard file exists, then writes the list of
/// shard files to its output.
const STAND_IN: &str = r#"#!/usr/bin/env bash
set -euo pipefail
cmd=$1; shift
case $cmd in
  eval)
    args=("$@"); json=; shard=
    while [ $# -gt 0 ]; do
      case $1 in --json) json=$2 ;; --shard) shard=$2 ;; esac
      shift
    done
    [ "${shard%%/*}" != "${FAKE_FAIL_SHARD:-}" ] || exit 3
    sleep 1
    printf '%s\n' "${args[@]}" > "$json.tmp"
    mv "$json.tmp" "$json" ;;
  merge)
    out=$1; shift
    for f in "$@"; do [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }; done
    printf '%s\n' "$@" > "$out" ;;
  *) exit 9 ;;
esac
"#;

/// Writes to the stderr handle itself, which libtest does not capture.
fn note(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The id after "job" on the line of the script's output that starts with `label`.
fn job_id(stdout: &str, label: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no '{label}' line in the script's output:\n{stdout}"));
    let mut words = line.split_whitespace().skip_while(|w| *w != "job");
    words.nth(1).unwrap().to_string()
}

/// Submits the array and the merge through the script; returns the merge job's id.
fn submit(
    cluster: &mut LocalSlurm,
    advlens: &Path,
    out: &Path,
    env: &[(&str, &str)],
    eval_args: &[&str],
) -> String {
    let mut cmd = cluster.with_env(Command::new(SCRIPT));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ADVLENS", advlens)
        .envs(env.iter().copied())
        .args(["--shards", &SHARDS.to_string(), "--out"])
        .arg(out)
        .args(["--partition", "debug", "--time", "10:00", "--"])
        .args(eval_args);
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let shards = job_id(&stdout, "shards:");
    let merge = job_id(&stdout, "merge:");
    cluster.track(&shards);
    cluster.track(&merge);
    merge
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn shard_file(out: &Path, i: usize, ext: &str) -> PathBuf {
    out.join(format!("shard-{i}.{ext}"))
}

#[test]
fn dry_run_prints_an_array_of_shards_and_a_merge_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let bin = env!("CARGO_BIN_EXE_advlens");
    let run = |args: &[&str]| {
        Command::new(SCRIPT)
            .env("ADVLENS", bin)
            .args(args)
            .output()
            .unwrap()
    };
    let o = out.to_str().unwrap();
    let mut args: Vec<&str> =
        "--shards 3 --partition gpu --time 1:00:00 --max-parallel 2 --dry-run"
            .split(' ')
            .collect();
    args.extend(["--out", o, "--", "--model", "two words"]);
    let printed = run(&args);
    assert!(printed.status.success(), "{printed:?}");
    let text = String::from_utf8(printed.stdout).unwrap();
    let [shards, merge] = text.lines().collect::<Vec<_>>()[..] else {
        panic!("expected two sbatch commands:\n{text}");
    };
    for part in [
        "sbatch --parsable",
        "--array 0-2%2",
        "--requeue",
        "--partition gpu --time 1:00:00",
        &format!("--output {o}/logs/shard-%a.log"),
        &format!("slurm-eval.sh _shard 3 {o} {bin} --model two\\ words"),
    ] {
        assert!(shards.contains(part), "{part:?} not in {shards}");
    }
    for part in [
        "--partition gpu --time 1:00:00",
        "--dependency afterok:ARRAY_JOB_ID",
        "--kill-on-invalid-dep yes",
        &format!("slurm-eval.sh _merge 3 {o} {bin}"),
    ] {
        assert!(merge.contains(part), "{part:?} not in {merge}");
    }
    assert!(!merge.contains("--array"), "{merge}");
    assert!(!out.exists(), "a dry run created {o}");
    // Per-shard flags belong to the script, and the shard count must be a number.
    for bad in [
        &[
            "--shards",
            "2",
            "--out",
            o,
            "--dry-run",
            "--",
            "--json",
            "x.json",
        ][..],
        &["--shards", "0", "--out", o, "--dry-run"],
        &["--out", o, "--dry-run"],
        &["--shards", "2", "--dry-run"],
    ] {
        assert_eq!(run(bad).status.code(), Some(2), "{bad:?}");
    }
    assert!(run(&["--help"]).status.success());
}

#[test]
#[ignore = "starts a one-node Slurm cluster: cargo test --release --test slurm -- --ignored"]
fn stand_in_shards_run_as_an_array_and_the_merge_waits_for_all() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut cluster) = LocalSlurm::start() else {
        return;
    };
    let stand_in = cluster.dir().join("stand-in");
    std::fs::write(&stand_in, STAND_IN).unwrap();
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = cluster.dir().join("out");
    let eval_args = ["--model", "two words", "--n", "200"];
    let merge = submit(&mut cluster, &stand_in, &out, &[], &eval_args);
    assert_eq!(cluster.wait_for_job(&merge, JOB_LIMIT), "COMPLETED");
    for i in 0..SHARDS {
        let json = shard_file(&out, i, "json");
        let mut expected: Vec<String> = eval_args.iter().map(|s| s.to_string()).collect();
        expected.extend([
            "--shard".into(),
            format!("{i}/{SHARDS}"),
            "--json".into(),
            json.display().to_string(),
            "--per-image".into(),
            shard_file(&out, i, "jsonl").display().to_string(),
        ]);
        assert_eq!(lines(&json), expected, "shard {i}");
    }
    let merged: Vec<String> = (0..SHARDS)
        .map(|i| shard_file(&out, i, "json").display().to_string())
        .collect();
    assert_eq!(lines(&out.join("merged.json")), merged);

    // A failed shard: the merge is cancelled, not left pending and never run.
    let failing = cluster.dir().join("failing");
    let merge = submit(
        &mut cluster,
        &stand_in,
        &failing,
        &[("FAKE_FAIL_SHARD", "2")],
        &eval_args,
    );
    assert_eq!(cluster.wait_for_job(&merge, JOB_LIMIT), "CANCELLED");
    assert!(!failing.join("merged.json").exists());
    assert!(!shard_file(&failing, 2, "json").exists());
    assert!(shard_file(&failing, 3, "json").exists());
}

/// Whether a per-image field is a timing, which may differ between runs.
fn is_timing(key: &str) -> bool {
    ["second", "secs", "elapsed", "duration"]
        .iter()
        .any(|t| key.contains(t))
        || key.ends_with("_s")
        || key.ends_with("_ms")
}

/// The per-image lines of `files` without timings, sorted by (image index, attack).
fn per_image(files: &[PathBuf]) -> Vec<Value> {
    let mut all: Vec<Value> = files
        .iter()
        .flat_map(|f| lines(f))
        .map(|l| {
            let mut v: Value = serde_json::from_str(&l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !is_timing(k));
            v
        })
        .collect();
    all.sort_by_key(|v| (v["index"].as_u64().unwrap(), v["attack"].to_string()));
    all
}

/// Images, clean correct, and each row's attack and correct count, from a JSON report.
fn summary(path: &Path) -> (u64, u64, Vec<(Value, u64)>) {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rows = r["rows"].as_array().unwrap();
    (
        r["images"].as_u64().unwrap(),
        r["clean_correct"].as_u64().unwrap(),
        rows.iter()
            .map(|row| (row["attack"].clone(), row["correct"].as_u64().unwrap()))
            .collect(),
    )
}

#[test]
#[ignore = "starts a one-node Slurm cluster: cargo test --release --test slurm -- --ignored"]
fn sharded_eval_on_slurm_equals_the_unsharded_run() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut cluster) = LocalSlurm::start() else {
        return;
    };
    let advlens = Path::new(env!("CARGO_BIN_EXE_advlens"));
    let eval_args: Vec<&str> = EVAL_ARGS.split_whitespace().collect();
    let out = cluster.dir().join("out");
    let start = Instant::now();
    let merge = submit(&mut cluster, advlens, &out, &[], &eval_args);
    assert_eq!(cluster.wait_for_job(&merge, JOB_LIMIT), "COMPLETED");
    let on_slurm = start.elapsed();

    let full = cluster.dir().join("full");
    let start = Instant::now();
    let status = Command::new(advlens)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("eval")
        .args(eval_args)
        .arg("--json")
        .arg(full.with_extension("json"))
        .arg("--per-image")
        .arg(full.with_extension("jsonl"))
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    note(&format!(
        "{SHARDS} shards and the merge on Slurm: {:.1} s; unsharded: {:.1} s",
        on_slurm.as_secs_f64(),
        start.elapsed().as_secs_f64()
    ));

    let (images, clean, rows) = summary(&full.with_extension("json"));
    assert_eq!(images, 200);
    assert_eq!(summary(&out.join("merged.json")), (images, clean, rows));

    let unsharded = per_image(&[full.with_extension("jsonl")]);
    assert_eq!(
        unsharded.len(),
        200,
        "one line per image for the one attack"
    );
    let files: Vec<PathBuf> = (0..SHARDS).map(|i| shard_file(&out, i, "jsonl")).collect();
    for f in &files {
        assert!(!lines(f).is_empty(), "{} is empty", f.display());
    }
    let sharded = per_image(&files);
    for (s, u) in sharded.iter().zip(&unsharded) {
        assert_eq!(s, u);
    }
    assert_eq!(
        sharded.len(),
        unsharded.len(),
        "an image in two shards, or in none"
    );
}
