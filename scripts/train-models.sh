#!/usr/bin/env bash
# Trains the models shipped in assets/models/ (Fashion-MNIST, from scripts/fetch-data.sh), one
# after the other, each resumable (run the script again after an interruption). The denoise model
# trains 5 epochs over all images; the pgd baseline (for now) trains in two stages of one epoch
# over the first 45 000 training images each (the second starts from the first with a fresh
# cosine schedule and another seed); stage-1 files go to target/train-models/. Usage:
#   scripts/train-models.sh [OUT_DIR]   (default assets/models)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-assets/models}"
work=target/train-models
mkdir -p "$out" "$work"
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
# The shipped files were made before `--fresh-init pytorch` became the default; this keeps their
# start (residual BN gamma 0, N(0, 0.01^2) classifier) so the script reproduces them.
common=(--epochs 1 --batch 128 --lr 0.1 --schedule cosine --val 500 --fresh-init tensorpack)
pgd=(--limit 45000 --mode pgd --eps 0.1 --attack-steps 7)
train() {
  local file="$1"; shift
  if [ -f "$file" ]; then echo "$file exists"; return; fi
  local resume=()
  [ -f "${file%.safetensors}.ckpt.safetensors" ] && resume=(--resume)
  "$bin" train --out "$file" "${common[@]}" "$@" "${resume[@]}"
}
# (c) PGD-trained with non-local Gaussian denoise blocks after stages 1 and 2 (14×14, 7×7): the
# longer recipe (fresh PyTorch-style start, all 60 000 images, one cosine schedule over 5 epochs).
long=(--mode pgd --eps 0.1 --attack-steps 7 --epochs 5 --batch 128 --lr 0.1 --schedule cosine
  --warmup 0.2 --val 500 --seed 0 --checkpoint-every 25)
if [ -f "$out/pgd-denoise.safetensors" ]; then echo "$out/pgd-denoise.safetensors exists"; else
  resume=(); [ -f "$out/pgd-denoise.ckpt.safetensors" ] && resume=(--resume)
  "$bin" train --out "$out/pgd-denoise.safetensors" "${long[@]}" \
    --placement after-stage --denoise-stages 1,2 "${resume[@]}"
fi
# Its fair baseline, the same longer recipe without denoise blocks, is training and will replace
# pgd.safetensors: "$bin" train --out "$out/pgd.safetensors" "${long[@]}" --placement none
# (b) the same network without denoise blocks, PGD-trained with the earlier short recipe.
train "$work/pgd-stage1.safetensors" --seed 0 "${pgd[@]}" --placement none
train "$out/pgd.safetensors" --seed 1 "${pgd[@]}" --init "$work/pgd-stage1.safetensors"
# (a) the same network, clean-trained (one epoch over all 60 000 images).
train "$out/clean.safetensors" --seed 0 --mode clean --placement none
