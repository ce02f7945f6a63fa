#!/usr/bin/env bash
# Trains the models shipped in assets/models/ (Fashion-MNIST, from scripts/fetch-data.sh), one
# after the other, each resumable (run the script again after an interruption). Usage:
#   scripts/train-models.sh [OUT_DIR]   (default assets/models)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-assets/models}"
mkdir -p "$out"
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
common=(--epochs 1 --batch 128 --lr 0.1 --schedule cosine --seed 0 --val 500)
train() {
  local name="$1"; shift
  if [ -f "$out/$name.safetensors" ]; then echo "$out/$name.safetensors exists"; return; fi
  local resume=()
  [ -f "$out/$name.ckpt.safetensors" ] && resume=(--resume)
  "$bin" train --out "$out/$name.safetensors" "${common[@]}" "$@" "${resume[@]}"
  rm -f "$out/$name.ckpt.safetensors"
}
# (c) PGD-trained with non-local Gaussian denoise blocks after stages 1 and 2 (14×14, 7×7).
train pgd-denoise --limit 45000 --mode pgd --eps 0.1 --attack-steps 7 --placement after-stage --denoise-stages 1,2
# (b) the same network without denoise blocks, PGD-trained.
train pgd --limit 45000 --mode pgd --eps 0.1 --attack-steps 7 --placement none
# (a) the same network, clean-trained.
train clean --mode clean --placement none
