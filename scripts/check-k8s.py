#!/usr/bin/env python3
"""Checks the Kubernetes manifests in deploy/k8s/ without a cluster.

Every file must parse as YAML. The eval Job must be Indexed, its `completions` must equal its
SHARDS, and the merge Job's SHARDS, OUT and volume must match it (the claim defined beside it).
Then each Job's container command runs here under `sh`, as the pod would run it, with the
manifest's environment, OUT in a temporary folder, JOB_COMPLETION_INDEX set, and a stand-in
`advlens` on PATH that records its arguments: shard 2 must run `advlens eval ARGS --shard 2/4
--json OUT/shard-2.json --per-image OUT/shard-2.jsonl`, the merge `advlens merge OUT/merged.json
OUT/shard-0.json ... OUT/shard-3.json`.

Prints what is wrong and exits 1, or prints "k8s manifests ok".
Needs python3-yaml (Debian) or PyYAML.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DIR = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
STAND_IN = '#!/bin/sh\nprintf "%s\\n" "$@" > "$ADVLENS_ARGS"\n'


def load(name: str) -> list:
    with open(DIR / name, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def one(docs: list, kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        sys.exit(f"expected one {kind}, found {len(found)}")
    return found[0]


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def env(job: dict) -> dict:
    """The container's literal environment values (fields taken from the pod are left out)."""
    return {e["name"]: e["value"] for e in container(job).get("env", []) if "value" in e}


def claim(job: dict) -> tuple:
    """The mounted claim and where it is mounted."""
    spec = job["spec"]["template"]["spec"]
    volume = spec["volumes"][0]
    mount = next(m for m in container(job)["volumeMounts"] if m["name"] == volume["name"])
    return volume["persistentVolumeClaim"]["claimName"], mount["mountPath"]


def run(job: dict, extra_env: dict, out: Path) -> list:
    """Runs the container's command and args under sh; returns the stand-in's arguments."""
    bin_dir = out / "bin"
    bin_dir.mkdir(exist_ok=True)
    advlens = bin_dir / "advlens"
    advlens.write_text(STAND_IN)
    advlens.chmod(0o755)
    recorded = out / "args"
    c = container(job)
    variables = {**env(job), **extra_env, "OUT": str(out), "ADVLENS_ARGS": str(recorded)}
    variables["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    subprocess.run(c["command"] + c.get("args", []), env=variables, check=True)
    return recorded.read_text().splitlines()


def main() -> int:
    errors = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            errors.append(what)

    eval_docs = load("eval-indexed-job.yaml")
    merge_docs = load("eval-merge-job.yaml")
    pvc = one(eval_docs, "PersistentVolumeClaim")
    job = one(eval_docs, "Job")
    merge = one(merge_docs, "Job")
    spec = job["spec"]
    shards = int(env(job)["SHARDS"])
    expect(spec.get("completionMode") == "Indexed", "the eval Job is not Indexed")
    expect(spec["completions"] == shards, f"completions {spec['completions']} != SHARDS {shards}")
    expect(int(env(merge)["SHARDS"]) == shards, "the merge Job has another SHARDS")
    expect(env(merge)["OUT"] == env(job)["OUT"], "the merge Job reads another OUT")
    expect(claim(merge) == claim(job), "the merge Job mounts another volume")
    expect(claim(job)[0] == pvc["metadata"]["name"], "the eval Job's claim is not the one defined")
    expect(env(job)["OUT"].startswith(claim(job)[1] + "/"), "OUT is not on the shared volume")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        got = run(job, {"JOB_COMPLETION_INDEX": "2"}, out)
        want = ["eval"] + [str(a) for a in container(job)["args"]] + [
            "--shard", f"2/{shards}",
            "--json", f"{out}/shard-2.json",
            "--per-image", f"{out}/shard-2.jsonl",
        ]
        expect(got == want, f"shard 2 ran advlens {got}, expected {want}")
        got = run(merge, {}, out)
        want = ["merge", f"{out}/merged.json"] + [f"{out}/shard-{i}.json" for i in range(shards)]
        expect(got == want, f"the merge ran advlens {got}, expected {want}")

    for e in errors:
        print(f"deploy/k8s: {e}", file=sys.stderr)
    if not errors:
        print("k8s manifests ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
