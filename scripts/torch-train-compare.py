#!/usr/bin/env python3
"""Trains an advlens resnet-denoise model (placement none) in PyTorch with advlens's recipe, to
calibrate `advlens train` against a reference implementation. Optional; not part of CI.

Setup (CPU wheels from the package registry, outside the repository):
    python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch numpy

It reads the starting weights from an advlens safetensors file (`advlens new-model
--placement none --out init.safetensors`), builds the same graph (normalisation, 3×3 stem,
basic blocks with TF-SAME padding, zero-γ last BN, projection shortcuts, global average pool,
linear), and trains it with SGD as advlens does (PyTorch convention: v = m·v + g + wd·w,
w -= lr·v; weight decay on every trainable tensor; BN momentum 0.1, eps 1e-5, unbiased running
variance; mean cross-entropy over the batch). Data: the IDX files of scripts/fetch-data.sh.

Uses:
  * Curves (statistical comparison; the data order is PyTorch's own, not advlens's):
        python scripts/torch-train-compare.py --init init.safetensors --limit 25600 --lr 0.1
    prints windowed and running training accuracy every 25 steps and the test accuracy.
  * Exact single-batch check: `--limit 128` makes every step use the first 128 training
    images (batch order does not matter), so with --crop-pad 0 --no-flip --warmup 0 it sees
    the same batches as
        advlens train --init init.safetensors --mode clean --limit 128 --epochs K
            --schedule constant --warmup 0 --crop-pad 0 --no-flip --out trained.safetensors
    and `--compare trained.safetensors --epochs K` reports the largest weight difference per
    tensor after K steps (relative to the update; ~1e-3 or less when the two agree).
  * PGD adversarial training (`--mode pgd --eps 0.1 --attack-steps 7`, Madry's step 2.5·ε/k,
    a uniform random start, crafted on the running batch-norm averages as advlens does); it
    then also reports PGD-10 accuracy on the test images. On the 2-core development machine,
    20 PGD-7 steps at batch 128 and the PGD-10 check of 500 images took 46 s with --threads 2,
    where `advlens train` runs a step in about 1.5 s: a cross-check of the recipe, not a faster
    way to explore it.
  * Init experiments: --residual-gamma 1 starts the residual branches' last BN at γ = 1 instead
    of 0, --linear-init 0 redraws linear/W with PyTorch's default instead of N(0, 0.01²).
"""

import argparse
import gzip
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64}


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = raw[8 + n :]
    out = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(body[a:b], dtype=DTYPES[v["dtype"]]).reshape(v["shape"]).copy()
    return out, meta


def read_idx(path):
    raw = gzip.open(path).read() if str(path).endswith(".gz") else open(path, "rb").read()
    nd = raw[3]
    dims = struct.unpack(">" + "I" * nd, raw[4 : 4 + 4 * nd])
    return np.frombuffer(raw[4 + 4 * nd :], dtype=np.uint8).reshape(dims)


def load_split(folder, split):
    p = "train" if split == "train" else "t10k"
    x = read_idx(f"{folder}/{p}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(f"{folder}/{p}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x[:, None]), torch.from_numpy(y)


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Net(torch.nn.Module):
    """The advlens graph, parameters keyed by advlens's names."""

    def __init__(self, weights, arch):
        super().__init__()
        if arch.get("placement", "none") != "none" or arch.get("block", "basic") != "basic":
            sys.exit("only placement none and basic blocks are supported")
        self.arch = arch
        self.p = torch.nn.ParameterDict()
        self.buffers_ = {}
        for k, v in weights.items():
            t = torch.from_numpy(v)
            if k.endswith("/EMA"):
                self.buffers_[k] = t.clone()
            else:
                self.p[k.replace("/", "|")] = torch.nn.Parameter(t.clone())

    def w(self, name):
        return self.p[name.replace("/", "|")]

    def conv(self, name, x, stride):
        w = self.w(name + "/W")
        k = w.shape[-1]
        t, b = same_pads(x.shape[-2], k, stride)
        l, r = same_pads(x.shape[-1], k, stride)
        return F.conv2d(F.pad(x, (l, r, t, b)), w, stride=stride)

    def bn(self, name, x, bn_momentum, train):
        mean, var = self.buffers_[name + "/mean/EMA"], self.buffers_[name + "/variance/EMA"]
        if train:
            with torch.no_grad():
                bm = x.mean((0, 2, 3))
                bv = x.var((0, 2, 3), unbiased=True)
                mean.mul_(1 - bn_momentum).add_(bm * bn_momentum)
                var.mul_(1 - bn_momentum).add_(bv * bn_momentum)
            mu = x.mean((0, 2, 3), keepdim=True)
            v = x.var((0, 2, 3), unbiased=False, keepdim=True)
        else:
            mu, v = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        g, b = self.w(name + "/gamma"), self.w(name + "/beta")
        return (x - mu) / torch.sqrt(v + 1e-5) * g.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)

    def forward(self, x, train, bn_momentum=0.1):
        a = self.arch
        m = torch.tensor(a["mean"]).view(1, -1, 1, 1)
        s = torch.tensor(a["std"]).view(1, -1, 1, 1)
        x = (x - m) / s
        bn = lambda n, v: self.bn(n, v, bn_momentum, train)
        x = F.relu(bn("conv0/bn", self.conv("conv0", x, 1)))
        for g, (width, nblocks) in enumerate(zip(a["widths"], a["blocks"])):
            for blk in range(nblocks):
                stride = 2 if g > 0 and blk == 0 else 1
                sc = f"group{g}/block{blk}"
                y = F.relu(bn(sc + "/conv1/bn", self.conv(sc + "/conv1", x, stride)))
                y = bn(sc + "/conv2/bn", self.conv(sc + "/conv2", y, 1))
                if x.shape[1] != width or stride != 1:
                    x = bn(sc + "/convshortcut/bn", self.conv(sc + "/convshortcut", x, stride))
                x = F.relu(x + y)
        x = x.mean((2, 3))
        return x @ self.w("linear/W").t() + self.w("linear/b")


def lr_at(base, step, total, warmup, schedule):
    t = min(step, total) / max(total, 1)
    if schedule == "cosine":
        lr = base * 0.5 * (1 + math.cos(math.pi * t))
    elif schedule == "step":
        lr = base * (0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0)
    else:
        lr = base
    return lr * (step + 1) / warmup if step < warmup else lr


def crop_flip(x, pad, flip, gen):
    if pad == 0 and not flip:
        return x
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    d = torch.randint(-pad, pad + 1, (n, 2), generator=gen)
    fl = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        dy, dx = int(d[i, 0]), int(d[i, 1])
        img = xp[i, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w]
        out[i] = img.flip(-1) if flip and fl[i] else img
    return out


def pgd(net, x, y, eps, steps, gen):
    """L∞ PGD with a uniform random start and Madry's step 2.5·ε/steps, on the network's running
    batch-norm averages (as advlens crafts its training examples)."""
    step = 2.5 * eps / steps
    xa = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(net(xa, train=False), y)
        (g,) = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            xa = torch.min(torch.max(xa + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def evaluate(net, x, y, attack=None):
    """Accuracy in % on (x, y), in chunks of 500; `attack(x, y)` perturbs each chunk first."""
    correct = 0
    for i in range(0, len(y), 500):
        xb, yb = x[i : i + 500], y[i : i + 500]
        if attack is not None:
            xb = attack(xb, yb)
        with torch.no_grad():
            correct += (net(xb, train=False).argmax(1) == yb).sum().item()
    return 100.0 * correct / len(y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True, help="advlens safetensors with the start weights")
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--schedule", default="constant", choices=["constant", "cosine", "step"])
    ap.add_argument("--warmup", type=float, default=0.0, help="warm-up in epochs")
    ap.add_argument("--crop-pad", type=int, default=0)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val", type=int, default=1000, help="test images for the final check")
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", default="clean", choices=["clean", "pgd"])
    ap.add_argument("--eps", type=float, default=0.1, help="L∞ budget of PGD training and eval")
    ap.add_argument("--attack-steps", type=int, default=7)
    ap.add_argument("--compare", help="advlens-trained safetensors to compare weights with")
    ap.add_argument(
        "--linear-init",
        type=float,
        default=None,
        help="redraw linear/W from N(0, s²) (advlens draws s = 0.01); 0 means PyTorch's "
        "default U(±1/√fan_in)",
    )
    ap.add_argument(
        "--residual-gamma",
        type=float,
        default=None,
        help="set the γ of every residual branch's last BN (advlens starts them at 0)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    weights, meta = read_safetensors(args.init)
    rng = np.random.default_rng(args.seed)
    if args.linear_init is not None:
        shape = weights["linear/W"].shape
        if args.linear_init == 0:
            bound = 1 / math.sqrt(shape[1])
            weights["linear/W"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        else:
            weights["linear/W"] = (args.linear_init * rng.standard_normal(shape)).astype(np.float32)
    if args.residual_gamma is not None:
        for k in weights:
            if k.endswith("/conv2/bn/gamma"):
                weights[k][:] = args.residual_gamma
    arch = json.loads(meta["advlens.arch"])
    net = Net(weights, arch)
    x, y = load_split(args.data, "train")
    n = min(args.limit or len(y), len(y))
    x, y = x[:n], y[:n]
    tx, ty = load_split(args.data, "test")
    tx, ty = tx[: args.val], ty[: args.val]
    batches = n // args.batch
    total = batches * args.epochs
    warmup = int(args.warmup * batches)
    gen = torch.Generator().manual_seed(args.seed)
    vel = {}
    step = 0
    win_acc = win_loss = 0.0
    run_acc = run_loss = 0.0
    win = 0
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=gen)
        run_acc = run_loss = 0.0
        for b in range(batches):
            if args.steps is not None and step >= args.steps:
                break
            idx = order[b * args.batch : (b + 1) * args.batch]
            xb = crop_flip(x[idx], args.crop_pad, args.flip, gen)
            yb = y[idx]
            lr = lr_at(args.lr, step, total, warmup, args.schedule)
            if args.mode == "pgd":
                xb = pgd(net, xb, yb, args.eps, args.attack_steps, gen)
            logits = net(xb, train=True)
            loss = F.cross_entropy(logits, yb)
            net.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for k, p in net.p.items():
                    if p.grad is None:
                        continue
                    d = p.grad + args.weight_decay * p
                    vel[k] = d.clone() if k not in vel else vel[k].mul_(args.momentum).add_(d)
                    p.sub_(lr * vel[k])
            acc = (logits.argmax(1) == yb).float().mean().item()
            step += 1
            win += 1
            win_acc += acc
            win_loss += loss.item()
            run_acc += acc
            run_loss += loss.item()
            if step == 1 or step % args.every == 0:
                print(
                    f"step {step:4d}  lr {lr:.4f}  window loss {win_loss / win:.4f} "
                    f"acc {100 * win_acc / win:5.1f}%  running(epoch) loss {run_loss / (b + 1):.4f} "
                    f"acc {100 * run_acc / (b + 1):5.1f}%",
                    flush=True,
                )
                win_acc = win_loss = 0.0
                win = 0
    print(f"after {step} steps: test accuracy on the first {len(ty)} images {evaluate(net, tx, ty):.2f}%")
    if args.mode == "pgd":
        acc = evaluate(net, tx, ty, lambda xb, yb: pgd(net, xb, yb, args.eps, 10, gen))
        print(f"PGD-10 at ε={args.eps}: {acc:.2f}%", flush=True)
    if args.compare:
        other, _ = read_safetensors(args.compare)
        worst = 0.0
        for k in sorted(other):
            if k.endswith("/EMA"):
                mine = net.buffers_[k].numpy()
            elif k.replace("/", "|") in net.p:
                mine = net.w(k).detach().numpy()
            else:
                continue
            d = float(np.abs(mine - other[k]).max())
            scale = float(np.abs(mine - weights[k]).max()) if k in weights else float("nan")
            worst = max(worst, d / max(scale, 1e-12))
            print(f"{k:42s} max|torch-advlens| {d:.3e}  max|update| {scale:.3e}")
        print(f"worst difference relative to the update: {worst:.3e}")


if __name__ == "__main__":
    main()
