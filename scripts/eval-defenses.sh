#!/usr/bin/env bash
# Evaluates the shipped clean and PGD models behind each input-transformation defence (issue
# #20), L∞ ε = 0.1, PGD-50, cpu engine, seed 0, one table per model with a row per defence and
# gradient mode: no defence; JPEG q75, 5-bit and 3-bit depth, 3×3 median, each attacked with
# naive gradients (zero through JPEG and bit depth: what an evaluation that ignores the defence
# computes) and with BPDA; random resize and pad (exact gradients) with EOT 1 and EOT 10. The
# clean column and every random-defence number are re-predicted through the defence, the random
# ones as mean ± sd over 10 draws. Writes NAME.defenses.md/.json into assets/models (or --out).
# Data: the first N (default 2000) images of the Fashion-MNIST test set fetched by
# scripts/fetch-data.sh into data/fashion-mnist, or --data DIR, or --data bundled (the 500
# bundled test images, no download). Each defence row keeps its per-image results in
# runs/NAME.N.defenses.ROW.jsonl: an interrupted run started again resumes where it stopped.
# Usage: scripts/eval-defenses.sh [N] [--data DIR|bundled] [--out DIR] [MODEL...]
#        (MODEL: a builtin name, default: clean pgd)
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/eval-defenses.sh [N] [--data DIR|bundled] [--out DIR] [MODEL...]"
n=2000
data=data/fashion-mnist
out_dir=assets/models
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; data="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; out_dir="$2"; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    [0-9]*) n="$1"; shift ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(clean pgd)
mkdir -p "$out_dir" runs
bin="${ADVLENS_BIN:-target/release/advlens}"
[ -x "$bin" ] || cargo build --release
defenses=(--defense none --defense jpeg:75 --defense bits:5 --defense bits:3 --defense median:3
          --defense resize-pad)
for name in "${models[@]}"; do
  out="$out_dir/$name.defenses"
  # shellcheck disable=SC2054 # the commas separate a flag's values
  args=(eval --engine cpu --model "builtin:$name" --data "$data" --n "$n" --eps 0.1 --seed 0
        --attacks pgd50 --batch 100 "${defenses[@]}" --gradient naive,bpda --eot 1,10
        --defense-draws 10 --per-image "runs/$name.$n.defenses.jsonl")
  # Written to .tmp and moved into place only when the eval finished, so a failed or
  # interrupted run leaves the committed tables as they were.
  {
    echo "command: advlens ${args[*]}"
    echo
    "$bin" "${args[@]}" --json "$out.json.tmp"
  } | tee "$out.md.tmp"
  mv "$out.json.tmp" "$out.json"
  sed "s|^wrote $out.json.tmp$|wrote $out.json|" "$out.md.tmp" > "$out.md"
  rm "$out.md.tmp"
done
