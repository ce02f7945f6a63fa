#!/usr/bin/env bash
# Trains the models shipped in assets/models/ (Fashion-MNIST, from scripts/fetch-data.sh), one
# after the other, with one recipe (scripts/recipe.sh, 10 epochs). The models differ only in the
# objective and the denoise blocks. Each training is resumable: run the script again after an
# interruption and it continues from the checkpoint. A model whose file exists is skipped, so to
# retrain the shipped ones give another folder, then evaluate it with
# `scripts/eval-models.sh --dir OUT_DIR`. Usage:
#   scripts/train-models.sh [OUT_DIR]   (default target/retrain)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/retrain}"
mkdir -p "$out"
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
# shellcheck source=scripts/recipe.sh
. scripts/recipe.sh
train() {
  local file="$out/$1.safetensors"; shift
  if [ -f "$file" ]; then echo "$file exists"; return; fi
  local resume=()
  [ -f "${file%.safetensors}.ckpt.safetensors" ] && resume=(--resume)
  "$bin" train --out "$file" "${recipe[@]}" --epochs 10 "$@" "${resume[@]}"
}
# (a) clean-trained (the cheapest, so first).
train clean --mode clean --placement none
# (b) PGD-7 adversarial training (Madry et al.) without denoise blocks: the baseline of (c).
train pgd --mode pgd --attack-steps 7 --placement none
# (c) the same training with non-local Gaussian denoise blocks after stages 1 and 2 (14×14 and
# 7×7), R152-Denoise's placement.
train pgd-denoise --mode pgd --attack-steps 7 --placement after-stage --denoise-stages 1,2
