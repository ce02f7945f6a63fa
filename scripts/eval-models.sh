#!/usr/bin/env bash
# Evaluates the shipped models (or retrained ones in another folder) on Fashion-MNIST test images
# at the usual L∞ budget ε = 0.1, on the cpu engine (what the committed tables were made with):
#   NAME[.full].eval.md/.json            clean, PGD-10, FGSM and PGD-50 accuracy, plus per-tap
#                                        amplification under PGD-10
#   NAME[.full].targeted.eval.md/.json   targeted PGD-10 towards a random other class: accuracy
#                                        and target success rate
# beside each model; `.full` for the whole test set. Needs scripts/fetch-data.sh.
# Usage: scripts/eval-models.sh [--dir DIR] [N]   (models in DIR, default assets/models; first N
#        test images, default all 10 000)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=assets/models
if [ "${1:-}" = --dir ]; then dir="$2"; shift 2; fi
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
n=()
full=full.
[ $# -ge 1 ] && n=(--n "$1") && full=
common=(--engine cpu --eps 0.1 --seed 0 "${n[@]}")
for m in clean pgd pgd-denoise; do
  f="$dir/$m.safetensors"
  [ -f "$f" ] || { echo "skipping $m: $f does not exist (scripts/train-models.sh)"; continue; }
  "$bin" eval --model "$f" "${common[@]}" --attacks pgd10,fgsm,pgd50 --amplification \
    --json "$dir/$m.${full}eval.json" | tee "$dir/$m.${full}eval.md"
  "$bin" eval --model "$f" "${common[@]}" --attacks pgd10 --target random \
    --json "$dir/$m.${full}targeted.eval.json" | tee "$dir/$m.${full}targeted.eval.md"
done
