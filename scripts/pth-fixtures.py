#!/usr/bin/env python3
"""Writes tests/data/pth/: small PyTorch checkpoints with known contents, in both the zip format
(torch >= 1.6) and the legacy format (`_use_new_zipfile_serialization=False`), plus hostile and
broken files, for tests/pth.rs and advlens's safe checkpoint reader (src/model/pth.rs).

Needs torch (any 2.x). Run from the repository root:
    /work/venv-torch/bin/python scripts/pth-fixtures.py   (or any python with torch)

The malicious files are written byte by byte and are never loaded here (nor anywhere).

How the expected values are defined (tests/pth.rs computes them from the same formulas; it never
copies a reader's output):

* one float32 storage of 24 values, v(k) = k / 8 - 1 for k = 0..23, shared by four tensors:
    a        = base[:12].view(3, 4)          a[i, j]       = v(4i + j)
    a_t      = a.t()      (stride (1, 4))    a_t[i, j]     = v(4j + i)
    tail     = base[12:].view(2, 6)          tail[i, j]    = v(12 + 6i + j)   (storage offset 12)
    strided  = base.view(4, 6)[::2, 1::2]    strided[i, j] = v(1 + 12i + 2j)  (stride (12, 2))
* d64  float64 [5]:    d64[k]  = (k + 1) / 3            (as f64, then rounded to f32)
* h16  float16 [11]:   k / 4 - 1 for k = 0..7, then 65504, 2^-24, -2^-14   (all exact in f16)
* bf16 bfloat16 [8]:   k / 2 - 2 for k = 0..5, then 2^100, -2^-100         (all exact in bf16)
* p    nn.Parameter float32 [2, 3]: p[i, j] = 0.5 - (3i + j) / 4
* s    0-dim float32:  2.5
* empty float32 [0, 3]
* bn.num_batches_tracked int64 0-dim = 7, idx int32 [3] = (1, 2, 3), mask bool [2]: skipped
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import torch

OUT = "tests/data/pth"


def v(k):
    return k / 8 - 1


def state_dict():
    base = torch.arange(24, dtype=torch.float32) / 8 - 1
    sd = collections.OrderedDict()
    sd["a"] = base[:12].view(3, 4)
    sd["a_t"] = sd["a"].t()
    sd["tail"] = base[12:].view(2, 6)
    sd["strided"] = base.view(4, 6)[::2, 1::2]
    sd["d64"] = torch.tensor([(k + 1) / 3 for k in range(5)], dtype=torch.float64)
    sd["h16"] = torch.tensor([k / 4 - 1 for k in range(8)] + [65504.0, 2**-24, -(2**-14)],
                             dtype=torch.float16)
    sd["bf16"] = torch.tensor([k / 2 - 2 for k in range(6)] + [2.0**100, -(2.0**-100)],
                              dtype=torch.bfloat16)
    sd["p"] = torch.nn.Parameter(torch.tensor([[0.5 - (3 * i + j) / 4 for j in range(3)]
                                               for i in range(2)]))
    sd["s"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["bn.num_batches_tracked"] = torch.tensor(7)
    sd["idx"] = torch.tensor([1, 2, 3], dtype=torch.int32)
    sd["mask"] = torch.tensor([True, False])
    # What nn.Module.state_dict() attaches; the reader must ignore it.
    sd._metadata = collections.OrderedDict([("", {"version": 1})])

    # Check the formulas above against the tensors themselves.
    assert sd["a"].is_contiguous() and not sd["a_t"].is_contiguous()
    assert sd["tail"].storage_offset() == 12 and sd["strided"].stride() == (12, 2)
    for i in range(3):
        for j in range(4):
            assert sd["a"][i, j].item() == v(4 * i + j) and sd["a_t"][j, i].item() == v(4 * i + j)
    for i in range(2):
        for j in range(3):
            assert sd["strided"][i, j].item() == v(1 + 12 * i + 2 * j)
    return sd


def save(obj, name, legacy):
    path = os.path.join(OUT, name)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def pickle_bytes(obj):
    return pickle.dumps(obj, protocol=2)


def legacy_header():
    """The three pickles a legacy file starts with (magic number, protocol version, sys info)."""
    return (pickle_bytes(0x1950A86A20F9469CFC6C) + pickle_bytes(1001)
            + pickle_bytes({"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}))


def malicious():
    # {'w': os.system('echo pwned')} as protocol-2 opcodes (GLOBAL), by hand.
    evil_legacy = (b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01"
                   b"cos\nsystem\nq\x02X\n\x00\x00\x00echo pwnedq\x03\x85q\x04Rq\x05s.")
    with open(os.path.join(OUT, "malicious-legacy.pth"), "wb") as f:
        f.write(legacy_header() + evil_legacy + pickle_bytes([]))
    # The same through STACK_GLOBAL (protocol 4) and builtins.eval, inside a zip checkpoint.
    frame = (b"}\x94\x8c\x01w\x94\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94"
             b"\x8c\x0aprint('x')\x94\x85\x94R\x94s.")
    evil_zip = b"\x80\x04\x95" + struct.pack("<Q", len(frame)) + frame
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("malicious-zip/data.pkl", evil_zip)
        z.writestr("malicious-zip/byteorder", "little")
        z.writestr("malicious-zip/version", "3\n")
    with open(os.path.join(OUT, "malicious-zip.pth"), "wb") as f:
        f.write(buf.getvalue())


class _Storage:
    def __init__(self, name):
        self.name = name


class _Restricted(pickle.Unpickler):
    """Only for finding offsets in our own legacy fixture: tensors become plain tuples."""

    def find_class(self, module, name):
        if module == "torch._utils" and name.startswith("_rebuild"):
            return lambda *args: ("tensor", args[0])
        if module == "torch" and name.endswith("Storage"):
            return _Storage(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid):
        return pid


def first_storage_offset(path):
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        _Restricted(f).load()
        pickle.load(f)
        return f.tell()


def broken(legacy_path, zip_path):
    data = open(legacy_path, "rb").read()
    # Truncated in the middle of the storages.
    with open(os.path.join(OUT, "truncated.pth"), "wb") as f:
        f.write(data[: len(data) - 40])
    # The first storage's element count (a little-endian u64 before its data) with bit 40 set.
    at = first_storage_offset(legacy_path)
    n = struct.unpack_from("<Q", data, at)[0]
    bad = bytearray(data)
    struct.pack_into("<Q", bad, at, n ^ (1 << 40))
    with open(os.path.join(OUT, "legacy-badsize.pth"), "wb") as f:
        f.write(bytes(bad))
    # A zip checkpoint whose first storage entry holds 4 bytes more than its numel says.
    src = zipfile.ZipFile(zip_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename.endswith("/data/0"):
                body += b"\0\0\0\0"
            z.writestr(info.filename, body)
    with open(os.path.join(OUT, "zip-badsize.pth"), "wb") as f:
        f.write(buf.getvalue())


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = state_dict()
    zip_path = save(sd, "state-zip.pth", legacy=False)
    legacy_path = save(sd, "state-legacy.pth", legacy=True)
    # A training checkpoint: the state dict (DataParallel's `module.` prefix) among other entries.
    wrapped = collections.OrderedDict(("module." + k, t) for k, t in sd.items())
    save({"epoch": 3, "best_acc": 0.75, "arch": "tiny", "history": [1.0, 0.5, None],
          "state_dict": wrapped}, "checkpoint-nested.pth", legacy=False)
    save({"model": sd, "step": 10**12, "lr": 1e-3, "note": b"bytes"},
         "checkpoint-model-legacy.pth", legacy=True)
    malicious()
    broken(legacy_path, zip_path)
    total = 0
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, name))
        total += size
        print(f"{size:8d}  {name}")
    print(f"{total:8d}  total")


if __name__ == "__main__":
    main()
