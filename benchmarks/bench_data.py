"""Data speed: loading full CIFAR-10 from its official files, and the batch pipeline.

    python benchmarks/bench_data.py [--root DIR/cifar10] [--threads N]   (default: $ROBUSTQ_DATA/cifar10)

1. Load: ``load_dataset("cifar10", root)``, i.e. read the six python pickles through the
   restricted unpickler, check them, and build the uint8 tensors (50,000 + 10,000 images)
   and verify shapes, counts and label range. Target: under 3 s. The first run may include
   reading the files from disk; the later ones measure robustq (files in the page cache).
2. Pipeline: one epoch of ``Batches`` over the 50,000 training images at batch 128: shuffle,
   gather, random crop (pad 4), random flip, uint8 -> fp32 [0, 1]. Target: 20,000 images/s.
   Timed after a warm-up of 20 batches.

When CIFAR-10 is not found the pipeline is measured on random images of its shape and the
load is skipped. Each figure is the median of ``--reps`` runs; the best is printed too, since
other processes on a shared machine add noise. The pipeline is timed with torch's default
thread count and with one thread: on a machine whose cores are busy with other processes,
every multi-threaded ATen op waits for a descheduled worker (milliseconds per op), which
dominates small per-batch ops; the load average printed first tells which case applies.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from robustq.data import Batches, ImageData, load_dataset
from robustq.errors import DataError

DEFAULT_ROOT = Path(os.environ.get("ROBUSTQ_DATA") or
                    Path(__file__).resolve().parents[2] / "shared" / "data") / "cifar10"


def time_load(root: Path, reps: int) -> tuple[list[float], ImageData]:
    times, train = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        train, _, _ = load_dataset("cifar10", root)
        times.append(time.perf_counter() - t0)
    return times, train


def time_pipeline(data: ImageData, batch: int, reps: int) -> list[float]:
    rates = []
    for r in range(reps):
        batches = Batches(data, batch, shuffle=True, pad=4, flip=True, augment_data=True,
                          generator=torch.Generator().manual_seed(r))
        it = iter(batches)
        for _ in range(20):                                # warm-up
            next(it)
        n, t0 = 0, time.perf_counter()
        for x, y in it:
            n += len(y)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder with CIFAR-10")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to time the pipeline with (default: torch's and 1)")
    args = ap.parse_args()
    threads = args.threads or sorted({torch.get_num_threads(), 1}, reverse=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")
    try:
        times, train = time_load(args.root, args.reps)
        print(f"load CIFAR-10 (50,000 + 10,000 images) from {args.root}: median "
              f"{statistics.median(times):.2f} s, min {min(times):.2f} s "
              f"(runs: {', '.join(f'{t:.2f}' for t in times)}; target < 3 s)")
    except DataError as e:
        print(f"load skipped: {e}")
        train = ImageData(torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8),
                          torch.randint(0, 10, (50000,)))
    for n in threads:
        torch.set_num_threads(n)
        rates = time_pipeline(train, args.batch, args.reps)
        print(f"pipeline (shuffle, crop pad 4, flip, uint8 -> fp32), batch {args.batch}, {n} "
              f"thread{'s' if n > 1 else ''}: median {statistics.median(rates):,.0f} img/s, best "
              f"{max(rates):,.0f} (runs: {', '.join(f'{r:,.0f}' for r in rates)}; target >= "
              f"20,000 img/s)")


if __name__ == "__main__":
    main()
