#!/usr/bin/env bash
# Evaluates the three shipped models under AutoAttack (standard, without FAB-T: APGD-CE →
# APGD-T → Square, each on the images still robust) and PGD-50 for comparison, L∞ ε = 0.1, on
# the cpu engine, seed 0. Writes NAME.autoattack.md/.json beside each model in assets/models.
# Data: the first N (default 200) of the 500 bundled test images (no download), or with --full
# DATA the first N images of the Fashion-MNIST test set fetched by scripts/fetch-data.sh into
# DATA. On the 2-core development machine beside other jobs, 200 images took about half an hour
# a robust model (Square's 5000 queries on every still-robust image dominate).
# Each run keeps its per-image results in runs/NAME.N.autoattack.jsonl: an interrupted run
# started again resumes where it stopped (delete the file to start over).
# Usage: scripts/eval-autoattack.sh [N] [--data DIR]   [MODEL...]
set -euo pipefail
cd "$(dirname "$0")/.."
n=200
data=(--data bundled)
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data=(--data "$2"); shift 2 ;;
    [0-9]*) n="$1"; shift ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(pgd-denoise pgd clean)
suffix=".$n"
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
mkdir -p runs
for name in "${models[@]}"; do
  out="assets/models/$name$suffix.autoattack"
  "$bin" eval --engine cpu --model "builtin:$name" "${data[@]}" --n "$n" --eps 0.1 --seed 0 \
    --attacks pgd50,autoattack --batch 50 --per-image "runs/$name$suffix.autoattack.jsonl" \
    --json "$out.json.tmp" | tee "$out.md.tmp"
  mv "$out.json.tmp" "$out.json"
  mv "$out.md.tmp" "$out.md"
done
