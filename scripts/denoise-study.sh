#!/usr/bin/env bash
# Do the denoise blocks help this network, beyond the spread between training runs? Every run is
# the shipped models' recipe (scripts/recipe.sh: PGD-7 training at ε = 0.1) shortened to 5 epochs
# so that a run fits (40-60 minutes alone on a 2-core machine), with one change each:
#   1. the margin question first: no denoise blocks (baseline) against the shipped non-local
#      blocks after stages 1 and 2, three seeds each;
#   2. the other operations in the same place, one seed each (add seeds, with SEEDS below, for
#      any within two standard deviations of the best);
#   3. the placement question: blocks after every stage, stage 0 included, with the cheap mean
#      and median operations, and after every residual block.
# Each run is resumable (start the script again after an interruption: a finished model or eval
# is never redone, an unfinished training resumes from its checkpoint). Writes OUT/NAME.safetensors
# and OUT/NAME.eval.md/.json (clean, PGD-10, FGSM and PGD-50 accuracy on the first N test images,
# with the relative feature noise at every tap, each denoise block's input, operation output and
# output among them), and OUT/summary.md: mean ± sd over the seeds of each configuration
# (scripts/study-summary.py).
#   scripts/denoise-study.sh [OUT_DIR] [N]   (default runs/denoise-study-5ep, N = 2000)
#   ONLY="baseline-seed1 nonlocal-s12-seed1" scripts/denoise-study.sh   (a subset, in that order)
#   SEEDS="mean-s12:1,2" scripts/denoise-study.sh   (more seeds of a configuration)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/denoise-study-5ep}"
n="${2:-2000}"
mkdir -p "$out"
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
# shellcheck source=scripts/recipe.sh
. scripts/recipe.sh
# The recipe's seed is replaced per run.
base=()
skip=0
for a in "${recipe[@]}"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  if [ "$a" = --seed ]; then skip=1; continue; fi
  base+=("$a")
done
base+=(--mode pgd --attack-steps 7 --epochs 5)
stages12="--placement after-stage --denoise-stages 1,2"
declare -A runs=(
  [baseline]="--placement none"
  [nonlocal-s12]="$stages12"
  [dot-s12]="$stages12 --denoise dot_product"
  [mean-s12]="$stages12 --denoise mean"
  [median-s12]="$stages12 --denoise median"
  [bilateral-s12]="$stages12 --denoise bilateral"
  [mean-s012]="--placement after-stage --denoise mean"
  [median-s012]="--placement after-stage --denoise median"
  [nonlocal-every-block]="--placement after-every-block --denoise-stages 1,2"
)
default_order=(baseline nonlocal-s12 baseline-seed1 nonlocal-s12-seed1 baseline-seed2
  nonlocal-s12-seed2 dot-s12 mean-s12 median-s12 bilateral-s12 mean-s012 median-s012
  nonlocal-every-block)
# shellcheck disable=SC2206 # ONLY is a list of names
order=(${ONLY:-${default_order[*]}})
for spec in ${SEEDS:-}; do
  IFS=, read -r -a extra <<< "${spec#*:}"
  for s in "${extra[@]}"; do order+=("${spec%%:*}-seed$s"); done
done
for run in "${order[@]}"; do
  config="${run%-seed*}"
  seed=0
  [ "$config" != "$run" ] && seed="${run##*-seed}"
  [ -n "${runs[$config]+x}" ] || { echo "unknown run $run (configurations: ${!runs[*]})"; exit 2; }
  file="$out/$run.safetensors"
  if [ ! -f "$file" ]; then
    resume=()
    [ -f "$out/$run.ckpt.safetensors" ] && resume=(--resume)
    # shellcheck disable=SC2086 # the configuration's flags are split on purpose
    "$bin" train --out "$file" "${base[@]}" --seed "$seed" ${runs[$config]} "${resume[@]}"
  fi
  if [ ! -f "$out/$run.eval.md" ]; then
    "$bin" eval --model "$file" --engine cpu --data data/fashion-mnist --n "$n" \
      --attacks pgd10,fgsm,pgd50 --eps 0.1 --seed 0 --amplification \
      --json "$out/$run.eval.json.tmp" > "$out/$run.eval.md.tmp"
    mv "$out/$run.eval.json.tmp" "$out/$run.eval.json"
    mv "$out/$run.eval.md.tmp" "$out/$run.eval.md"
  fi
done
python3 scripts/study-summary.py "$out" | tee "$out/summary.md"
