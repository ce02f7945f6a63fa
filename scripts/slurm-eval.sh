#!/usr/bin/env bash
# Runs `advlens eval` as a Slurm job array, one task per shard, then merges the shards' reports in
# one job that starts only once every shard succeeded.
#
#   scripts/slurm-eval.sh --shards 4 --out runs/pgd -- --model m.safetensors --attacks pgd50
#
# Task I of N runs `advlens eval ARGS --shard I/N --json OUT/shard-I.json --per-image
# OUT/shard-I.jsonl`; a task that is preempted or requeued starts again with the same per-image
# file and skips the images it already finished. The merge job runs `advlens merge
# OUT/merged.json OUT/shard-0.json ... OUT/shard-(N-1).json`. Logs go to OUT/logs/.
#
# The same file is the batch script of both jobs (sbatch runs a copy of it with `_shard` or
# `_merge` first); everything else on the command line is for the person submitting.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/slurm-eval.sh --shards N --out DIR [options] -- EVAL_ARGS...

Submits an array of N `advlens eval` shards and a merge job that depends on all of them
(sbatch --dependency=afterok), then prints both job ids. Shard I writes DIR/shard-I.json and
DIR/shard-I.jsonl (per image, so a requeued shard resumes); the merge writes DIR/merged.json.
Relative paths in EVAL_ARGS are read from the directory you submit from.

options:
  --shards N            number of shards, one array task each (required)
  --out DIR             output folder, created if missing (required)
  --partition P         Slurm partition for both jobs
  --time T              time limit of each shard and of the merge (sbatch --time, e.g. 2:00:00)
  --cpus-per-task C     CPUs per shard (the cpu engine's thread count follows it)
  --gpus G              GPUs per shard (sbatch --gres=gpu:G)
  --max-parallel K      at most K shards running at once (array throttle %K)
  --sbatch-opt OPT      any other sbatch option for both jobs, repeatable (--sbatch-opt=--account=A)
  --dry-run             print the two sbatch commands instead of submitting
  -h, --help            this text

environment:
  ADVLENS               the advlens binary (default: target/release/advlens in this repository;
                        ADVLENS_BIN is read too). Every node must see it at the same path, as
                        it must see DIR.
EOF
}

die() {
  echo "slurm-eval.sh: $*" >&2
  exit 2
}

# Inside the array: one shard. Arguments: N OUT BIN EVAL_ARGS...
run_shard() {
  local n=$1 out=$2 bin=$3
  shift 3
  local id=${SLURM_ARRAY_TASK_ID:?run_shard must run as a Slurm array task}
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ] && [ -z "${RAYON_NUM_THREADS:-}" ]; then
    export RAYON_NUM_THREADS=$SLURM_CPUS_PER_TASK
  fi
  echo "shard $id/$n on $(hostname) (job ${SLURM_JOB_ID:-?}, restart ${SLURM_RESTART_COUNT:-0})"
  exec "$bin" eval "$@" --shard "$id/$n" \
    --json "$out/shard-$id.json" --per-image "$out/shard-$id.jsonl"
}

# The dependent job: merge the N shard reports. Arguments: N OUT BIN
run_merge() {
  local n=$1 out=$2 bin=$3 i
  local reports=()
  for ((i = 0; i < n; i++)); do
    reports+=("$out/shard-$i.json")
  done
  exec "$bin" merge "$out/merged.json" "${reports[@]}"
}

case "${1:-}" in
  _shard) shift; run_shard "$@" ;;
  _merge) shift; run_merge "$@" ;;
esac

shards=
out=
dry_run=0
common=()  # sbatch options for both jobs
array=()   # sbatch options for the shards only
max_parallel=
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --shards | --out | --partition | --time | --cpus-per-task | --gpus | --max-parallel | --sbatch-opt)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --shards) shards=$2 ;;
        --out) out=$2 ;;
        --partition) common+=(--partition "$2") ;;
        --time) common+=(--time "$2") ;;
        --cpus-per-task) array+=(--cpus-per-task "$2") ;;
        --gpus) array+=(--gres "gpu:$2") ;;
        --max-parallel) max_parallel=$2 ;;
        --sbatch-opt) common+=("$2") ;;
      esac
      shift 2 ;;
    --sbatch-opt=*) common+=("${1#--sbatch-opt=}"); shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) die "unknown option $1 (the eval arguments go after --; see --help)" ;;
  esac
done
eval_args=("$@")

[[ $shards =~ ^[1-9][0-9]*$ ]] || die "--shards needs a positive whole number (see --help)"
[ -n "$out" ] || die "--out DIR is required (see --help)"
[ -z "$max_parallel" ] || [[ $max_parallel =~ ^[1-9][0-9]*$ ]] ||
  die "--max-parallel needs a positive whole number"
for a in "${eval_args[@]}"; do
  case "$a" in
    --shard | --shard=* | --json | --json=* | --per-image | --per-image=*)
      die "$a is set per shard by this script; leave it out of the eval arguments" ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${ADVLENS:-${ADVLENS_BIN:-$here/target/release/advlens}}
[ -x "$bin" ] || die "no advlens binary at $bin (cargo build --release, or set ADVLENS)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
case $out in
  /*) ;;
  *) out=$PWD/$out ;;
esac
self=$here/scripts/$(basename "$0")

range="0-$((shards - 1))${max_parallel:+%$max_parallel}"
shard_cmd=(sbatch --parsable --job-name advlens-eval --array "$range" --requeue
  --open-mode append --output "$out/logs/shard-%a.log" "${common[@]}" "${array[@]}"
  "$self" _shard "$shards" "$out" "$bin" "${eval_args[@]}")
merge_cmd=(sbatch --parsable --job-name advlens-merge --kill-on-invalid-dep yes
  --output "$out/logs/merge.log" "${common[@]}")
merge_args=("$self" _merge "$shards" "$out" "$bin")

if [ "$dry_run" = 1 ]; then
  printf '%q ' "${shard_cmd[@]}"
  echo
  printf '%q ' "${merge_cmd[@]}" --dependency afterok:ARRAY_JOB_ID "${merge_args[@]}"
  echo
  exit 0
fi

mkdir -p "$out/logs"
# --parsable prints "id" or "id;cluster".
array_id=$("${shard_cmd[@]}")
array_id=${array_id%%;*}
if ! merge_id=$("${merge_cmd[@]}" --dependency "afterok:$array_id" "${merge_args[@]}"); then
  scancel "$array_id" || true
  die "submitting the merge job failed; cancelled the shards (job $array_id)"
fi
merge_id=${merge_id%%;*}
echo "shards: job $array_id (array $range), logs in $out/logs/shard-I.log"
echo "merge:  job $merge_id after every shard succeeded, writes $out/merged.json"
