"""Damaged dataset files (the "dataset files" row): the bundled Fashion-MNIST subset with one
of its four IDX files truncated, bit-flipped, replaced (garbage, empty, a folder, a FIFO, a
link to /dev/zero), padded, a gzip bomb, stored with another dtype (int8 .. float64, NaN
pixels), with impossible shapes, out-of-range or constant labels, or swapped; a fake CIFAR-10
folder whose first batch is a hostile or malformed pickle or whose archive is damaged; and a
copy whose MD5 is checked with data.verify. Each case trains the tiny config on it; a
refusal must come before any run directory is written."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import random
import struct
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .assets import QUIET, assets
from .harness import Case

AREA = "dataset files"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
CODES = {"int8": (0x09, ">i1"), "int16": (0x0B, ">i2"), "int32": (0x0C, ">i4"),
         "float32": (0x0D, ">f4"), "float64": (0x0E, ">f8")}


def idx(arr: np.ndarray, code: int = 0x08, dims=None) -> bytes:
    dims = arr.shape if dims is None else dims
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + arr.tobytes()


@lru_cache(maxsize=None)
def original(stem: str) -> np.ndarray:
    from robustq.data.idx import read_idx
    return read_idx(assets().data / f"{stem}.gz").numpy()


def _gz(b: bytes) -> bytes:
    return gzip.compress(b, compresslevel=1, mtime=0)


def _train_argv(work: Path, extra=()) -> list[str]:
    return ["train", str(assets().config), "--out", str(work / "out"), "--no-eval", *QUIET,
            "--set", f"data.root={work / 'd'}", *extra]


def _same_data(work: Path):
    from robustq.data import load_dataset
    import torch
    a, b = load_dataset("fashion-mnist-10k", work / "d")[:2], load_dataset("fashion-mnist-10k", assets().data)[:2]
    same = all(torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels) for x, y in zip(a, b))
    return None if same and (work / "out" / "model.pt").is_file() else "trained on different data"


def _mnist_case(name: str, stem: str, put: Callable[[Path], None], expect: str = "error") -> Case:
    """``put(path)`` writes the damaged ``stem`` file into the folder (``path`` = d/stem.gz)."""
    def prepare(work: Path) -> list[str]:
        d = work / "d"
        d.mkdir()
        for f in FILES:
            if f != stem:
                os.symlink(assets().data / f"{f}.gz", d / f"{f}.gz")
        put(d / f"{stem}.gz")
        return _train_argv(work)
    return Case(AREA, f"{stem}: {name}", prepare, expect,
                check=_same_data if expect != "error" else None)


def _write(data_fn: Callable[[], bytes], name: str | None = None):
    def put(p: Path) -> None:
        (p.with_name(name) if name else p).write_bytes(data_fn())
    return put


def _src(stem: str) -> bytes:
    return (assets().data / f"{stem}.gz").read_bytes()


def mnist_cases(rng: random.Random) -> list[Case]:
    out = []
    for stem in FILES:
        arr = lambda s=stem: original(s)
        for frac in (0.1, 0.5, 0.99):
            out.append(_mnist_case(f"truncated to {frac:.0%}", stem, _write(lambda s=stem, f=frac: _src(s)[:int(len(_src(s)) * f)])))
        for i in range(4):
            o, bit = rng.randrange(1 << 30), rng.randrange(8)
            out.append(_mnist_case(f"bit flip {i}", stem, _write(lambda s=stem, o=o, bit=bit: (lambda b: b[:o % len(b)] + bytes([b[o % len(b)] ^ (1 << bit)]) + b[o % len(b) + 1:])(_src(s))), "either"))
        out += [
            _mnist_case("garbage", stem, _write(lambda: random.Random(3).randbytes(5000))),
            _mnist_case("empty", stem, _write(lambda: b"")),
            _mnist_case("plain garbage, not gzip", stem, _write(lambda: b"\x00\x00\x08\x03" + b"junk" * 10)),
            _mnist_case("missing", stem, lambda p: None),
            _mnist_case("a folder", stem, lambda p: p.mkdir()),
            _mnist_case("a link to /dev/zero", stem, lambda p: os.symlink("/dev/zero", p)),
            _mnist_case("a FIFO", stem, lambda p: os.mkfifo(p)),
            _mnist_case("a dangling link", stem, lambda p: os.symlink(p.with_name("nowhere"), p)),
            _mnist_case("padded", stem, _write(lambda a=arr: _gz(idx(a()) + b"\x00" * 100))),
            _mnist_case("gzip bomb", stem, _write(lambda a=arr: _bomb(idx(a())))),
            _mnist_case("header larger than the data", stem,
                        _write(lambda a=arr: _gz(idx(a(), dims=(a().shape[0] + 1, *a().shape[1:]))))),
            _mnist_case("absurd header", stem, _write(lambda a=arr: _gz(idx(a(), dims=(2 ** 31,) * a().ndim)))),
            _mnist_case("ungzipped", stem, _write(lambda a=arr: idx(a())), "success"),
        ]
        for dt, (code, np_dt) in CODES.items():
            out.append(_mnist_case(f"stored as {dt}", stem, _write(lambda a=arr, c=code, t=np_dt: _gz(idx(a().astype(t), c)))))
    img, lab = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    out += [
        _mnist_case("NaN pixels as float32", img, _write(lambda: _gz(idx(_nan_images(), 0x0D)))),
        _mnist_case("2-D images", img, _write(lambda: _gz(idx(original(img).reshape(10000, 784))))),
        _mnist_case("fewer images", img, _write(lambda: _gz(idx(original(img)[:9999])))),
        _mnist_case("images of 32 px", img, _write(lambda: _gz(idx(np.zeros((10000, 32, 32), np.uint8))))),
        _mnist_case("label 10", lab, _write(lambda: _gz(idx(np.where(np.arange(10000) == 5, 10, original(lab)).astype(np.uint8))))),
        _mnist_case("label 255", lab, _write(lambda: _gz(idx(np.full(10000, 255, np.uint8))))),
        _mnist_case("constant labels", lab, _write(lambda: _gz(idx(np.full(10000, 3, np.uint8))))),
        _mnist_case("zeroed labels", lab, _write(lambda: _gz(idx(np.zeros(10000, np.uint8))))),
        _mnist_case("labels as float32", lab, _write(lambda: _gz(idx(original(lab).astype(">f4"), 0x0D)))),
        _mnist_case("2-D labels", lab, _write(lambda: _gz(idx(original(lab).reshape(100, 100))))),
        _mnist_case("fewer labels", lab, _write(lambda: _gz(idx(original(lab)[:9000])))),
        _mnist_case("labels are images", lab, _write(lambda: _src(img))),
        _mnist_case("images are labels", img, _write(lambda: _src(lab))),
        _mnist_case("test labels for train", lab, _write(lambda: _src("t10k-labels-idx1-ubyte"))),
    ]
    return out


def _nan_images() -> np.ndarray:
    a = original("train-images-idx3-ubyte").astype(">f4") / 255
    a[0, 0, 0] = np.nan
    return a


@lru_cache(maxsize=None)
def _bomb(head: bytes) -> bytes:
    """``head`` then 256 MB of zeros, gzipped (about 250 kB on disk)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as g:
        g.write(head)
        zeros = bytes(1 << 20)
        for _ in range(256):
            g.write(zeros)
    return buf.getvalue()


# --- CIFAR-10 in its python format -------------------------------------------------------

def _batch(n: int = 10, over: dict | None = None) -> bytes:
    d = {b"data": np.zeros((n, 3072), np.uint8), b"labels": [i % 10 for i in range(n)], **(over or {})}
    return pickle.dumps(d, protocol=2)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/robustq-fault-pwned",))


BAD_BATCHES = {
    "os.system pickle": lambda: pickle.dumps(_Evil()),
    "builtins.eval pickle": lambda: b"cbuiltins\neval\n(V1+1\ntR.",
    "truncated pickle": lambda: _batch()[:50],
    "garbage": lambda: b"not a pickle at all",
    "empty": lambda: b"",
    "a list": lambda: pickle.dumps([1, 2, 3]),
    "float images": lambda: _batch(over={b"data": np.zeros((10, 3072), np.float32)}),
    "wrong image size": lambda: _batch(over={b"data": np.zeros((10, 1024), np.uint8)}),
    "float labels": lambda: _batch(over={b"labels": [0.5] * 10}),
    "string labels": lambda: _batch(over={b"labels": ["cat"] * 10}),
    "labels missing": lambda: pickle.dumps({b"data": np.zeros((10, 3072), np.uint8)}),
    "too few labels": lambda: _batch(over={b"labels": [1, 2]}),
    "object array": lambda: _batch(over={b"data": np.array([object()] * 10)}),
    "deeply nested": lambda: b"(" * 100000 + b"t.",
}


def _cifar_case(name: str, make: Callable[[Path], None]) -> Case:
    def prepare(work: Path) -> list[str]:
        d = work / "d"
        d.mkdir()
        make(d)
        return _train_argv(work, ["--set", "data.name=cifar10"])
    return Case(AREA, f"cifar10: {name}", prepare, "error")


def _folder(bad: bytes):
    def make(d: Path) -> None:
        f = d / "cifar-10-batches-py"
        f.mkdir()
        for m in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
            (f / m).write_bytes(bad if m == "data_batch_1" else _batch())
    return make


def _archive(kind: str):
    def make(d: Path) -> None:
        p = d / "cifar-10-python.tar.gz"
        if kind == "garbage":
            p.write_bytes(b"\x1f\x8b" + b"x" * 500)
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            members = ["data_batch_1", "test_batch"] if kind == "missing members" else \
                ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
            for m in members:
                raw = pickle.dumps(_Evil()) if kind == "hostile member" and m == "data_batch_1" else _batch()
                info = tarfile.TarInfo(f"cifar-10-batches-py/{m}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        data = buf.getvalue()
        p.write_bytes(data[: len(data) // 2] if kind == "truncated" else data)
    return make


def cifar_cases() -> list[Case]:
    out = [_cifar_case(f"first batch {n}", _folder(f())) for n, f in BAD_BATCHES.items()]
    out += [_cifar_case(f"archive {k}", _archive(k)) for k in ("garbage", "truncated", "missing members", "hostile member")]
    out.append(_cifar_case("tiny but well-formed batches", _folder(_batch())))  # wrong counts
    return out


def verify_cases() -> list[Case]:
    def make(work: Path) -> list[str]:
        d = work / "d"
        d.mkdir()
        for f in FILES:
            os.symlink(assets().data / f"{f}.gz", d / f"{f}.gz")
        return _train_argv(work, ["--set", "data.name=fashion-mnist", "--set", "data.verify=true"])
    return [Case(AREA, "data.verify: a copy that is not the published one", make, "error")]


def cases() -> list[Case]:
    return mnist_cases(random.Random(5)) + cifar_cases() + verify_cases()
