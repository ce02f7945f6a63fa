#!/usr/bin/env python3
"""Summarises a denoise study (scripts/denoise-study.sh): one row per configuration, its runs
grouped by name (NAME, NAME-seed1, NAME-seed2, ...), each accuracy as mean ± sample standard
deviation over the seeds that finished, and the relative feature noise ‖ΔA‖/‖A‖ under PGD-10 at
each denoise block's input, operation output and output (means over the seeds). A second table
says, for each configuration, whether its difference from the baseline exceeds two standard
deviations of the spread between seeds.

    python3 scripts/study-summary.py OUT_DIR
"""

import json
import math
import re
import sys
from pathlib import Path

ATTACKS = ["pgd10", "fgsm", "pgd50"]


def accuracies(report):
    """Clean and per-attack accuracy in %, keyed clean/pgd10/fgsm/pgd50."""
    out = {"clean": 100.0 * report["clean_correct"] / report["images"]}
    for row in report["rows"]:
        a = row["attack"]
        key = a["kind"] + (str(a["steps"]) if a["kind"] == "pgd" else "")
        out[key] = 100.0 * row["correct"] / row["images"]
    return out


def noise(report):
    """Relative noise at each denoise block's input, operation output and output, keyed by
    (block, part)."""
    out = {}
    for b in report.get("block_noise") or []:
        for part in ("input", "op", "output"):
            if b.get(part) is not None:
                out[(b["block"], part)] = b[part]
    return out


def mean_sd(values):
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def text(values):
    if not values:
        return "–"
    m, sd = mean_sd(values)
    return f"{m:.2f}" if sd is None else f"{m:.2f} ± {sd:.2f}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    groups = {}
    for f in sorted(out.glob("*.eval.json")):
        name = f.name[: -len(".eval.json")]
        config = re.sub(r"-seed\d+$", "", name)
        report = json.loads(f.read_text())
        if not report.get("complete", True):
            continue
        groups.setdefault(config, []).append((accuracies(report), noise(report)))
    if not groups:
        sys.exit(f"no finished runs in {out}")
    keys = ["clean"] + ATTACKS
    print("| configuration | seeds | clean % | PGD-10 % | FGSM % | PGD-50 % | noise in → op → out (per block) |")
    print("|---|---|---|---|---|---|---|")
    for config, runs in groups.items():
        cells = [text([r[0][k] for r in runs if k in r[0]]) for k in keys]
        blocks = sorted({b for _, n in runs for (b, _) in n})
        per_block = []
        for b in blocks:
            vals = [mean_sd([n[(b, p)] for _, n in runs if (b, p) in n])[0]
                    for p in ("input", "op", "output")
                    if any((b, p) in n for _, n in runs)]
            per_block.append(f"{b.replace('_denoise', '')}: " + " → ".join(f"{v:.3f}" for v in vals))
        print(f"| {config} | {len(runs)} | " + " | ".join(cells) + f" | {'; '.join(per_block) or '–'} |")
    base = groups.get("baseline")
    if not base:
        return
    spreads = [mean_sd([r[0]["pgd50"] for r in runs])[1] for runs in groups.values()
               if len(runs) > 1 and all("pgd50" in r[0] for r in runs)]
    spread = max((s for s in spreads if s is not None), default=None)
    base_pgd50 = [r[0]["pgd50"] for r in base if "pgd50" in r[0]]
    if not base_pgd50:
        return
    b = mean_sd(base_pgd50)[0]
    print("\n| configuration | Δ PGD-50 vs baseline (points) | beyond 2 sd of the seed spread? |")
    print("|---|---|---|")
    for config, runs in groups.items():
        vals = [r[0]["pgd50"] for r in runs if "pgd50" in r[0]]
        if config == "baseline" or not vals:
            continue
        d = mean_sd(vals)[0] - b
        verdict = "no seed spread yet" if spread is None else ("yes" if abs(d) > 2 * spread else "no")
        print(f"| {config} | {d:+.2f} | {verdict} |")
    if spread is not None:
        print(f"\nseed spread used: the largest standard deviation of PGD-50 over seeds, {spread:.2f} points")


if __name__ == "__main__":
    main()
