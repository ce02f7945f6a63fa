#!/usr/bin/env python3
"""Writes tests/data/torch/: small PyTorch state dicts in the torchvision-ResNet and
EfficientNet-Lite layouts (random weights and batch-norm statistics, tiny widths, the real key
names and padding rules) and the logits PyTorch computes for one deterministic 224x224 input, so
that tests/pytorch.rs can check advlens's builds of those families against PyTorch itself.

Needs torch (no torchvision: the modules are written out here with torchvision's names).
Run from the repository root:  python3 scripts/torch-model-fixtures.py
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = "tests/data/torch"


def test_input():
    """x[c, h, w] = ((31c + 7h + 3w) mod 101) / 100, in [0, 1]; tests/pytorch.rs builds the same."""
    c = torch.arange(3).view(3, 1, 1)
    h = torch.arange(224).view(1, 224, 1)
    w = torch.arange(224).view(1, 1, 224)
    return (((31 * c + 7 * h + 3 * w) % 101).float() / 100.0).unsqueeze(0)


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if t.dtype != torch.float32:
            continue
        if name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=g))
        elif name.endswith("running_mean") or name.endswith(".bias"):
            t.copy_(0.2 * torch.randn(t.shape, generator=g))
        elif name.endswith("weight") and t.dim() == 1:  # BN gamma
            t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=g))
        else:
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)


# ---- torchvision ResNet layout -------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inp, planes, stride, groups=1, wpg=64):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp, planes, stride, groups=1, wpg=64):
        super().__init__()
        inner = int(planes * (wpg / 64.0)) * groups
        out = planes * 4
        self.conv1 = nn.Conv2d(inp, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class ResNet(nn.Module):
    def __init__(self, block, widths, blocks, classes, stem=8, groups=1, wpg=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = stem
        for s, (planes, n) in enumerate(zip(widths, blocks)):
            layers = []
            for i in range(n):
                layers.append(block(inp, planes, 2 if s > 0 and i == 0 else 1, groups, wpg))
                inp = planes * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.nstages = len(widths)
        self.fc = nn.Linear(inp, classes)

    def forward(self, x):
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = (x - mean) / std
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for s in range(self.nstages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(x.mean((2, 3)))


# ---- EfficientNet-Lite layout (lukemelas names, TF SAME padding, BN eps 1e-3) --------------
def same_pad(x, k, s):
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class MBConv(nn.Module):
    def __init__(self, inp, out, k, s, e):
        super().__init__()
        mid = inp * e
        self.k, self.s, self.e = k, s, e
        self.skip = s == 1 and inp == out
        if e != 1:
            self._expand_conv = nn.Conv2d(inp, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, s, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = nn.Conv2d(mid, out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out, eps=1e-3)

    def forward(self, x):
        y = x
        if self.e != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(same_pad(y, self.k, self.s))))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EffLite(nn.Module):
    # (repeats, kernel, stride, expand, out): Lite0's strides, tiny widths.
    STAGES = [(1, 3, 1, 1, 8), (2, 3, 2, 2, 12), (1, 5, 2, 2, 16), (2, 3, 2, 2, 20),
              (1, 5, 1, 2, 24), (2, 5, 2, 2, 28), (1, 3, 1, 2, 32)]

    def __init__(self, classes, stem=8, head=48):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, stem, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, eps=1e-3)
        blocks, inp = [], stem
        for r, k, s, e, o in self.STAGES:
            for i in range(r):
                blocks.append(MBConv(inp, o, k, s if i == 0 else 1, e))
                inp = o
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(inp, head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, eps=1e-3)
        self._fc = nn.Linear(head, classes)

    def forward(self, x):
        x = (x * 255.0 - 127.0) / 128.0
        x = F.relu6(self._bn0(self._conv_stem(same_pad(x, 3, 2))))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    models = {
        # name: (model, zip format?)
        "resnet-basic": (ResNet(BasicBlock, [4, 8, 8, 8], [1, 2, 1, 1], 7), True),
        "resnet-bottleneck": (ResNet(Bottleneck, [4, 4, 8, 8], [1, 1, 2, 1], 5, groups=2, wpg=32), False),
        "efficientnet-lite": (EffLite(6), True),
    }
    x = test_input()
    expected = {}
    for seed, (name, (model, zipped)) in enumerate(models.items()):
        model.eval()
        with torch.no_grad():
            randomise(model, seed + 1)
            logits = model(x)[0]
        expected[name] = [round(v, 6) for v in logits.tolist()]
        torch.save(model.state_dict(), f"{OUT}/{name}.pth", _use_new_zipfile_serialization=zipped)
    with open(f"{OUT}/expected-logits.json", "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for name in models:
        print(name, os.path.getsize(f"{OUT}/{name}.pth"), "bytes")


if __name__ == "__main__":
    main()
