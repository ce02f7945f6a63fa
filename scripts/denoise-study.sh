#!/usr/bin/env bash
# Do the denoise blocks help this network? The shipped PGD models (scripts/train-models.sh)
# compare non-local blocks after stages 1 and 2 with none. This varies what Xie et al. vary: the
# operation, where the blocks go, and the training length, each run with the shipped models'
# recipe and one change, each resumable (run the script again after an interruption). Every run is
# a 10-epoch PGD-7 training like the shipped ones (5 for the *-5ep pair): 2-3.5 hours each on a
# 2-core machine. Writes OUT/NAME.safetensors, OUT/NAME.eval.md/.json, and OUT/summary.md with
# one row per finished run.
#   scripts/denoise-study.sh [OUT_DIR] [N]   (default target/denoise-study-10ep; first N test images, 2000)
#   ONLY="mean-s12 median-s12" scripts/denoise-study.sh   (a subset, in that order)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/denoise-study-10ep}"  # a new name: runs of the older 5-epoch recipe are not reused
n="${2:-2000}"
mkdir -p "$out"
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
# shellcheck source=scripts/recipe.sh
. scripts/recipe.sh
recipe+=(--mode pgd --attack-steps 7)
stages12=(--placement after-stage --denoise-stages 1,2)
declare -A runs=(
  [mean-s12]="--epochs 10 ${stages12[*]} --denoise mean"
  [median-s12]="--epochs 10 ${stages12[*]} --denoise median"
  [dot-s12]="--epochs 10 ${stages12[*]} --denoise dot_product"
  [bilateral-s12]="--epochs 10 ${stages12[*]} --denoise bilateral"
  [nonlocal-s2]="--epochs 10 --placement after-stage --denoise-stages 2"
  [mean-s012]="--epochs 10 --placement after-stage --denoise mean"
  [baseline-5ep]="--epochs 5 --placement none"
  [nonlocal-s12-5ep]="--epochs 5 ${stages12[*]}"
)
order=(${ONLY:-mean-s12 median-s12 dot-s12 bilateral-s12 nonlocal-s2 mean-s012 baseline-5ep nonlocal-s12-5ep})
for name in "${order[@]}"; do
  [ -n "${runs[$name]+x}" ] || { echo "unknown run $name (known: ${!runs[*]})"; exit 2; }
  file="$out/$name.safetensors"
  if [ ! -f "$file" ]; then
    resume=()
    [ -f "$out/$name.ckpt.safetensors" ] && resume=(--resume)
    # shellcheck disable=SC2086 # the run's flags are split on purpose
    "$bin" train --out "$file" "${recipe[@]}" ${runs[$name]} "${resume[@]}"
  fi
  if [ ! -f "$out/$name.eval.md" ]; then
    "$bin" eval --model "$file" --engine cpu --n "$n" --attacks pgd10,fgsm,pgd50 --eps 0.1 --seed 0 \
      --amplification --json "$out/$name.eval.json" > "$out/$name.eval.md.tmp"
    mv "$out/$name.eval.md.tmp" "$out/$name.eval.md"
  fi
done
{
  echo "| run | flags | clean % | PGD-10 % | FGSM % | PGD-50 % |"
  echo "|---|---|---|---|---|---|"
  for name in "${order[@]}"; do
    [ -f "$out/$name.eval.md" ] || continue
    accs=$(awk -F'|' '$2 ~ /(clean|pgd|fgsm)/ && $8 ~ /[0-9]/ { gsub(/ /, "", $8); printf "| %s ", $8 }' \
      "$out/$name.eval.md")
    echo "| $name | \`${runs[$name]}\` $accs|"
  done
} > "$out/summary.md"
cat "$out/summary.md"
