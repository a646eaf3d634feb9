"""Resumable evaluation: an evaluation killed after any batch continues from its journal and
writes the record an uninterrupted one writes; a journal of another evaluation, or a damaged
one, is set aside; the CLI says where the progress is kept and removes it at the end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
import torch
from torch import nn

from robustq.cli import main
from robustq.models.enresnet import BlockNoise
from robustq.robustness import SuiteOptions, evaluate_suite
from robustq.robustness.journal import Journal, Place
from tests.strong_helpers import fashion, trained_mlp

TIMES = ("attack_seconds", "suite_seconds", "resumed_seconds")
EPS = "0.05"
SMALL = {"pgd": {"steps": 3, "restarts": 1}, "cw_l2": {"steps": 2, "binary_steps": 1}}


@pytest.fixture(autouse=True)
def every_batch(monkeypatch):
    """Progress written after every batch (robustq waits 30 s between writes inside an attack)."""
    monkeypatch.setattr(Journal, "every_s", 0.0)


@pytest.fixture
def problem():
    """A randomized model (robustq's block noise on the input of a trained MLP, so the suites
    also run their noise-off pass) that the attacks fool on some examples, not on others."""
    _, _, x, y = fashion()
    return nn.Sequential(BlockNoise(0.3), trained_mlp()).eval(), x[:40], y[:40]


def opts(journal, **kw):
    return SuiteOptions(eot_samples=2, draws=2, batch_size=16, journal=journal, n_check=16,
                        attack_args=kw.pop("attack_args", SMALL), **kw)


def place(tmp_path, suite="strong") -> Place:
    return Place(tmp_path / "r.json", suite)


def journals(tmp_path) -> list[Path]:
    return sorted(tmp_path.glob("r.eval-*.partial.safetensors"))


def strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in TIMES}


class Killed(Exception):
    pass


def run_until(monkeypatch, kill_at: int, fn):
    """Run ``fn`` and stop it right after the journal's ``kill_at``-th write (a kill -9 just
    after a write loses nothing more than this)."""
    calls = {"n": 0}
    write = Journal._write

    def dying(self):
        write(self)
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed
    monkeypatch.setattr(Journal, "_write", dying)
    try:
        fn()
    except Killed:
        return True
    finally:
        monkeypatch.setattr(Journal, "_write", write)
    return False


@pytest.mark.parametrize("kill_at", [1, 3, 5, 9, 14, 19, 23, 30])
def test_a_killed_strong_evaluation_resumes_to_the_uninterrupted_record(problem, tmp_path, monkeypatch,
                                                                       kill_at):
    model, x, y = problem
    full = evaluate_suite(model, x, y, "strong", EPS, opts(None), log=lambda *_: None)
    assert run_until(monkeypatch, kill_at, lambda: evaluate_suite(
        model, x, y, "strong", EPS, opts(place(tmp_path)), log=lambda *_: None))
    [path] = journals(tmp_path)
    assert path.name.startswith("r.eval-strong.") and len(path.name.split(".")[2]) == 12
    with safe_open(str(path), framework="pt") as f:
        entries = json.loads(f.metadata()["entries"])
    lines = []
    again = place(tmp_path)
    resumed = evaluate_suite(model, x, y, "strong", EPS, opts(again), log=lines.append)
    assert again.file == path and strip(resumed) == strip(full)
    assert resumed["resumed_seconds"] >= 0 and resumed["suite_seconds"] >= resumed["resumed_seconds"]
    assert any(line.startswith("continuing the interrupted evaluation") for line in lines), lines
    # the attack passes finished before the kill are not run again
    assert sum(line.endswith(", kept)") for line in lines) == len(entries["done"]), (entries, lines)
    if kill_at == 1:   # after the first of FGSM's 3 batches
        assert entries["partial"]["batches"] == 1 and not entries["done"]
    if kill_at == 3:   # after FGSM's last batch and its scoring
        assert entries["partial"] is None and list(entries["done"]) == ["main/fgsm"]


def test_progress_inside_an_attack_waits_between_writes(problem, tmp_path, monkeypatch):
    monkeypatch.setattr(Journal, "every_s", 3600.0)
    model, x, y = problem
    writes = []
    write = Journal._write
    monkeypatch.setattr(Journal, "_write", lambda self: (writes.append(self.partial), write(self)))
    evaluate_suite(model, x, y, "quick", EPS, opts(place(tmp_path)), log=lambda *_: None)
    assert writes and all(p is None for p in writes)   # finished attacks only: 2 + 2 noise-off
    assert len(writes) == 4


@pytest.mark.parametrize("change", ["seed", "order", "surrogate", "channels_last"])
def test_another_evaluation_never_uses_a_kept_journal(problem, tmp_path, monkeypatch, change):
    """Each change alters the numbers, so it must be another journal (found by the review of
    this feature: the attack order sets the seeds; a surrogate of the same shape; the memory
    format orders the noise draws)."""
    model, x, y = problem
    suite, base = ("blackbox", {}) if change == "surrogate" else ("paper", {"attacks": ["fgsm", "ifgsm"]})
    if change == "surrogate":
        base["surrogate"] = trained_mlp()
    if change == "channels_last":   # 3 channels: with one, both memory formats are the same
        torch.manual_seed(0)
        model = nn.Sequential(BlockNoise(0.3), nn.Flatten(), nn.Linear(192, 10)).eval()
        x = torch.rand(40, 3, 8, 8)
        with torch.no_grad():
            y = model[2](model[1](x)).argmax(1)
    assert run_until(monkeypatch, 2, lambda: evaluate_suite(
        model, x, y, suite, EPS, opts(place(tmp_path, suite), allow_single_sample=True, **base),
        log=lambda *_: None))
    other = dict(base)
    if change == "seed":
        other["seed"] = 1
    elif change == "order":
        other["attacks"] = ["ifgsm", "fgsm"]
    elif change == "surrogate":
        other["surrogate"] = trained_mlp(masked=True)
    else:
        x = x.contiguous(memory_format=torch.channels_last)
    lines = []
    got = evaluate_suite(model, x, y, suite, EPS, opts(place(tmp_path, suite), allow_single_sample=True,
                                                       **other), log=lines.append)
    assert not any("continuing" in line or "kept)" in line for line in lines), lines
    fresh = evaluate_suite(model, x, y, suite, EPS, opts(None, allow_single_sample=True, **other),
                           log=lambda *_: None)
    assert strip(got) == strip(fresh)
    assert len(journals(tmp_path)) == 2   # the first evaluation's journal is left alone


def test_a_damaged_journal_is_set_aside_and_one_with_other_clean_predictions_is_dropped(
        problem, tmp_path, monkeypatch):
    model, x, y = problem
    assert run_until(monkeypatch, 4, lambda: evaluate_suite(model, x, y, "quick", EPS,
                                                            opts(place(tmp_path, "quick")),
                                                            log=lambda *_: None))
    [path] = journals(tmp_path)
    clean = evaluate_suite(model, x, y, "quick", EPS, opts(None), log=lambda *_: None)
    j = Journal(path, "key", log=lambda *_: None)   # another key: nothing read
    assert not j.resumed
    lines = []
    j = Journal(path, _key(path), log=lines.append)
    assert j.resumed and j.done
    j.start_phase("main", torch.zeros(2, 40, dtype=torch.bool), lines.append)
    assert not j.done and "clean predictions differ" in lines[-1]
    path.write_bytes(b"\x00" * 100)
    lines = []
    again = evaluate_suite(model, x, y, "quick", EPS, opts(place(tmp_path, "quick")), log=lines.append)
    assert any(line.startswith("warning:") and "not a readable partial evaluation" in line
               for line in lines), lines
    assert strip(again) == strip(clean)


def _key(path: Path) -> str:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["key"]


def test_the_cli_keeps_the_progress_says_so_continues_and_removes_it(tmp_path, monkeypatch, capsys):
    from tests.test_cli import TINY, sets
    run = tmp_path / "tiny"
    assert main(["train", "quickstart", "--out", str(run), "--quiet", "--no-eval", *sets(TINY)]) == 0
    args = ["eval", str(run), "--quiet", "--suite", "quick", "--set", "eval.n_eval=32",
            "--set", "eval.batch_size=8", "--eot", "2", "--draws", "2"]
    assert main(args) == 0
    full = json.loads((run / "results.json").read_text())
    assert not list(run.glob("*.partial.safetensors"))
    capsys.readouterr()

    calls = {"n": 0}
    write = Journal._write

    def interrupted(self):
        write(self)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(Journal, "_write", interrupted)
    assert main(args) == 130
    err = capsys.readouterr().err
    [partial] = run.glob("results.eval-quick.*.partial.safetensors")
    assert f"its progress is kept in {partial}" in err and "robustq eval" in err
    monkeypatch.setattr(Journal, "_write", write)
    assert main(args) == 0
    assert not partial.exists()
    again = json.loads((run / "results.json").read_text())
    assert {k: v for k, v in again.items() if k not in (*TIMES, "eval_seconds", "date", "time")} == \
        {k: v for k, v in full.items() if k not in (*TIMES, "eval_seconds", "date", "time")}


def test_sigterm_stops_an_evaluation_with_its_progress_kept(tmp_path):
    """A real SIGTERM (what a cluster sends before preemption) to ``robustq eval``: the note
    names the kept journal, and the same command finishes the evaluation from it."""
    import signal
    import subprocess
    import sys
    from tests.test_cli import TINY, sets
    run = tmp_path / "tiny"
    assert main(["train", "quickstart", "--out", str(run), "--quiet", "--no-eval", *sets(TINY)]) == 0
    cmd = [sys.executable, "-m", "robustq", "eval", str(run), "--suite", "quick", "--eot", "100",
           "--draws", "2", "--set", "eval.n_eval=32", "--set", "eval.batch_size=8", "--threads", "1"]
    env = {**__import__("os").environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stdout:          # FGSM (100 EOT samples, one step) finished: it is kept
        if line.startswith("  fgsm"):
            break
    p.send_signal(signal.SIGTERM)  # during PGD-10 with 100 EOT samples: seconds
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    [partial] = run.glob("results.eval-quick.*.partial.safetensors")
    assert f"its progress is kept in {partial}" in err
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "fgsm" in done.stdout and "kept)" in done.stdout and not partial.exists()
