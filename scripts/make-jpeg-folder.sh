#!/usr/bin/env bash
# Writes an image folder of JPEGs made from the four shipped photos (crops scaled to a shorter
# side of 300 to 450 pixels, quality 90, one sub-folder per photo), for timing evaluation on
# image files with `advlens bench --data DIR`. The same N gives the same files.
# Usage: scripts/make-jpeg-folder.sh [DIR] [N]   (default data/jpegs-1000, 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-data/jpegs-1000}"
n="${2:-1000}"
cargo build --release --quiet
target/release/advlens bench --make-jpegs "$dir" --n "$n"
