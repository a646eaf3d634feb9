"""The training engine: exact resume, atomic checkpoints, selection among quantized states."""
from __future__ import annotations

import csv
import os

import pytest
import torch

from robustq import checkpoint
from robustq.checkpoint import CHECKPOINT_FORMAT, MODEL_FORMAT, load
from robustq.config import load_config
from robustq.engine import train
from robustq.errors import CheckpointError

# a tiny but complete run on the bundled data: depth 8, 96 training images, 3 epochs
TINY = ["data.train_size=96", "data.val_size=32", "model.depth=8", "train.epochs=3",
        "train.batch_size=32", "adv.steps=2", "train.val_attack_steps=1", "eval.n_eval=32",
        "eval.attack_args={ifgsm: {steps: 2}, cw_paper: {steps: 2}}"]
CPU = torch.device("cpu")
TIMING = ("img_per_s", "seconds")


def run(tmp, name, overrides=(), **kw):
    d = tmp / name
    d.mkdir(exist_ok=True)
    cfg = load_config(None, [*TINY, *overrides])
    train(cfg, d, CPU, progress=False, log=lambda *_: None, **kw)
    return d


def rows(d):
    with open(d / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full = run(tmp_path, "full")

    def crash(epoch):
        if epoch == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "part", on_epoch_end=crash)
    assert load(tmp_path / "part" / "checkpoint.pt", CHECKPOINT_FORMAT)["epoch"] == 1
    part = run(tmp_path, "part", resume=True)

    a = load(full / "checkpoint.pt", CHECKPOINT_FORMAT)
    b = load(part / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ma, mb = load(full / "model.pt", MODEL_FORMAT), load(part / "model.pt", MODEL_FORMAT)
    for k in ma["state_dict"]:
        assert torch.equal(ma["state_dict"][k], mb["state_dict"][k]), k
    assert rows(full) == rows(part)


def test_metrics_have_one_row_per_epoch_and_selection_only_in_bc_phase(tmp_path):
    d = run(tmp_path, "br", ["quant.cutoff=2"])
    r = rows(d)
    assert [row["epoch"] for row in r] == ["1", "2", "3"]
    assert [row["phase"] for row in r] == ["BR", "BR", "BC"]
    assert float(r[0]["lam"]) == 1.0 and float(r[1]["lam"]) > 1.0 and r[2]["lam"] == ""
    assert [row["selected"] for row in r] == ["0", "0", "1"]
    model = load(d / "model.pt", MODEL_FORMAT)
    assert model["meta"]["epoch"] == 3
    # the saved model holds exactly Q(w): a 4-bit layer has at most 15 distinct values
    for name, kind in model["meta"]["bit_map"].items():
        if kind != "float":
            w = model["state_dict"][f"{name}.weight"]
            assert len(torch.unique(w)) <= 15, name


def test_a_run_that_never_leaves_br_still_saves_a_truly_quantized_model(tmp_path):
    d = run(tmp_path, "allbr", ["quant.cutoff=3"])
    assert [row["selected"] for row in rows(d)] == ["0", "0", "1"]
    model = load(d / "model.pt", MODEL_FORMAT)
    w = model["state_dict"]["members.0.conv1.weight"]
    assert len(torch.unique(w)) <= 15


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save({"format": CHECKPOINT_FORMAT, "epoch": 1}, path)

    def crash(fd):
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint.os, "fsync", crash)
    with pytest.raises(OSError):
        checkpoint.save({"format": CHECKPOINT_FORMAT, "epoch": 2}, path)
    monkeypatch.undo()
    assert load(path, CHECKPOINT_FORMAT)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_untrusted_and_broken_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    checkpoint.save({"format": MODEL_FORMAT, "x": torch.ones(3)}, good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(trunc, MODEL_FORMAT)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="is not a robustq-model file"):
        load(foreign, MODEL_FORMAT)
    with pytest.raises(CheckpointError, match="is not a robustq-checkpoint file"):
        load(good, CHECKPOINT_FORMAT)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nope.pt", MODEL_FORMAT)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": MODEL_FORMAT, "payload": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="not loaded"):
        load(evil, MODEL_FORMAT)
    assert not (tmp_path / "pwned").exists()
