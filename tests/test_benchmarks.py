"""The benchmark scripts stay runnable, and the op timer behind ``bench_train --ceiling``
counts convolution work correctly (its bound is only as honest as that count)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
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


FAST_AT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fast_at.py"


def test_bench_fast_at_smoke_runs_resumes_and_prints_its_table(tmp_path):
    """A tiny setting, as a smoke test only (no timing asserts): every method trains, the
    second invocation finds every training finished and only re-prints the table."""
    cmd = [sys.executable, str(FAST_AT), "--out", str(tmp_path), "--dataset", "fashion-mnist-10k",
           "--train-size", "96", "--val-size", "32", "--val-steps", "1", "--depth", "8",
           "--batch", "32", "--budget-min", "0.02", "--calib-steps", "1", "--n-eval", "16",
           "--eot", "1", "--draws", "2", "--strong-n", "0"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True, env=env).stdout
    for method in ("pgd", "fgsm_rs", "n_fgsm", "free"):
        assert any(line.startswith(method) for line in first.splitlines()), first
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True, env=env).stdout
    assert "training " not in second and second.splitlines()[-6:] == first.splitlines()[-6:]
    md = (tmp_path / "table.md").read_text().splitlines()
    first_cells = [row.split(" | ")[0] for row in md[2:]]
    assert first_cells[:4] == ["| pgd", "| fgsm_rs", "| n_fgsm", "| free"]   # then the best at B
    assert first_cells[4] in {"| fgsm_rs", "| n_fgsm", "| free"} and md[7] == ""
    assert md[-1] == "PGD-20 on 16 test images."


@pytest.mark.parametrize("bad", [["--calib-rounds", "0"], ["--budget-min", "0"], ["--eot", "0"]])
def test_bench_fast_at_refuses_a_bad_setting_in_one_line(tmp_path, bad):
    r = subprocess.run([sys.executable, str(FAST_AT), "--out", str(tmp_path / "o"), *bad],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(f"got {bad[1]}")
    assert not (tmp_path / "o").exists()


def test_bench_fast_at_refuses_a_bad_strong_set_before_any_training(tmp_path):
    r = subprocess.run([sys.executable, str(FAST_AT), "--out", str(tmp_path / "o"),
                        "--strong-set", "eval.draws=0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--strong-set: eval.draws must be >= 1" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_bench_fast_at_spends_each_budget_within_one_step_per_epoch():
    sys.path.insert(0, str(FAST_AT.parent))
    try:
        from bench_fast_at import spread
    finally:
        sys.path.remove(str(FAST_AT.parent))
    assert spread(707, 383) == (2, 353, 353)      # 1.85 epochs: two capped epochs, not one
    assert spread(383, 383) == (1, 383, None)     # exactly an epoch
    assert spread(1200, 383) == (4, 300, 300)
    assert spread(100, 383) == (1, 100, 100)
    assert spread(709, 48, replay=8) == (2, 44, 352)   # free AT, m = 8: 88 minibatches
    assert spread(0, 383) == (1, 1, 1)
    for steps in range(1, 3000, 7):
        epochs, per, cap = spread(steps, 383)
        assert per <= 383 and steps - epochs < epochs * per <= steps


@pytest.mark.slow
def test_bench_threads_runs_on_a_tiny_problem():
    script = BENCH.with_name("bench_threads.py")
    out = subprocess.run([sys.executable, str(script), "--batch", "2", "--size", "8", "--steps",
                          "1", "--rounds", "1", "--warmup", "1", "--natural"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    assert out.count("| no other process started |") == 3 and "single-threaded busy" in out
    assert "robustq chose threads:" in out


@pytest.mark.slow
def test_bench_train_ddp_prints_both_sides_and_the_ratio():
    """``--ddp`` at a toy size (smoke only: torchrun plus two timed sides, tens of seconds)."""
    out = subprocess.run([sys.executable, str(BENCH), "--ddp", "--batch", "4", "--size", "8",
                          "--steps", "1", "--rounds", "1", "--warmup", "1"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.splitlines()
    assert "1 process x 2 threads" in lines[-3] and "2 DDP ranks x 1 thread" in lines[-2]
    assert lines[-1].startswith("ratio (DDP / 1 process)")
