"""Tiny sweep files for the sweep and report tests (bundled data, seconds per point)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_SET = {"data.train_size": 64, "data.val_size": 32, "model.depth": 8, "train.epochs": 2,
            "train.batch_size": 32, "train.max_batches": 2, "train.precision": "fp32",
            "adv.steps": 1, "train.val_attack_steps": 1, "eval.n_eval": 16,
            "eval.attack_args": {"ifgsm": {"steps": 1}, "cw_paper": {"steps": 1}}}


def write_sweep(path: Path, **parts) -> Path:
    """A sweep file on the quickstart config with the tiny settings plus ``parts``."""
    data = {"name": path.stem, "protocol": "test", "base": "quickstart",
            "set": {**TINY_SET, **parts.pop("set", {})}, "evaluate": {"paper": {}}}
    data.update(parts)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustq.cli", *args], capture_output=True,
                          text=True, env=env(), cwd=REPO, timeout=timeout)


def popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robustq.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)
