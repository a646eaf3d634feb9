"""Mid-epoch checkpoints: a resume from inside an epoch is bit-identical to never stopping,
and Ctrl-C/SIGTERM write one before the process exits with the exact resume command."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustq import resume
from robustq.checkpoint import CHECKPOINT_FORMAT, MODEL_FORMAT, load
from robustq.config import load_config
from robustq.engine import train

from .test_engine import CPU, TINY, rows, run

ROOT = Path(__file__).resolve().parents[1]


def same_run(a: Path, b: Path) -> None:
    ca, cb = load(a / "checkpoint.pt", CHECKPOINT_FORMAT), load(b / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert ca["epoch"] == cb["epoch"] and ca["batch"] == cb["batch"] == 0
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    ma, mb = load(a / "model.pt", MODEL_FORMAT), load(b / "model.pt", MODEL_FORMAT)
    for k in ma["state_dict"]:
        assert torch.equal(ma["state_dict"][k], mb["state_dict"][k]), k
    assert rows(a) == rows(b)   # partial epoch metrics carried over exactly


@pytest.mark.parametrize("method", [[], ["adv.attack=free", "loss.name=at", "adv.replay=2",
                                         "train.schedule=onecycle"]], ids=["pgd", "free"])
def test_a_kill_after_a_timed_mid_epoch_checkpoint_resumes_bit_identically(tmp_path, monkeypatch, method):
    full = run(tmp_path, "full", method)
    # the clock says "10 minutes passed" exactly once: after the 2nd batch of epoch 2
    calls = {"n": 0}

    def due(self):
        calls["n"] += 1
        return calls["n"] == 4 if not method else calls["n"] == 2
    monkeypatch.setattr(resume.CheckpointClock, "due", due)

    def killed(epoch, batch):
        raise KeyboardInterrupt   # the process dies right after the checkpoint
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "part", method, on_checkpoint=killed)
    ck = load(tmp_path / "part" / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert (ck["epoch"], ck["batch"]) in ((1, 2), (1, 1)) and ck["partial"]["stats"][3] > 0
    monkeypatch.undo()
    same_run(full, run(tmp_path, "part", method, resume=True))


@pytest.mark.usefixtures("same_threads_as_subprocess")
def test_sigterm_writes_a_checkpoint_that_resumes_exactly(tmp_path):
    """A real SIGTERM to a training subprocess (bounded: the run is seconds long)."""
    sets = [*TINY, "train.epochs=2", "train.batch_size=8"]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "robustq", "train", str(ROOT / "configs" / "quickstart.yaml"),
           "--out", str(out), "--quiet", "--no-eval", *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stdout:          # the header is printed once the handlers are in place
        if line.startswith("training "):
            break
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert err.strip().count("\n") == 0 and "SIGTERM" in err
    assert f"robustq train --resume {out.resolve()}" in err
    ck = load(out / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert (ck["epoch"], ck["batch"]) < (2, 0)   # it stopped before the end
    train(load_config(out / "config.yaml"), out, CPU, resume=True, progress=False, log=lambda *_: None)
    full = tmp_path / "full"
    full.mkdir()
    train(load_config(ROOT / "configs" / "quickstart.yaml", sets), full, CPU, progress=False, log=lambda *_: None)
    same_run(full, out)


def test_checkpoint_minutes_zero_means_epoch_ends_only(tmp_path, monkeypatch):
    now = {"t": 0.0}

    def clock():   # every look at the clock: 1000 s later
        now["t"] += 1000.0
        return now["t"]
    monkeypatch.setattr(resume, "monotonic", clock)
    seen = []
    run(tmp_path, "never", ["train.checkpoint_minutes=0"], on_checkpoint=lambda e, b: seen.append(b))
    assert seen == []
    run(tmp_path, "often", ["train.checkpoint_minutes=1"], on_checkpoint=lambda e, b: seen.append(b))
    assert seen == [1, 2] * 3   # after every batch but an epoch's last (the epoch checkpoint)
