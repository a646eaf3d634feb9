"""End to end through the command line: a tiny `robustq run`, `robustq eval`, bad input."""
from __future__ import annotations

import json

import pytest
import torch

from robustq.cli import main
from tests.test_engine import TINY

REQUIRED = ["dataset", "model", "quant", "method", "loss", "natural_acc", "attacks",
            "weight_sparsity", "channel_sparsity", "params", "seed", "n_eval", "version"]


def sets(items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["run", "--out", str(out), "--quiet", *sets(TINY)]) == 0
    return out


def test_run_writes_a_complete_run_directory(finished_run, capsys):
    for f in ("config.yaml", "metrics.csv", "checkpoint.pt", "model.pt", "results.json"):
        assert (finished_run / f).is_file(), f
    r = json.loads((finished_run / "results.json").read_text())
    for key in REQUIRED:
        assert key in r, key
    assert set(r["attacks"]) == {"fgsm", "ifgsm", "cw_paper"}
    assert all(0 <= v <= 1 for v in [r["natural_acc"], *r["attacks"].values()])
    assert r["model"] == "En1ResNet8" and r["quant"] == "4bit" and r["method"] == "br"
    assert r["n_eval"] == 32 and r["params"] > 0 and 0 <= r["channel_sparsity"] <= 1


def test_eval_of_a_run_directory_and_of_a_model_file(finished_run, tmp_path, capsys):
    assert main(["eval", str(finished_run), "--quiet", "--set", "eval.n_eval=16",
                 "--set", "eval.attacks=[fgsm]"]) == 0
    out = capsys.readouterr().out
    assert "natural" in out and "fgsm" in out and "results:" in out
    r = json.loads((finished_run / "results.json").read_text())
    assert r["n_eval"] == 16 and list(r["attacks"]) == ["fgsm"]
    target = tmp_path / "res.json"
    assert main(["eval", str(finished_run / "model.pt"), "--results", str(target),
                 "--set", "eval.n_eval=8", "--set", "eval.attacks=[fgsm]"]) == 0
    assert json.loads(target.read_text())["n_eval"] == 8


def test_eval_of_the_current_directory_names_the_model_after_it(finished_run, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.chdir(finished_run)
    target = tmp_path / "here.json"
    assert main(["eval", ".", "--quiet", "--results", str(target), "--set", "eval.n_eval=8",
                 "--set", "eval.attacks=[fgsm]"]) == 0
    assert "evaluating tiny on" in capsys.readouterr().out
    assert json.loads(target.read_text())["name"] == "tiny"


def test_an_existing_run_is_never_overwritten(finished_run, capsys):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    assert main(["run", "--out", str(finished_run), "--quiet", *sets(TINY)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a run" in err and "--resume" in err
    assert {p.name: p.read_bytes() for p in finished_run.iterdir()} == before


@pytest.mark.parametrize("args,message", [
    (["train", "missing.yaml"], "does not exist"),
    (["train"], "needs a CONFIG"),
    (["run", "--set", "train.epoch=1"], "did you mean 'train.epochs'"),
    (["run", "--set", "adv.eps=-1"], "must be >= 0"),
    (["run", "--set", "quant.scheme=17bit"], "is not supported"),
    (["run", "--set", "loss.alpha=0", "--set", "loss.beta=0"], "both 0"),
    (["run", "--set", "data.root=/nonexistent/dir"], "does not exist"),
    (["eval", "/nonexistent/run"], "does not exist"),
    (["train", "--resume", "/nonexistent/run"], "no checkpoint.pt"),
])
def test_bad_input_gives_one_sentence_and_exit_code_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robustq: error: ") and message in err and err.count("\n") == 0
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_corrupt_and_foreign_model_files(finished_run, tmp_path, capsys):
    trunc = tmp_path / "model.pt"
    trunc.write_bytes((finished_run / "model.pt").read_bytes()[:5000])
    assert main(["eval", str(trunc)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert main(["eval", str(foreign)]) == 2   # someone's own weights: how to evaluate them
    err = capsys.readouterr().err
    assert "state_dict without robustq's metadata" in err and "--model MODULE:FACTORY" in err
    ck = tmp_path / "ck.pt"
    ck.write_bytes((finished_run / "checkpoint.pt").read_bytes())
    assert main(["eval", str(ck)]) == 2
    assert "is not a robustq-model file" in capsys.readouterr().err


def test_resume_of_a_finished_run_changes_no_weights(finished_run):
    before = (finished_run / "model.pt").read_bytes()
    assert main(["train", "--resume", str(finished_run), "--quiet", "--no-eval"]) == 0
    assert (finished_run / "model.pt").read_bytes() == before
