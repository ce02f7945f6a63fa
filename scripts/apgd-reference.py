#!/usr/bin/env python3
"""Writes tests/data/attacks/apgd-reference.npz: runs of AutoAttack's own APGD (fra31/auto-attack,
autoattack/autopgd_base.py, APGDAttack and APGDAttack_targeted) on the shipped `builtin:pgd`
model, from start points fixed here, so that tests/apgd_reference.rs can check that advlens's APGD
(src/attack/apgd.rs) follows the same trajectory. Optional; never run by CI.

Setup (outside the repository):
    python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch numpy
    a copy of the auto-attack repository's `autoattack` package; pass its parent folder with
    --autoattack (it is imported from there, not installed; AutoAttack commit a392200 was used)

Run from the repository root:
    /work/venv-torch/bin/python scripts/apgd-reference.py --autoattack /path/to/auto-attack

The model is built in PyTorch by scripts/torch-train-compare.py (imported, not copied) from
assets/models/pgd.safetensors; the script first checks that its logits on the images equal the
ones advlens's cpu engine gives (tests/apgd_reference.rs checks the stored ones against advlens).

Images: 8 of the bundled Fashion-MNIST test images (assets/fashion-mnist) and their labels,
numbers 0, 1, 4, 6, 10, 50, 71, 75: three the attacks leave robust, 6 (misclassified before any
attack; its 2nd-ranked class is its label, so the targeted DLR has a zero gradient there) and the
first four of the first 80 that a 100-step APGD-CE at ε = 0.1 fools (10, 50, 71, 75), so that the
fooled flags and the returned adversarial points are exercised.

Start points: numpy (PCG64, seed 2020) draws u ~ U[-1, 1] for the L∞ runs and n ~ N(0, 1) for
the L2 run; the start is formed with AutoAttack's own `normalize` as its attack_single_run does,
x + ε·u/(‖u‖∞ + 1e-12) (L∞) or x + ε·n/(‖n‖₂ + 1e-12) (L2), and handed to attack_single_run as its
`x_init` argument, which replaces the drawn start (the draw still happens and is discarded;
AutoAttack then clips the start to [0, 1], as it does its own). No monkeypatching is needed.

attack_single_run returns only (x_best, acc, loss_best, x_best_adv); the per-step losses and the
final step sizes are locals of that function, read from its frame when it returns (sys.settrace
on that one code object), so AutoAttack's code runs unmodified.

Runs (eot 1, ρ 0.75, 100 steps unless said): `ce_linf` APGD-CE L∞ ε 0.1; `dlr_linf` APGD-DLR L∞
ε 0.1; `tdlr_linf` targeted DLR L∞ ε 0.1 with target = the class ranked 2nd by the clean logits;
`ce_l2` APGD-CE L2 ε 1.5; `ce_linf10` APGD-CE L∞ ε 0.1 with 10 steps; `ce_linf1` the same with
1 step (its only checkpoint compares step 0's loss with loss_steps[-1], which for one step is
step 0's own slot, not an empty one); `ce_linf20` and `dlr_linf20` with 20 steps, whose first
checkpoint (after step 4, window 4) has ρ·k = 3 exactly, so that `≤` and `<` in the oscillation
count can differ.

Arrays written (all f32; `R.` is a run's prefix):
    x [8,1,28,28], labels [8], indices [8] (of the bundled images), clean_logits [8,10]
    R.start        the clipped start point
    R.x_best_adv   AutoAttack's x_best_adv (the latest misclassified iterate; the start where none)
    R.x_best       the highest-loss point
    R.fooled       1 where some iterate (the start included) was misclassified
    R.best_loss    the highest loss
    R.loss         [steps, 8] the loss after every step (loss_steps)
    R.step_size    [8] the step size at the end
    tdlr_linf.targets [8]
    dlr.z [m,10], dlr.y [m], dlr.t [m] hand-made logit rows, labels and targets;
    dlr.value, dlr.grad, tdlr.value, tdlr.grad: AutoAttack's dlr_loss / dlr_loss_targeted and
    their gradients with respect to the logits (autograd)
"""

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = "tests/data/attacks/apgd-reference.npz"
INDICES = [0, 1, 4, 6, 10, 50, 71, 75]
SEED = 2020


def load_compare_module():
    """scripts/torch-train-compare.py, whose name has hyphens, as a module."""
    spec = importlib.util.spec_from_file_location("torch_train_compare", f"{HERE}/torch-train-compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def capture_locals(fn, names, *args, **kwargs):
    """Calls `fn(*args, **kwargs)` and returns its result and the values `names` had in its frame
    when it returned."""
    code = fn.__func__.__code__ if hasattr(fn, "__func__") else fn.__code__
    seen = {}

    def local(frame, event, arg):
        if event == "return":
            for n in names:
                v = frame.f_locals[n]
                seen[n] = v.detach().clone() if torch.is_tensor(v) else v
        return local

    def outer(frame, event, arg):
        return local if event == "call" and frame.f_code is code else None

    sys.settrace(outer)
    try:
        out = fn(*args, **kwargs)
    finally:
        sys.settrace(None)
    return out, seen


def start_point(attack, x, noise, eps):
    """AutoAttack's start from the given noise: x + ε·normalize(noise) (clipped later by
    attack_single_run itself; clipped here too, so the fixture holds the point both sides use)."""
    return (x + eps * torch.ones_like(x) * attack.normalize(noise)).clamp(0.0, 1.0)


def run(attack, x, y, start):
    """One attack_single_run from `start`; returns the arrays for the fixture."""
    attack.init_hyperparam(x)
    (x_best, acc, loss_best, x_best_adv), loc = capture_locals(
        attack.attack_single_run, ["loss_steps", "step_size"], x, y, x_init=start.clone()
    )
    return {
        "start": start,
        "x_best_adv": x_best_adv,
        "x_best": x_best,
        "fooled": 1.0 - acc.float(),
        "best_loss": loss_best,
        "loss": loc["loss_steps"],
        "step_size": loc["step_size"].reshape(-1),
    }


def dlr_rows(aa):
    """Hand-made logit rows and AutoAttack's DLR and targeted DLR values and gradients on them."""
    z = np.array(
        [
            [2.0, 1.0, 0.5, -1.0, 0.3, 0.0, -0.5, 1.5, 0.2, -2.0],  # y is the top class
            [0.1, 3.0, 0.5, -1.0, 2.0, 0.0, -0.5, 1.5, 0.2, -2.0],  # y below the top
            [-3.0, -1.0, 4.0, 2.5, 2.0, 0.7, -0.5, 1.5, 0.2, -2.0],  # y last but one
            [10.0, 9.0, 8.5, 8.0, 1.0, 0.0, -5.0, 3.0, 2.0, 7.0],  # large spread
            [0.03, 0.01, 0.02, -0.01, 0.0, 0.015, -0.02, 0.005, 0.025, -0.03],  # tiny spread
            [20.0, 10.0, 2.0, 4.0, 6.0, 0.0, 2.0, 1.5, 0.2, -2.0],  # a shifted, scaled row
        ],
        dtype=np.float32,
    )
    y = np.array([0, 4, 9, 2, 3, 5], dtype=np.int64)
    t = np.array([7, 1, 2, 0, 8, 3], dtype=np.int64)
    out = {"dlr.z": z, "dlr.y": y.astype(np.float32), "dlr.t": t.astype(np.float32)}
    zt = torch.from_numpy(z).requires_grad_(True)
    yt, tt = torch.from_numpy(y), torch.from_numpy(t)
    v = aa.dlr_loss(zt, yt)
    (g,) = torch.autograd.grad(v.sum(), zt)
    out["dlr.value"], out["dlr.grad"] = v.detach().numpy(), g.numpy()
    aa.y_target = tt
    v = aa.dlr_loss_targeted(zt, yt)
    (g,) = torch.autograd.grad(v.sum(), zt)
    out["tdlr.value"], out["tdlr.grad"] = v.detach().numpy(), g.numpy()
    aa.y_target = None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--autoattack", required=True, help="folder holding the autoattack package")
    ap.add_argument("--model", default="assets/models/pgd.safetensors")
    ap.add_argument("--data", default="assets/fashion-mnist")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    sys.path.insert(0, args.autoattack)
    from autoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    torch.set_num_threads(1)
    cmp = load_compare_module()
    weights, meta = cmp.read_safetensors(args.model)
    net = cmp.Net(weights, json.loads(meta["advlens.arch"]))
    for p in net.parameters():
        p.requires_grad_(False)

    def model(v):
        return net(v, train=False)

    images = cmp.read_idx(f"{args.data}/t10k-first500-images-idx3-ubyte.gz")[INDICES]
    labels = cmp.read_idx(f"{args.data}/t10k-first500-labels-idx1-ubyte.gz")[INDICES]
    x = torch.from_numpy(images.astype(np.float32)[:, None] / np.float32(255.0))
    y = torch.from_numpy(labels.astype(np.int64))
    with torch.no_grad():
        clean = model(x)
    print("clean predictions", clean.argmax(1).tolist(), "labels", y.tolist())

    rng = np.random.default_rng(SEED)
    u = torch.from_numpy(rng.uniform(-1.0, 1.0, x.shape).astype(np.float32))
    n = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))

    out = {"x": x, "labels": y.float(), "indices": torch.tensor(INDICES).float(), "clean_logits": clean}
    plan = [
        ("ce_linf", "ce", "Linf", 0.1, 100),
        ("dlr_linf", "dlr", "Linf", 0.1, 100),
        ("tdlr_linf", "dlr-targeted", "Linf", 0.1, 100),
        ("ce_l2", "ce", "L2", 1.5, 100),
        ("ce_linf10", "ce", "Linf", 0.1, 10),
        ("ce_linf1", "ce", "Linf", 0.1, 1),
        ("ce_linf20", "ce", "Linf", 0.1, 20),
        ("dlr_linf20", "dlr", "Linf", 0.1, 20),
    ]
    for name, loss, norm, eps, steps in plan:
        common = dict(n_iter=steps, norm=norm, n_restarts=1, eps=eps, seed=0, eot_iter=1, rho=0.75)
        if loss == "dlr-targeted":
            attack = APGDAttack_targeted(model, n_target_classes=1, **common)
            attack.y_target = clean.sort(dim=1)[1][:, -2]
            out[f"{name}.targets"] = attack.y_target.float()
        else:
            attack = APGDAttack(model, loss=loss, **common)
        attack.init_hyperparam(x)
        start = start_point(attack, x, u if norm == "Linf" else n, eps)
        res = run(attack, x, y, start)
        for k, v in res.items():
            out[f"{name}.{k}"] = v
        fooled = res["fooled"].tolist()
        print(f"{name}: fooled {fooled} best loss {[round(v, 4) for v in res['best_loss'].tolist()]}")
        print(f"    step sizes {res['step_size'].tolist()}")
    out.update(dlr_rows(APGDAttack_targeted(model, eps=0.1)))
    arrays = {k: (v.detach().numpy() if torch.is_tensor(v) else v).astype(np.float32) for k, v in out.items()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
