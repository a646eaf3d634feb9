"""One evaluation engine: the paper suite's numbers against the old definition, eps spellings
through every suite and verb, foreign models (plain, randomized, ONNX) and their bad input,
record files, RobustBench fields, the cost estimate and missing extras."""
from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest
import torch
from torch import nn

from robustq.attacks import make_attack
from robustq.checkpoint import FORMAT_VERSION, MODEL_FORMAT, save
from robustq.cli import main
from robustq.evaluate import decimals, write_results
from robustq.models import enresnet
from robustq.robustness import SuiteOptions, evaluate_suite
from tests.strong_helpers import fashion, trained_mlp

QUIET = dict(log=lambda *_: None)
NETS = '''
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 14 * 14, classes)

    def forward(self, x):
        z = torch.relu(self.conv((x - 0.5) / 0.5))          # normalization inside the model
        return self.head(nn.functional.max_pool2d(z, 2).flatten(1))


class Noisy(SmallCNN):
    def forward(self, x):                                   # random at test time, too
        return super().forward(x + 0.05 * torch.randn_like(x))


def small_cnn():
    return SmallCNN()


def noisy_cnn():
    return Noisy()


def not_a_module():
    return "a string"


def wrong_classes():
    return SmallCNN(classes=7)


def needs_args(depth):
    return SmallCNN()
'''


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """``mynets.py`` in a fresh working directory (what a user's own code looks like)."""
    (tmp_path / "mynets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("mynets", None)
    yield tmp_path
    sys.modules.pop("mynets", None)


def _weights(tmp_path, kind: str):
    sys.path.insert(0, str(tmp_path))
    try:
        import mynets
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    state = mynets.small_cnn().state_dict()
    if kind == "safetensors":
        from safetensors.torch import save_file
        save_file(state, str(tmp_path / "w.safetensors"))
        return tmp_path / "w.safetensors"
    torch.save(state, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def _model_file(path, noise=0.0):
    torch.manual_seed(0)
    model = enresnet(8, 1, noise, 1, 10).eval()
    arch = dict(depth=8, ensemble=1, noise=noise, in_channels=1, num_classes=10, input_size=28)
    save({"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "version": "test",
          "state_dict": model.state_dict(),
          "meta": {"arch": arch, "quant": "float", "method": "none", "bit_map": {},
                   "dataset": "fashion-mnist-10k"}}, path)
    return path


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert err.startswith("robustq: error: ") and err.count("\n") == 0, err
    for f in fragments:
        assert f in err, err


# --- the paper suite against the old definition ----------------------------------------

def test_paper_suite_numbers_match_the_old_protocol_on_a_deterministic_model():
    model = trained_mlp()
    _, _, x, y = fashion()
    x, y = x[:200], y[:200]
    r = evaluate_suite(model, x, y, "paper", 0.031, SuiteOptions(batch_size=64), **QUIET)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert r["natural_acc"] == pytest.approx(float(clean.double().mean()))
    old_all = torch.ones_like(clean)
    for name in ("fgsm", "ifgsm", "cw_paper"):
        # the old paper path: attack every example, in batches, score it once
        adv = torch.cat([make_attack(name, eps=0.031)(model, x[i:i + 64], y[i:i + 64])
                         for i in range(0, 200, 64)])
        with torch.no_grad():
            old = model(adv).argmax(1) == y
        old_all &= old
        # unchanged, except examples wrong on clean inputs no longer count as robust
        assert r["attacks"][name] == pytest.approx(float((old & clean).double().mean()))
        assert float(old.double().mean()) - r["attacks"][name] == pytest.approx(
            float((old & ~clean).double().mean()))
    assert r["robust_acc_worst"] == pytest.approx(float((old_all & clean).double().mean()))


class GridModel(nn.Module):
    """Predicts class 0 on images whose pixels all lie on the 1/255 grid (clean images) and
    class 1 elsewhere (any perturbed image): wrong on clean inputs but "right" under attack
    for examples labelled 1."""

    def forward(self, x):
        off = (x * 255 - (x * 255).round()).abs().flatten(1).amax(1) > 1e-3
        return torch.stack([(~off).float(), off.float()], 1) * 10


def test_worst_case_counts_an_example_wrong_on_clean_inputs_as_not_robust():
    x = torch.randint(20, 230, (10, 1, 6, 6)).float() / 255
    y = torch.tensor([1] * 5 + [0] * 5)   # half: clean wrong, attack "right"
    r = evaluate_suite(GridModel(), x, y, "paper", 0.031, SuiteOptions(attacks=["random_sign"]),
                       **QUIET)
    # the old paper path scored the attacks over every example and took the worst case over
    # the attacks only: it reported 50% robust where the model is right on clean inputs for
    # exactly the examples every perturbation breaks
    assert r["natural_acc"] == 0.5
    assert r["attacks"]["random_sign"] == 0.0 and r["robust_acc_worst"] == 0.0


def test_worst_case_is_per_draw_clean_and_every_attack():
    from robustq.robustness import Outcome
    c = lambda rows: torch.tensor(rows, dtype=torch.bool)
    out = Outcome({"natural": c([[1, 1, 0], [1, 0, 1]]), "a": c([[1, 0, 1], [0, 1, 1]]),
                   "b": c([[1, 1, 1], [1, 1, 0]])}, {}, {}, {})
    assert torch.equal(out.worst(), c([[1, 0, 0], [0, 0, 0]]))


def test_eval_attacks_and_attack_args_are_honoured_by_every_suite_that_takes_attacks():
    model = trained_mlp()
    _, _, x, y = fashion()
    opts = SuiteOptions(attacks=["fgsm"], attack_args={"pgd": {"steps": 2}, "cw_l2": {"steps": 2}},
                        checks=False)
    r = evaluate_suite(model, x[:20], y[:20], "strong", 0.031, opts, **QUIET)
    assert list(r["attacks"]) == ["fgsm", "pgd_ce", "pgd_cw", "cw_l2"]
    assert "steps=2" in r["attack_settings"]["pgd_ce"] and "steps=2" in r["attack_settings"]["cw_l2"]
    r = evaluate_suite(model, x[:20], y[:20], "paper", 0.031,
                       SuiteOptions(attacks=["ifgsm"], attack_args={"ifgsm": {"steps": 3}}), **QUIET)
    assert list(r["attacks"]) == ["ifgsm"] and "steps=3" in r["attack_settings"]["ifgsm"]


# --- eps spellings through every suite and verb ------------------------------------------

SUITE_CASES = ["paper", "quick", "strong", "blackbox",
               pytest.param("autoattack", marks=pytest.mark.skipif(
                   importlib.util.find_spec("pyautoattack") is None, reason="pyautoattack absent"))]


@pytest.mark.parametrize("eps", ["8/255", "0.031"])
@pytest.mark.parametrize("suite", SUITE_CASES)
def test_every_suite_takes_eps_as_a_fraction_or_a_number(suite, eps, nets, capsys):
    w = _weights(nets, "safetensors")
    cheap = "eval.attack_args={pgd: {steps: 2}, cw_l2: {steps: 2, binary_steps: 1}, cw_paper: {steps: 2}}"
    assert main(["eval", "--model", "mynets:small_cnn", "--weights", str(w), "--dataset",
                 "fashion-mnist-10k", "--suite", suite, "--quiet", "--set", f"eval.eps={eps}",
                 "--set", "eval.n_eval=12", "--set", cheap]) == 0, capsys.readouterr().err
    r = json.loads((nets / "mynets.small_cnn.results.json").read_text())
    assert r["eps"] == (eps if "/" in eps else 0.031) and r["suite"] == suite
    assert r["threat_model"] == "Linf" and 0 <= r["robust_acc_worst"] <= r["natural_acc"]
    assert all(v <= r["natural_acc"] for v in r["attacks"].values())
    if suite == "autoattack":
        assert isinstance(r["autoattack_acc"], str) and r["autoattack_version"] == "standard"


@pytest.mark.parametrize("eps", ["8/255", "0.031"])
@pytest.mark.parametrize("verb", ["run", "train"])
def test_train_and_eval_verbs_take_eps_as_a_fraction_or_a_number(verb, eps, tmp_path, capsys):
    from robustq.cli import _quickstart_path
    from tests.test_engine import TINY
    run = tmp_path / "run"
    sets = [a for s in [*TINY, "train.epochs=1", f"adv.eps={eps}", f"adv.step={eps}",
                        f"eval.eps={eps}"] for a in ("--set", s)]
    first = ["run"] if verb == "run" else ["train", str(_quickstart_path())]
    assert main([*first, "--out", str(run), "--quiet", *sets]) == 0, capsys.readouterr().err
    assert f"eps: {eps}" in (run / "config.yaml").read_text()
    assert main(["eval", str(run), "--quiet", "--curve-eps", f"0,{eps}", "--set", "eval.n_eval=8"]) == 0
    r = json.loads((run / "results.json").read_text())
    assert r["eps"] == (eps if "/" in eps else 0.031)
    written = f"eps='{eps}'" if "/" in eps else "eps=0.031"   # as the user wrote it
    assert r["curve"]["eps"] == ["0", eps] and written in r["attack_settings"]["fgsm"]


# --- foreign models -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_a_foreign_model_is_evaluated_from_its_factory_and_weights(kind, nets, capsys):
    w = _weights(nets, kind)
    assert main(["eval", "--model", "mynets:small_cnn", "--weights", str(w), "--dataset",
                 "fashion-mnist-10k", "--quiet", "--set", "eval.n_eval=16"]) == 0
    out = capsys.readouterr().out
    assert "mynets:small_cnn (SmallCNN)" in out and "estimated time: at most" in out
    r = json.loads((nets / "mynets.small_cnn.results.json").read_text())
    assert r["foreign"] and r["name"] == "mynets:small_cnn" and r["architecture"] == "SmallCNN"
    assert not r["randomized"] and r["suite"] == "paper" and set(r["attacks"]) == {"fgsm", "ifgsm", "cw_paper"}
    assert r["weights"] == str(w) and r["params"] == 8 * 9 + 8 + 8 * 196 * 10 + 10
    assert r["quant"] is None and 0 <= r["weight_sparsity"] <= 1


def test_a_randomized_foreign_model_is_detected_and_evaluated_with_eot(nets):
    assert main(["eval", "--model", "mynets:noisy_cnn", "--dataset", "fashion-mnist-10k",
                 "--suite", "quick", "--eot", "2", "--draws", "3", "--quiet",
                 "--set", "eval.n_eval=12"]) == 0
    r = json.loads((nets / "mynets.noisy_cnn.results.json").read_text())
    assert r["randomized"] and r["eot_samples"] == 2 and r["draws"] == 3
    assert r["number_forward_passes"] == 3 and "noise_off" not in r   # no block noise to switch off
    assert main(["eval", "--model", "mynets:noisy_cnn", "--dataset", "fashion-mnist-10k",
                 "--suite", "quick", "--eot", "1", "--quiet", "--set", "eval.n_eval=12"]) == 2


@pytest.mark.parametrize("args,fragments", [
    (["--model", "nosuchmodule:f"], ["module nosuchmodule does not import"]),
    (["--model", "mynets:nothing"], ["has no callable nothing"]),
    (["--model", "mynets"], ["--model takes MODULE:FACTORY"]),
    (["--model", "mynets:not_a_module"], ["returned a str, not a torch.nn.Module"]),
    (["--model", "mynets:needs_args"], ["calling needs_args() failed", "needs no arguments"]),
    (["--model", "mynets:wrong_classes"], ["gives outputs of shape [2, 7]", "[2, 10]"]),
    (["--model", "mynets:small_cnn", "--weights", "bad.pt"], ["do not fit the model", "missing"]),
    (["--model", "mynets:small_cnn", "--weights", "pickled.pt"], ["pickled Python objects"]),
    (["--model", "mynets:small_cnn", "--weights", "missing.pt"], ["does not exist"]),
    (["--model", "mynets:small_cnn", "--dataset", "cifar10"], ["fails on cifar10 images (3x32x32"]),
])
def test_foreign_model_bad_input_is_one_sentence_and_writes_nothing(args, fragments, nets, capsys):
    torch.save({"conv.weight": torch.zeros(3)}, nets / "bad.pt")
    torch.save(nn.Linear(2, 2), nets / "pickled.pt")   # a whole pickled module
    before = set(nets.iterdir())
    if "--dataset" not in args:
        args = [*args, "--dataset", "fashion-mnist-10k"]
    assert main(["eval", *args, "--quiet"]) == 2
    _one_line_error(capsys, *fragments)
    assert set(nets.iterdir()) - before <= {nets / "__pycache__"}   # nothing written


def test_model_without_dataset_is_refused(nets, capsys):
    assert main(["eval", "--model", "mynets:small_cnn"]) == 2
    _one_line_error(capsys, "--model needs --dataset NAME")


@pytest.fixture
def exported(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    dense = _model_file(tmp_path / "m.pt")
    assert main(["export", str(dense), "--onnx"]) == 0
    return tmp_path


def test_an_onnx_file_gets_clean_accuracy_and_black_box_attacks_only(exported, capsys):
    onnx = exported / "m.onnx"
    common = ["--quiet", "--set", "eval.n_eval=10"]
    assert main(["eval", str(onnx), *common]) == 0
    out = capsys.readouterr().out
    assert "no gradients: clean accuracy and black-box attacks only" in out
    r = json.loads((exported / "m.results.json").read_text())
    assert r["suite"] == "blackbox" and list(r["attacks"]) == ["random_sign"] and r["params"] is None
    assert main(["eval", str(onnx), "--surrogate", str(exported / "m.pt"), *common]) == 0
    r = json.loads((exported / "m.results.json").read_text())
    assert list(r["attacks"]) == ["random_sign", "transfer"]
    # the same numbers as the PyTorch model it was exported from (noise off in both)
    assert main(["eval", str(exported / "m.pt"), "--suite", "blackbox", *common]) == 0
    assert json.loads((exported / "m.results.json").read_text())["natural_acc"] == r["natural_acc"]
    before = sorted(exported.iterdir())
    for suite in ("paper", "strong"):
        assert main(["eval", str(onnx), "--suite", suite, *common]) == 2
        _one_line_error(capsys, "gives no gradients", "--suite blackbox")
    assert main(["eval", str(onnx), "--curve", *common]) == 2
    _one_line_error(capsys, "cannot run --curve")
    assert sorted(exported.iterdir()) == before


# --- records --------------------------------------------------------------------------

def test_records_are_never_overwritten(tmp_path):
    latest = tmp_path / "results.json"
    a = write_results({"suite": "paper", "n": 1}, latest)
    b = write_results({"suite": "paper", "n": 2}, latest)
    c = write_results({"suite": "strong", "n": 3}, latest)
    assert len({a, b, c}) == 3 and re.fullmatch(r"eval-paper-\d{8}-\d{6}(-\d+)?\.json", a.name)
    assert [json.loads(p.read_text())["n"] for p in (a, b, c)] == [1, 2, 3]
    assert json.loads(latest.read_text())["n"] == 3
    other = write_results({"suite": "quick"}, tmp_path / "r.json")
    assert other.name.startswith("r.eval-quick-")


def test_record_carries_robustbench_fields_typed_and_rounded(tmp_path, capsys):
    model = _model_file(tmp_path / "m.pt")
    assert main(["eval", str(model), "--quiet", "--set", "eval.n_eval=30",
                 "--set", "eval.eps=8/255"]) == 0
    r = json.loads((tmp_path / "m.results.json").read_text())
    types = {"name": str, "architecture": str, "clean_acc": str, "reported": str,
             "threat_model": str, "eps": str, "number_forward_passes": int, "dataset": str}
    for key, tp in types.items():
        assert isinstance(r[key], tp), key
    assert r["threat_model"] == "Linf" and r["eps"] == "8/255" and r["dataset"] == "fashion-mnist-10k"
    assert r["number_forward_passes"] == r["draws"] == 1 and "autoattack_acc" not in r
    assert float(r["clean_acc"]) == pytest.approx(100 * r["natural_acc"], abs=0.05)
    assert float(r["reported"]) == pytest.approx(100 * r["robust_acc_worst"], abs=0.05)
    assert r["architecture"] == "ResNet8, float weights (none)"
    for v in [r["natural_acc"], r["robust_acc_worst"], *r["attacks"].values()]:
        assert v == round(v, decimals(30)) and round(v * 30) == pytest.approx(v * 30, abs=0.02)
    for key in ("weight_sparsity", "channel_sparsity", "params_pruned", "flops"):
        assert key in r, key   # merged by the eval verb from the efficiency code


# --- cost estimate, progress and missing extras ------------------------------------------

def test_cost_estimate_counts_the_passes_of_every_attack():
    from robustq.robustness.run import estimate
    model = trained_mlp()
    _, _, x, y = fashion()
    attacks = {"ifgsm": make_attack("ifgsm", steps=20), "pgd": make_attack("pgd", steps=5, restarts=2)}
    line = estimate(model, x[:10], y[:10], [(attacks, 10, 1)], SuiteOptions())
    # 10 examples x (20 + 5 x 2) gradient passes; clean draw + (0 + 1) + (2 + 1) forwards each
    assert "at most" in line and "300 gradient and 50 forward passes" in line


def test_progress_bars_run_without_a_terminal():
    model = trained_mlp()
    _, _, x, y = fashion()
    r = evaluate_suite(model, x[:20], y[:20], "quick", 0.031, SuiteOptions(progress=True), **QUIET)
    assert 0 <= r["robust_acc_worst"] <= 1


def test_a_missing_optional_package_is_reported_before_any_work(tmp_path, capsys, monkeypatch):
    model = _model_file(tmp_path / "m.pt")
    real = importlib.util.find_spec
    gone = {"pyautoattack", "matplotlib"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in gone else real(name, *a))
    assert main(["eval", str(model), "--suite", "autoattack", "--set", "eval.n_eval=4"]) == 2
    out = capsys.readouterr()
    assert "suite autoattack:" not in out.out and 'pip install "robustq[autoattack]"' in out.err
    assert main(["eval", str(model), "--curve", "--set", "eval.n_eval=4"]) == 2
    _one_line_error(capsys, "--curve", 'pip install "robustq[plot]"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_model_file_asked_for_another_dataset_is_refused(tmp_path, capsys):
    model = _model_file(tmp_path / "m.pt")
    assert main(["eval", str(model), "--dataset", "cifar10"]) == 2
    _one_line_error(capsys, "fails on cifar10 images (3x32x32")


def test_evaluation_imports_no_pruning_or_export_code():
    import subprocess
    code = ("import sys, robustq.evaluate, robustq.robustness, robustq.attacks; "
            "print(sorted(m for m in sys.modules if m.startswith('robustq.efficiency')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _docs_example():
    """The worked example of docs/robustness.md: the module's code and the eval command."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "robustness.md").read_text()
    module = re.search(r'```python\n("""mynets\.py.*?)```', text, re.S).group(1)
    command = re.search(r"```bash\npython mynets\.py\n(robustq eval --model mynets:.*?)\n```",
                        text, re.S).group(1)
    return module, command.split()[1:]


def test_the_docs_worked_example_evaluates_its_small_model(tmp_path, monkeypatch, capsys):
    module, args = _docs_example()
    (tmp_path / "mynets.py").write_text(module)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("mynets", None)
    import runpy
    from safetensors.torch import save_file
    save_file(runpy.run_path("mynets.py")["small_cnn"]().state_dict(), "small_cnn.safetensors")
    cheap = ["--set", "eval.n_eval=8", "--set", "eval.attack_args={pgd: {steps: 2}, cw_l2: "
             "{steps: 2, binary_steps: 1}, cw_paper: {steps: 2}, ifgsm: {steps: 2}}", "--quiet"]
    assert main([*args, *cheap]) == 0, capsys.readouterr().err   # its command, on 8 images
    r = json.loads((tmp_path / "mynets.small_cnn.results.json").read_text())
    assert r["architecture"] == "SmallCNN" and r["suite"] == "strong" and not r["randomized"]
    sys.modules.pop("mynets", None)


@pytest.mark.slow
def test_the_docs_worked_example_as_written(tmp_path, monkeypatch):
    """``python mynets.py`` (one epoch) then the docs' command, unchanged (about a minute)."""
    import runpy
    module, args = _docs_example()
    (tmp_path / "mynets.py").write_text(module)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("mynets", None)
    runpy.run_path("mynets.py", run_name="__main__")
    assert main(args) == 0
    r = json.loads((tmp_path / "mynets.small_cnn.results.json").read_text())
    assert r["natural_acc"] > 0.7 and r["robust_acc_worst"] < r["natural_acc"]
    assert not r["masking_suspected"]
    sys.modules.pop("mynets", None)
