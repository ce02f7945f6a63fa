#!/usr/bin/env bash
# Trains the models shipped in assets/models/ (Fashion-MNIST, from scripts/fetch-data.sh), one
# after the other, with one recipe: a fresh network (PyTorch-style start), all 60 000 training
# images, 5 epochs of SGD on one cosine schedule with a 0.2-epoch warm-up, seed 0. The models
# differ only in the objective and the denoise blocks. Each training is resumable: run the script
# again after an interruption and it continues from the checkpoint. Usage:
#   scripts/train-models.sh [OUT_DIR]   (default assets/models)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-assets/models}"
mkdir -p "$out"
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
recipe=(--eps 0.1 --epochs 5 --batch 128 --lr 0.1 --schedule cosine --warmup 0.2 --val 500
  --seed 0 --checkpoint-every 25)
train() {
  local file="$out/$1.safetensors"; shift
  if [ -f "$file" ]; then echo "$file exists"; return; fi
  local resume=()
  [ -f "${file%.safetensors}.ckpt.safetensors" ] && resume=(--resume)
  "$bin" train --out "$file" "${recipe[@]}" "$@" "${resume[@]}"
}
# (c) PGD-7 adversarial training with non-local Gaussian denoise blocks after stages 1 and 2
# (14×14 and 7×7), R152-Denoise's placement.
train pgd-denoise --mode pgd --attack-steps 7 --placement after-stage --denoise-stages 1,2
# (b) its baseline: the same network and training without denoise blocks.
train pgd --mode pgd --attack-steps 7 --placement none
# (a) the same network, clean-trained.
train clean --mode clean --placement none
