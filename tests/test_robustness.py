"""Evaluation suites: randomness handled honestly, the masking checks fire on a model built to
mask gradients and stay quiet on a plain one, the robustness curve, the results record."""
from __future__ import annotations

import json

import pytest
import torch

from robustq.checkpoint import FORMAT_VERSION, MODEL_FORMAT, save
from robustq.cli import main
from robustq.models import enresnet, set_noise
from robustq.robustness import (SingleSampleError, SuiteOptions, evaluate_suite, is_randomized,
                                plot_curve, robustness_curve)
from robustq.robustness.curve import monotone_flag
from robustq.robustness.sampling import summarize
from tests.strong_helpers import fashion, trained_mlp

QUIET = dict(log=lambda *_: None)


def test_randomness_is_detected_from_repeated_forward_passes():
    torch.manual_seed(0)
    model, x = enresnet(8, 1, 0.1, 3, 10).eval(), torch.rand(4, 3, 8, 8)
    assert is_randomized(model, x)
    set_noise(model, False)
    assert not is_randomized(model, x)


def test_a_single_sample_evaluation_of_a_random_model_is_refused_unless_asked():
    torch.manual_seed(0)
    model = enresnet(8, 1, 0.1, 3, 10).eval()
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 10, (6,))
    with pytest.raises(SingleSampleError, match="allow-single-sample"):
        evaluate_suite(model, x, y, "quick", 0.03, SuiteOptions(eot_samples=1), **QUIET)
    with pytest.raises(SingleSampleError):
        evaluate_suite(model, x, y, "quick", 0.03, SuiteOptions(eot_samples=2, draws=1), **QUIET)
    r = evaluate_suite(model, x, y, "quick", 0.03, SuiteOptions(eot_samples=1, draws=1,
                       allow_single_sample=True), **QUIET)
    assert r["randomized"] and r["eot_samples"] == 1


def test_a_random_model_is_scored_over_draws_and_also_with_noise_off():
    torch.manual_seed(0)
    model = enresnet(8, 1, 0.5, 3, 10).eval()
    x, y = torch.rand(20, 3, 8, 8), torch.randint(0, 10, (20,))
    r = evaluate_suite(model, x, y, "quick", "8/255", SuiteOptions(eot_samples=2, draws=5), **QUIET)
    assert r["randomized"] and r["eot_samples"] == 2 and r["draws"] == 5
    assert r["eps"] == "8/255" and r["n_eval"] == 20 and set(r["seeds"]) == {"fgsm", "pgd_ce"}
    assert set(r["noise_off"]["attacks"]) == {"fgsm", "pgd_ce"}
    assert r["natural_acc_std"] >= 0 and set(r["attacks_std"]) == {"fgsm", "pgd_ce"}
    assert is_randomized(model, x)  # the model's noise is back on afterwards


def test_summary_of_draws_is_mean_and_spread_of_per_draw_accuracy():
    c = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    acc, spread = summarize(c)
    assert acc == pytest.approx(0.375) and spread == pytest.approx(torch.tensor([0.5, 0.25]).std().item())


def _strong(model, surrogate=None, n=100):
    _, _, x, y = fashion()
    opts = SuiteOptions(n_check=n, surrogate=surrogate)
    return evaluate_suite(model, x[:n], y[:n], "strong", 0.1, opts, **QUIET)


def test_masking_checks_stay_quiet_on_a_plain_trained_model():
    r = _strong(trained_mlp())
    flags = r["masking_checks"]
    assert not r["masking_suspected"], {k: f["explanation"] for k, f in flags.items()}
    assert not flags["randomized"]["fired"]
    assert all(isinstance(f["explanation"], str) and f["explanation"] for f in flags.values())


def test_masking_checks_fire_on_a_hard_threshold_input_layer():
    masked = trained_mlp(masked=True)
    surrogate = masked[1]  # the same MLP without its threshold: BPDA's identity approximation
    r = _strong(masked, surrogate=surrogate)
    flags = r["masking_checks"]
    assert r["masking_suspected"]
    assert flags["zero_gradients"]["fired"] and flags["zero_gradients"]["value"] == 1.0
    assert flags["black_box"]["fired"] and flags["large_eps"]["fired"]


def test_curve_numbers_flag_and_png(tmp_path):
    model = trained_mlp()
    _, _, x, y = fashion()
    curve = robustness_curve(model, x[:100], y[:100], ["0", "2/255", "0.05", "0.1"], steps=5, **QUIET)
    assert curve["eps"] == ["0", "2/255", "0.05", "0.1"] and len(curve["acc"]) == 4
    assert curve["acc"] == sorted(curve["acc"], reverse=True)
    assert not monotone_flag(curve)["fired"]
    assert monotone_flag({**curve, "acc": [0.5, 0.2, 0.4, 0.1]})["fired"]
    pytest.importorskip("matplotlib")
    png = plot_curve(curve, tmp_path / "curve.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_cli_runs_a_suite_and_keeps_the_paper_record(tmp_path, capsys):
    torch.manual_seed(0)
    model = enresnet(8, 1, 0.1, 1, 10).eval()
    arch = dict(depth=8, ensemble=1, noise=0.1, in_channels=1, num_classes=10, input_size=28)
    save({"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "version": "test",
          "state_dict": model.state_dict(),
          "meta": {"arch": arch, "quant": "float", "method": "none", "bit_map": {},
                   "dataset": "fashion-mnist-10k"}}, tmp_path / "m.pt")
    out = tmp_path / "r.json"
    common = ["--results", str(out), "--set", "eval.n_eval=6", "--set", "eval.batch_size=6"]
    assert main(["eval", str(tmp_path / "m.pt"), *common]) == 0
    assert main(["eval", str(tmp_path / "m.pt"), "--suite", "quick", "--eot", "1", *common]) == 2
    assert "allow-single-sample" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "m.pt"), "--suite", "quick", "--eot", "2", "--draws", "2",
                 "--curve-eps", "0,0.1", *common]) == 0
    r = json.loads(out.read_text())
    assert r["suite"] == "quick" and r["randomized"] and r["eot_samples"] == 2
    assert r["curve"]["eps"] == ["0", "0.1"] and "masking_checks" in r
    for key in ("dataset", "model", "natural_acc", "attacks", "robust_acc_worst", "n_eval",
                "natural_acc_noise_off", "params", "version"):
        assert key in r, key
    records = sorted(tmp_path.glob("r.eval-*.json"))   # one per evaluation; the refused one wrote none
    assert [json.loads(p.read_text())["suite"] for p in records] == ["paper", "quick"]
    assert json.loads(records[1].read_text()) == r   # results.json is the latest record
    assert (tmp_path / "r.curve.png").is_file()
