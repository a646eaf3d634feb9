"""The CUDA path end to end: train (bf16 autocast where ``precision: auto`` picks it), eval,
export, and NCCL under torchrun. Marked ``cuda``; skipped on hosts without a CUDA GPU."""
from __future__ import annotations

import json

import pytest
import torch

from robustq.checkpoint import CHECKPOINT_FORMAT, load
from robustq.cli import main

from .test_distributed import CONFIG, TINY, sets, torchrun

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this host")]


def test_train_eval_export_on_cuda(tmp_path):
    out = tmp_path / "run"
    assert main(["train", CONFIG, "--out", str(out), "--device", "cuda", "--quiet",
                 *sets([*TINY, "eval.n_eval=32", "eval.attack_args={ifgsm: {steps: 2}, cw_paper: {steps: 2}}"])]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["device"].startswith("cuda") and 0 <= r["natural_acc"] <= 1
    assert load(out / "checkpoint.pt", CHECKPOINT_FORMAT)["rng"].get("cuda") is not None
    assert main(["export", str(out), "--out", str(tmp_path / "m.safetensors")]) == 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL test needs 2 GPUs")
def test_two_gpu_ranks_with_nccl_and_sync_bn(tmp_path):
    out = tmp_path / "run"
    p = torchrun(["train", CONFIG, "--out", str(out), "--device", "cuda", "--quiet", "--no-eval",
                  *sets([*TINY, "train.sync_bn=true"])])
    assert p.returncode == 0, p.stderr[-3000:]
    assert load(out / "checkpoint.pt", CHECKPOINT_FORMAT)["world_size"] == 2
