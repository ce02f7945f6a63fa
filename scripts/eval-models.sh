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
usage="usage: scripts/eval-models.sh [--dir DIR] [N]"
dir=assets/models
n=()
full=full.
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; dir="$2"; shift 2 ;;
    [0-9]*) [ ${#n[@]} -eq 0 ] || { echo "$usage" >&2; exit 2; }; n=(--n "$1"); full=; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
# A table is written to NAME.tmp and moved into place only when its eval finished, so a failed or
# interrupted run leaves the committed tables as they were.
run() {  # OUT_BASE, eval arguments...
  local out=$1; shift
  "$bin" eval "$@" --json "$out.json.tmp" | tee "$out.md.tmp"
  mv "$out.json.tmp" "$out.json"
  sed "s|^wrote $out.json.tmp$|wrote $out.json|" "$out.md.tmp" > "$out.md"
  rm "$out.md.tmp"
}
common=(--engine cpu --eps 0.1 --seed 0 "${n[@]}")
for m in clean pgd pgd-denoise; do
  f="$dir/$m.safetensors"
  [ -f "$f" ] || { echo "skipping $m: $f does not exist (scripts/train-models.sh)"; continue; }
  run "$dir/$m.${full}eval" --model "$f" "${common[@]}" --attacks pgd10,fgsm,pgd50 --amplification
  run "$dir/$m.${full}targeted.eval" --model "$f" "${common[@]}" --attacks pgd10 --target random
done
