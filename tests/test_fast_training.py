"""Fast adversarial training: FGSM-RS, N-FGSM, free AT, the one-cycle schedule, the
catastrophic-overfitting guard, TRADES' eval-mode attack, exact resume with each method."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustq.attacks import make_attack
from robustq.attacks.free import FreeReplay
from robustq.checkpoint import CHECKPOINT_FORMAT, MODEL_FORMAT, load
from robustq.config import load_config
from robustq.engine import TrainStep, training_summary
from robustq.errors import ConfigError
from robustq.guard import overfitting
from robustq.models import enresnet
from robustq.schedule import lr_factor

from .test_engine import CPU, rows, run

EPS = 0.05


def model_and_batch(seed=0):
    torch.manual_seed(seed)
    model = enresnet(8, 1, 0.0, 3, 10).eval()
    x = torch.rand(8, 3, 8, 8) * 0.5 + 0.25   # interior: no clipping at [0, 1]
    return model, x, torch.randint(0, 10, (8,))


def grad_at(model, x, y):
    x_ = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(x_), y, reduction="sum"), x_)
    return g


def test_fgsm_rs_is_one_projected_step_of_1_25_eps_from_a_uniform_start():
    model, x, y = model_and_batch()
    torch.manual_seed(5)
    x_adv = make_attack("fgsm_rs", eps=EPS)(model, x, y)
    torch.manual_seed(5)
    start = x + torch.empty_like(x).uniform_(-EPS, EPS)
    want = torch.min(torch.max(start + 1.25 * EPS * grad_at(model, start, y).sign(), x - EPS), x + EPS)
    assert torch.allclose(x_adv, want, atol=1e-7)
    assert (x_adv - x).abs().max() <= EPS + 1e-7


def test_n_fgsm_leaves_the_eps_ball_as_its_paper_says():
    model, x, y = model_and_batch()
    torch.manual_seed(5)
    attack = make_attack("n_fgsm", eps=EPS)
    x_adv = attack(model, x, y)
    torch.manual_seed(5)
    start = x + torch.empty_like(x).uniform_(-2 * EPS, 2 * EPS)
    want = start + EPS * grad_at(model, start, y).sign()   # not projected
    assert torch.allclose(x_adv, want.clamp(0, 1), atol=1e-7)
    d = (x_adv - x).abs().max()
    assert EPS < d <= 3 * EPS + 1e-6 and attack.radius == pytest.approx(3 * EPS)
    assert make_attack("n_fgsm", eps=EPS, k=0).radius == pytest.approx(EPS)


def test_free_replay_moves_the_perturbation_between_replays(monkeypatch):
    cfg = load_config(None, ["model.depth=8", "loss.name=at", "adv.attack=free", "adv.replay=3",
                             "adv.eps=0.05", "train.lr=0.01"])
    model = enresnet(8, 1, 0.1, 1, 10)
    step = TrainStep(cfg, model, CPU, "fp32")
    seen = []
    orig = FreeReplay.inputs
    monkeypatch.setattr(FreeReplay, "inputs", lambda self, x: seen.append(orig(self, x)) or seen[-1])
    x, y = torch.rand(4, 1, 8, 8) * 0.5 + 0.25, torch.randint(0, 10, (4,))
    w0 = model.head.weight.clone() if hasattr(model, "head") else next(model.parameters()).clone()
    step(model, x, y)
    assert len(seen) == 3
    assert torch.equal(seen[0].detach(), x)                         # delta starts at 0
    for a, b in zip(seen, seen[1:]):
        assert not torch.equal(a.detach(), b.detach())              # each replay moved delta
        assert ((b.detach() - x).abs().max() <= 0.05 + 1e-6)
    assert step.sched.last_epoch == 3                               # 3 optimizer steps
    w1 = model.head.weight if hasattr(model, "head") else next(model.parameters())
    assert not torch.equal(w0, w1)
    # the perturbation is carried to the next minibatch
    step(model, x, y)
    assert not torch.equal(seen[3].detach(), x)


def test_trades_inner_maximisation_runs_with_batchnorm_in_eval_mode():
    cfg = load_config(None, ["model.depth=8", "loss.name=trades", "adv.steps=3"])
    model = enresnet(8, 1, 0.1, 1, 10).train()
    step = TrainStep(cfg, model, CPU, "fp32")
    assert step.attack.model_mode == "eval"
    step(model, torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    counts = {int(v) for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counts == {2}   # the clean and the adversarial training forwards only, not 3 + 2


def test_one_cycle_values_at_known_steps():
    f = lambda step: lr_factor(step, 10, 5, "onecycle", [], 0.1, 0.4)   # 50 steps, peak at 20
    assert f(0) == pytest.approx(1 / 20) and f(9) == pytest.approx(0.5)
    assert f(19) == pytest.approx(1.0) and f(34) == pytest.approx(0.5)
    assert f(49) == 0.0 and max(f(s) for s in range(50)) == pytest.approx(1.0)
    m = lambda step: lr_factor(step, 10, 200, "multistep", [0.4, 0.6, 0.8], 0.1, 0.4)
    assert m(799) == 1 and m(800) == pytest.approx(0.1) and m(1600) == pytest.approx(1e-3)


HEALTHY = [{"val_robust_acc": a, "val_fgsm_acc": a + 0.05} for a in (0.2, 0.3, 0.35, 0.38, 0.37)]


def test_guard_fires_on_a_constructed_collapse_and_not_on_a_healthy_run():
    for i in range(1, len(HEALTHY) + 1):
        assert overfitting(HEALTHY[:i], 0.2, 0.3) is None
    drop = HEALTHY + [{"val_robust_acc": 0.02, "val_fgsm_acc": 0.1}]
    assert "fell to 0.020 from 0.380" in overfitting(drop, 0.2, 0.3)
    gap = HEALTHY[:1] + [{"val_robust_acc": 0.15, "val_fgsm_acc": 0.7}]
    assert "FGSM accuracy 0.700" in overfitting(gap, 0.2, 0.3)


@pytest.mark.parametrize("method", ["fgsm_rs", "n_fgsm", "free"])
def test_exact_resume_with_each_fast_method(tmp_path, method):
    extra = [f"adv.attack={method}", "adv.replay=2", "train.schedule=onecycle"]
    full = run(tmp_path, "full", extra)

    def crash(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "part", extra, on_epoch_end=crash)
    part = run(tmp_path, "part", extra, resume=True)
    a = load(full / "checkpoint.pt", CHECKPOINT_FORMAT)
    b = load(part / "checkpoint.pt", CHECKPOINT_FORMAT)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert rows(full) == rows(part)
    assert training_summary(full)["epochs_run"] == 3


def test_guard_stop_keeps_the_last_good_model(tmp_path, monkeypatch):
    import robustq.engine as engine
    calls = iter([None, "constructed collapse", None])
    monkeypatch.setattr(engine, "overfitting", lambda *a: next(calls))
    d = run(tmp_path, "co", ["train.co_guard=stop", "quant.cutoff=0"])
    summary = training_summary(d)
    assert summary == {"epochs_run": 2, "selected_epoch": 1, "catastrophic_overfitting": True,
                       "co_epochs": [2]}
    assert load(d / "model.pt", MODEL_FORMAT)["meta"]["epoch"] == 1
    assert load(d / "checkpoint.pt", CHECKPOINT_FORMAT)["stopped"].startswith("catastrophic")


@pytest.mark.parametrize("overrides, message", [
    (["adv.attack=fgsm"], "not a training attack"),
    (["adv.attack=n_fgsm", "loss.name=trades"], "keeps its own KL attack"),
    (["adv.attack=free", "loss.name=natural"], "trains without an attack"),
    (["adv.attack=free", "adv.replay=0"], "replay"),
    (["adv.fast_step=2"], "fast_step"),
    (["train.schedule=cosine"], "multistep or onecycle"),
    (["train.peak=1.0"], "train.peak"),
    (["train.epochs=10", "train.milestones=[0.4, 0.97]"], "never happen"),
    (["train.co_guard=maybe"], "co_guard"),
])
def test_bad_fast_training_settings_are_one_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
