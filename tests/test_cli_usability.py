"""First contact: bundled configs by name from any folder, the key reference, the Ctrl-C
messages, argument parsing that matches the config, extras checked before the work."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robustq
from robustq import engine
from robustq.cli import build_parser, main
from robustq.config import RunConfig, load_config
from robustq.config_catalog import bundled_configs, config_keys, resolve_config
from robustq.errors import ConfigError
from robustq.interrupted import State, note
from tests.test_engine import TINY

ROOT = Path(__file__).resolve().parents[1]


def sets(items):
    return [a for item in items for a in ("--set", item)]


def test_configs_folder_is_the_bundled_one_not_a_copy():
    assert (ROOT / "configs").resolve() == (ROOT / "robustq" / "configs").resolve()
    assert set(bundled_configs()) == {p.stem for p in (ROOT / "robustq" / "configs").glob("*.yaml")}


@pytest.mark.parametrize("spec", ["quickstart", "quickstart.yaml", "configs/quickstart.yaml"])
def test_a_bundled_config_by_name_from_any_folder(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config(spec) == bundled_configs()["quickstart"]
    assert load_config(resolve_config(spec)).name == "quickstart"


def test_an_existing_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("name: mine\n")
    assert load_config(resolve_config("quickstart.yaml")).name == "mine"
    with pytest.raises(ConfigError, match="no bundled config"):
        resolve_config("elsewhere/quickstart.yaml")


def test_config_keys_cover_every_field_with_default_type_and_help():
    keys = {k.key: k for k in config_keys()}
    import typing
    hints = typing.get_type_hints(RunConfig)
    sections = [n for n, t in hints.items() if dataclasses.is_dataclass(t)]
    expected = {n for n, t in hints.items() if not dataclasses.is_dataclass(t)}
    for s in sections:
        expected |= {f"{s}.{f.name}" for f in dataclasses.fields(hints[s])}
    assert set(keys) == expected
    assert [k for k, v in keys.items() if not v.help] == []  # every key documents itself
    default = RunConfig()
    for k, v in keys.items():  # each default is the dataclass default, as --set would set it
        node = default
        for part in k.split("."):
            node = getattr(node, part)
        assert v.default == node, k
    assert keys["train.max_batches"].type == "int or null"


def test_config_verb(capsys):
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in bundled_configs())
    assert main(["config", "show", "quickstart"]) == 0
    assert capsys.readouterr().out == bundled_configs()["quickstart"].read_text()
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    assert "train.max_batches" in out and "cap batches per epoch" in out
    assert main(["config", "show", "nope"]) == 2


def test_train_by_name_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "quickstart", "--no-eval", "--quiet", "--threads", "1",
                 *sets(TINY), "--set", "train.epochs=1", "--set", "train.max_batches=1"]) == 0
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoint.pt").is_file()
    assert runs[0].name.startswith("quickstart-")


def test_device_and_curve_parse_like_the_config():
    p = build_parser()
    assert p.parse_args(["train", "quickstart", "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit):
        p.parse_args(["train", "quickstart", "--device", "gpu"])
    a = p.parse_args(["eval", "--curve", "runs/x"])  # the run dir is not taken as the curve
    assert a.target == "runs/x" and a.curve is True
    a = p.parse_args(["eval", "runs/x", "--curve-eps", "0,8/255"])
    assert a.curve_eps == "0,8/255"


def test_eval_help_shows_an_eval_key(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "eval.n_eval" in out and "train.epochs" not in out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("usab") / "run"
    assert main(["train", "quickstart", "--no-eval", "--quiet", "--threads", "1",
                 "--out", str(out), *sets(TINY), "--set", "train.epochs=1"]) == 0
    return out


def test_robustq_load_reads_a_model_pt(tiny_run):
    model = robustq.load(tiny_run / "model.pt")
    assert not model.training
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def _interrupt_at(monkeypatch, where):
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(*where, boom)


def test_ctrl_c_during_training_names_the_run_and_the_resume_command(tmp_path, monkeypatch, capsys):
    calls = []
    from robustq import resume
    real = resume.save   # checkpoints are written by resume.Saver

    def save_then_stop(obj, path):  # stop right after the first epoch's checkpoint
        real(obj, path)
        if Path(path).name == "checkpoint.pt":
            calls.append(path)
            raise KeyboardInterrupt
    monkeypatch.setattr(resume, "save", save_then_stop)
    out = tmp_path / "r"
    assert main(["run", "--out", str(out), "--quiet", "--threads", "1", *sets(TINY)]) == 130
    err = capsys.readouterr().err
    assert f"1 of 3 epochs are kept in {out / 'checkpoint.pt'}" in err
    assert f"robustq run --resume {out}" in err and "RUN_DIR" not in err


def test_ctrl_c_before_an_epoch_finished_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    _interrupt_at(monkeypatch, (engine.TrainStep, "__call__"))
    out = tmp_path / "r"
    argv = ["train", "quickstart", "--out", str(out), "--quiet", "--threads", "1", *sets(TINY)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert not out.exists() and "nothing was kept" in err and f"--out {out}" in err


def test_ctrl_c_during_the_evaluation_after_training(tmp_path, monkeypatch, capsys):
    import robustq.evaluate
    _interrupt_at(monkeypatch, (robustq.evaluate, "evaluate"))
    out = tmp_path / "r"
    assert main(["run", "--out", str(out), "--quiet", "--threads", "1", *sets(TINY)]) == 130
    err = capsys.readouterr().err
    assert f"training finished and is kept in {out}" in err and f"robustq eval {out}" in err


def test_ctrl_c_notes_per_verb():
    ev = note(State("eval", ["eval", "runs/a b", "--suite", "strong"]))
    assert "wrote nothing" in ev and "robustq eval 'runs/a b' --suite strong" in ev
    assert "robustq train --resume" not in ev
    assert ".part" in note(State("data", ["data", "fetch", "cifar10"]))
    assert "robustq export m.pt --onnx" in note(State("export", ["export", "m.pt", "--onnx"]))


def test_a_missing_extra_fails_before_anything_is_written(tiny_run, monkeypatch, capsys):
    import robustq.extras as extras
    monkeypatch.setattr(extras, "missing", lambda extra: list(extras.EXTRAS[extra]))
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["export", str(tiny_run), "--onnx"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "robustq[onnx]"' in err and err.count("\n") == 1
    assert main(["eval", str(tiny_run), "--curve", "--quiet"]) == 2
    assert 'robustq[plot]' in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--suite", "autoattack"]) == 2
    assert 'robustq[autoattack]' in capsys.readouterr().err
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_the_bundled_configs_are_installed_as_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"configs/*.yaml"' in text
    code = "import robustq.config_catalog as c; print(sorted(c.bundled_configs()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert "quickstart" in out
