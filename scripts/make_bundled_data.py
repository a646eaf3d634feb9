"""Rebuild robustq's bundled offline dataset from the official Fashion-MNIST files.

    python scripts/make_bundled_data.py ../shared/data/fashion-mnist

Takes a stratified, seeded subset (1,000 images per class from the official training set,
200 per class from the official test set), keeps the official order within it, and writes
gzipped IDX files (gzip mtime 0, so the bytes are reproducible) to
robustq/data/bundled/fashion-mnist-10k/. Running it twice gives identical files.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustq.data.datasets import read_mnist_format, verify  # noqa: E402
from robustq.data.idx import write_idx  # noqa: E402

OUT = ROOT / "robustq" / "data" / "bundled" / "fashion-mnist-10k"
PER_CLASS = {"train": 1000, "t10k": 200}
SEED = 20170825  # Fashion-MNIST's release date


def subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(10):
        idx = (labels == c).nonzero().squeeze(1)
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.cat(picks).sort().values  # official order within the subset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("source", type=Path, help="folder with the official Fashion-MNIST .gz files")
    args = ap.parse_args()
    train, test = read_mnist_format(args.source)
    verify("fashion-mnist", train, (1, 28, 28), 60000, 10, "train")
    verify("fashion-mnist", test, (1, 28, 28), 10000, 10, "test")
    OUT.mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("t10k", test)):
        idx = subset(data.labels, PER_CLASS[split], SEED + (split == "t10k"))
        write_idx(OUT / f"{split}-images-idx3-ubyte.gz", data.images[idx, 0])
        write_idx(OUT / f"{split}-labels-idx1-ubyte.gz", data.labels[idx].to(torch.uint8))
    for f in sorted(OUT.glob("*.gz")):
        print(hashlib.sha256(f.read_bytes()).hexdigest(), f.relative_to(ROOT))


if __name__ == "__main__":
    main()
