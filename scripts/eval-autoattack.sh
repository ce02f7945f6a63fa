#!/usr/bin/env bash
# Evaluates the three shipped models under AutoAttack (standard, without FAB-T: APGD-CE →
# APGD-T → Square, each on the images still robust) and PGD-50 for comparison, L∞ ε = 0.1, on
# the cpu engine, seed 0. Writes NAME.autoattack.md/.json beside each model in assets/models.
# Data: the 500 bundled test images by default (no download), or the first N images of the
# Fashion-MNIST test set fetched by scripts/fetch-data.sh.
# Usage: scripts/eval-autoattack.sh [N]   (N: first N test images of data/fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
data=(--data bundled)
suffix=
if [ $# -ge 1 ]; then data=(--data data/fashion-mnist --n "$1"); suffix=".$1"; fi
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
for name in clean pgd pgd-denoise; do
  out="assets/models/$name$suffix.autoattack"
  "$bin" eval --engine cpu --model "builtin:$name" "${data[@]}" --eps 0.1 --seed 0 \
    --attacks pgd50,autoattack --batch 100 --json "$out.json.tmp" | tee "$out.md.tmp"
  mv "$out.json.tmp" "$out.json"
  mv "$out.md.tmp" "$out.md"
done
