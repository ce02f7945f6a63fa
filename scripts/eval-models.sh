#!/usr/bin/env bash
# Evaluates the shipped models (assets/models/) on Fashion-MNIST test images at the usual
# L∞ budget ε = 0.1: clean, PGD-10, FGSM and PGD-50 accuracy, plus per-tap amplification under
# PGD-10. Writes NAME.eval.md and NAME.eval.json beside each model (NAME.full.eval.* for the whole
# test set). Needs scripts/fetch-data.sh.
# Usage: scripts/eval-models.sh [N]   (first N test images; default all 10 000)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
n=()
suffix=full.eval
[ $# -ge 1 ] && n=(--n "$1") && suffix=eval
for m in clean pgd pgd-denoise; do
  f="assets/models/$m.safetensors"
  [ -f "$f" ] || { echo "skipping $m: $f does not exist (scripts/train-models.sh)"; continue; }
  "$bin" eval --model "$f" "${n[@]}" --attacks pgd10,fgsm,pgd50 --eps 0.1 --seed 0 \
    --amplification --json "assets/models/$m.$suffix.json" | tee "assets/models/$m.$suffix.md"
done
