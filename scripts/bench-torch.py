#!/usr/bin/env python3
"""Times in PyTorch the convolution shapes that `advlens bench --conv` times, so that the
advlens/PyTorch ratio can be quoted from one machine. Optional; not part of CI.

Setup (CPU wheels from the package registry):
    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch
Run, back to back with advlens on the same machine:
    .venv-torch/bin/python scripts/bench-torch.py --threads 2
    ./target/release/advlens bench --conv --no-attack --batch 1
Prints a markdown table: forward, input-gradient only (aten.convolution_backward with
output_mask [True, False, False]) and forward + input gradient, median milliseconds.
"""

import argparse
import statistics
import time

import torch

CASES = [
    # (name, c_in, size, c_out, kernel, stride)
    ("3x3 64->64 56² s1", 64, 56, 64, 3, 1),
    ("1x1 256->64 56²", 256, 56, 64, 1, 1),
    ("3x3 128->128 28² s2", 128, 28, 128, 3, 2),
]


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=21)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| conv | batch | torch fwd ms | torch input-grad ms | torch fwd+input-grad ms |")
    print("|---|---|---|---|---|")
    for name, ci, size, co, k, s in CASES:
        for b in (1, 16):
            x = torch.rand(b, ci, size, size)
            w = torch.rand(co, ci, k, k) / (ci * k * k)
            top, bottom = same_pads(size, k, s)
            xp = torch.nn.functional.pad(x, (top, bottom, top, bottom))
            y = torch.nn.functional.conv2d(xp, w, stride=s)
            dy = torch.rand_like(y)

            def fwd():
                torch.nn.functional.conv2d(xp, w, stride=s)

            def dx():
                torch.ops.aten.convolution_backward(
                    dy, xp, w, None, [s, s], [0, 0], [1, 1], False, [0, 0], 1,
                    [True, False, False])

            def both():
                fwd()
                dx()

            print(f"| {name} | {b} | {median_ms(fwd, args.reps):.2f} | "
                  f"{median_ms(dx, args.reps):.2f} | {median_ms(both, args.reps):.2f} |")


if __name__ == "__main__":
    main()
