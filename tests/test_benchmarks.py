"""The benchmark scripts stay runnable, and the op timer behind ``bench_train --ceiling``
counts convolution work correctly (its bound is only as honest as that count)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_op_timer_counts_convolution_flops():
    timer = _bench_module().OpTimer()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(5, 3, 3, 3)  # no weight gradient: the backward computes one gradient
    with timer:
        out = F.conv2d(x, w, padding=1, stride=2)
        out.sum().backward()
    per_pass = 2 * out.numel() * 3 * 3 * 3
    assert timer.flops["convolution"] == per_pass
    assert timer.flops["convolution_backward"] == per_pass
    assert timer.time["convolution"] > 0 and timer.time["convolution_backward"] > 0


def test_bench_train_ceiling_runs_on_a_tiny_problem():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--ceiling", "--device", "cpu", "--batch", "4", "--size", "8",
         "--steps", "1", "--rounds", "1", "--warmup", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    assert "convolutions" in out and "noise and random-start draws" in out
    assert "the plain loop" in out.splitlines()[-1]
