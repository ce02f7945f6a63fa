#!/usr/bin/env bash
# For a machine with a real GPU (not part of CI): builds advlens, runs the gpu-engine agreement
# tests on the best adapter (a discrete GPU is preferred over integrated and software ones), and
# benchmarks the gpu engine against the cpu engine in the same run on the shipped default model
# and on ResNet-50- and R152-Denoise-shaped networks at 224x224 with random weights (and
# EfficientNet-Lite0 when scripts/fetch-models.sh has fetched it), and profiles the gpu engine
# (device time per kernel family and node from timestamp queries, launches per attack step,
# overhead per launch). Everything it prints also goes to the folder it is given.
#
#   scripts/gpu-check.sh OUT_DIR
#
# Needs a Rust toolchain and a Vulkan (Linux), Metal (macOS) or DX12 (Windows) driver.
set -euo pipefail
out="${1:?usage: scripts/gpu-check.sh OUT_DIR}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
{
  date -u
  uname -a
  nproc
  (command -v nvidia-smi >/dev/null && nvidia-smi -L) || true
  (command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverName|apiVersion') || true
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"
cargo build --release 2>&1 | tail -n 2
bin=target/release/advlens
# Agreement with the cpu engine on the real adapter.
cargo test --release --test gpu 2>&1 | tee "$out/gpu-tests.txt"
# Latency: forward, forward + input gradient, PGD-10, gpu and cpu engines in one run.
"$bin" bench --gpu --executor planned --model builtin:default --batch 1,64 --reps 20 \
  2>&1 | tee "$out/bench-default.md"
"$bin" bench --gpu --executor planned --model builtin:resnet50-random --batch 1 --reps 10 \
  2>&1 | tee "$out/bench-resnet50.md"
"$bin" bench --gpu --executor planned --model builtin:resnet50-random --batch 16 --reps 3 --no-attack \
  2>&1 | tee "$out/bench-resnet50-b16.md"
"$bin" bench --gpu --executor planned --model builtin:r152-denoise-random --batch 1 --reps 3 \
  2>&1 | tee "$out/bench-r152-denoise.md"
effl0=data/models/efficientnet-lite0.pth
if [ -f "$effl0" ]; then
  "$bin" bench --gpu --executor planned --model "$effl0" --batch 1,16 --reps 10 \
    2>&1 | tee "$out/bench-efficientnet-lite0.md"
fi
# Where the gpu engine's time goes: per kernel family, entry point and node.
"$bin" bench --gpu --profile --model builtin:default --batch 1,64 --reps 20 \
  2>&1 | tee "$out/profile-default.md"
"$bin" bench --gpu --profile --model builtin:resnet50-random --batch 1 --reps 5 \
  2>&1 | tee "$out/profile-resnet50.md"
"$bin" bench --gpu --profile --model builtin:r152-denoise-random --batch 1 --reps 3 \
  2>&1 | tee "$out/profile-r152-denoise.md"
if [ -f "$effl0" ]; then
  "$bin" bench --gpu --profile --model "$effl0" --batch 1 --reps 10 \
    2>&1 | tee "$out/profile-efficientnet-lite0.md"
fi
echo "results in $out"
