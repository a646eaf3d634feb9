"""The strong attacks: the contract under EOT for every registered attack, stronger settings
never help the model, EOT lowers gradient variance, and cross-checks against code no one
here wrote (torchattacks; AutoAttack's APGD-CE via pyautoattack), skipped when absent."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustq.attacks import ATTACKS, make_attack
from robustq.models import enresnet
from robustq.robustness import SuiteOptions, evaluate_suite
from tests.strong_helpers import accuracy, fashion, trained_mlp

CHEAP = {"ifgsm": {"steps": 2}, "pgd": {"steps": 2, "restarts": 2}, "cw_paper": {"steps": 2},
         "trades_kl": {"steps": 2}, "cw_l2": {"steps": 2, "binary_steps": 2},
         "apgd_ce": {"steps": 2}, "apgd_dlr": {"steps": 2}, "random_sign": {"tries": 2},
         "transfer": {"inner_args": {"steps": 2}}}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_keeps_the_contract_on_a_noisy_model_with_eot(name):
    """eps-ball, [0, 1], detached, mode restored, no parameter .grad, requires_grad kept."""
    cls = ATTACKS.get(name)
    if getattr(cls, "requires", None):
        pytest.importorskip(cls.requires)
    torch.manual_seed(0)
    model = enresnet(8, 2, 0.1, 3, 10).train()
    surrogate = enresnet(8, 1, 0.0, 3, 10).eval()
    x, y = torch.rand(5, 3, 8, 8), torch.randint(0, 10, (5,))
    extra = {"surrogate": surrogate} if name == "transfer" else {}
    attack = make_attack(name, eps="8/255", eot_samples=2, **CHEAP.get(name, {}), **extra)
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= attack.radius + 1e-6   # 8/255 but for N-FGSM (3 eps)
    assert model.training and not surrogate.training
    for m in (model, surrogate):
        assert all(p.grad is None and p.requires_grad for p in m.parameters())
    assert "eps='8/255'" in repr(attack) and "eot_samples=2" in repr(attack)


def test_more_restarts_steps_and_search_never_raise_accuracy():
    model = trained_mlp()
    _, _, x, y = fashion()
    acc = {}
    for key, name, kw in [("pgd_r1", "pgd", dict(steps=5)), ("pgd_r3", "pgd", dict(steps=5, restarts=3)),
                          ("pgd_s20", "pgd", dict(steps=20, alpha=0.1 / 8)),
                          ("cw_b1", "cw_l2", dict(steps=20, binary_steps=1)),
                          ("cw_b3", "cw_l2", dict(steps=20, binary_steps=3))]:
        torch.manual_seed(1)  # the first restart / search step is the same run in each pair
        acc[key] = accuracy(model, make_attack(name, eps=0.1, **kw)(model, x, y), y)
    assert acc["pgd_r3"] <= acc["pgd_r1"]          # exact: restarts keep the worst case
    assert acc["cw_b3"] <= acc["cw_b1"]            # exact: a deterministic first search step
    assert acc["pgd_s20"] <= acc["pgd_r1"] + 2 / len(y)  # more steps: within two examples


def test_suite_worst_case_is_never_above_any_of_its_attacks():
    model = trained_mlp()
    _, _, x, y = fashion()
    r = evaluate_suite(model, x[:100], y[:100], "quick", 0.1, SuiteOptions(checks=False),
                       log=lambda *_: None)
    assert r["robust_acc_worst"] <= min([r["natural_acc"], *r["attacks"].values()])
    assert not r["randomized"] and r["eot_samples"] == 1 and r["draws"] == 1


def test_eot_lowers_the_variance_of_the_gradient_of_a_noisy_model():
    torch.manual_seed(0)
    model = enresnet(8, 1, 0.1, 3, 10).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    loss = lambda z: F.cross_entropy(z, y, reduction="sum")

    def spread(eot: int) -> float:
        probe = make_attack("fgsm", eot_samples=eot)
        g = torch.stack([probe.input_grad(model, x, loss) for _ in range(12)])
        return g.var(0).mean().item()

    one, eight = spread(1), spread(8)
    assert one > 0 and eight < 0.35 * one   # 1/8 in expectation; generous for 12 repeats


# --- cross-checks against independent implementations ------------------------------------

def test_fgsm_and_bim_match_torchattacks_and_pgd_accuracy_is_close():
    """Same model and inputs: FGSM and BIM give the same adversarial examples (to float
    rounding); PGD robust accuracy (random starts differ) within 3 points on 300 images."""
    torchattacks = pytest.importorskip("torchattacks")
    model = trained_mlp()
    _, _, x, y = fashion()
    ours = make_attack("fgsm", eps=0.05)(model, x, y)
    theirs = torchattacks.FGSM(model, eps=0.05)(x, y)
    assert (ours - theirs).abs().max() < 1e-6
    ours = make_attack("ifgsm", eps=0.05, alpha=0.01, steps=10)(model, x, y)
    theirs = torchattacks.BIM(model, eps=0.05, alpha=0.01, steps=10)(x, y)
    assert (ours - theirs).abs().max() < 1e-6
    torch.manual_seed(0)
    ours = accuracy(model, make_attack("pgd", eps=0.05, alpha=0.01, steps=10)(model, x, y), y)
    theirs = accuracy(model, torchattacks.PGD(model, eps=0.05, alpha=0.01, steps=10,
                                              random_start=True)(x, y), y)
    assert abs(ours - theirs) <= 0.03


def test_strong_suite_is_never_weaker_than_autoattack_apgd_ce():
    """robustq's strong worst case may exceed APGD-CE's accuracy by at most 2 points."""
    pytest.importorskip("pyautoattack")
    model = trained_mlp()
    _, _, x, y = fashion()
    x, y = x[:150], y[:150]
    apgd = accuracy(model, make_attack("apgd_ce", eps=0.05)(model, x, y), y)
    r = evaluate_suite(model, x, y, "strong", 0.05, SuiteOptions(checks=False),
                       log=lambda *_: None)
    assert r["robust_acc_worst"] <= apgd + 0.02


@pytest.mark.slow
def test_autoattack_suite_standard_on_a_deterministic_model_and_rand_on_a_noisy_one():
    pytest.importorskip("pyautoattack")
    model = trained_mlp()
    _, _, x, y = fashion()
    r = evaluate_suite(model, x[:40], y[:40], "autoattack", 0.05, SuiteOptions(),
                       log=lambda *_: None)
    assert r["autoattack_version"] == "standard" and set(r["autoattack_log"]) == {
        "apgd-ce", "apgd-t", "fab-t", "square"}
    assert r["attacks"]["autoattack"] <= r["attacks"]["fgsm"]
    torch.manual_seed(0)
    noisy = enresnet(8, 1, 0.1, 3, 10).eval()
    xs, ys = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    r = evaluate_suite(noisy, xs, ys, "autoattack", 0.05, SuiteOptions(draws=2, noise_off=False),
                       log=lambda *_: None)
    assert r["autoattack_version"] == "rand" and r["eot_samples"] == 20
    assert "eot_iter=20" in r["attack_settings"]["autoattack"]


def test_autoattack_rand_runs_on_a_channels_last_model_and_keeps_the_layout():
    """robustq evaluates in channels_last; AutoAttack's APGD-DLR zero-gradient check calls
    ``.view`` on a gradient shaped like the input, which a channels_last input breaks."""
    pytest.importorskip("pyautoattack")
    torch.manual_seed(0)
    model = enresnet(8, 1, 0.0, 3, 10).eval().to(memory_format=torch.channels_last)
    x = torch.rand(6, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x).argmax(1)                 # all correct, so APGD-DLR gets the survivors
    attack = make_attack("autoattack", eps=1e-3, eot_samples=2)   # rand version
    x_adv = attack(model, x, y)
    assert "apgd-dlr" in attack.extras(6)["autoattack_log"]        # APGD-DLR did run
    assert x_adv.is_contiguous(memory_format=torch.channels_last)
    assert (x_adv - x).abs().max() <= 1e-3 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1


def test_apgd_dlr_runs_on_a_channels_last_input_and_keeps_the_layout():
    pytest.importorskip("pyautoattack")
    torch.manual_seed(0)
    model = enresnet(8, 1, 0.0, 3, 10).eval().to(memory_format=torch.channels_last)
    x = torch.rand(6, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x).argmax(1)
    x_adv = make_attack("apgd_dlr", eps=1e-3, steps=5)(model, x, y)
    assert x_adv.is_contiguous(memory_format=torch.channels_last)
    assert (x_adv - x).abs().max() <= 1e-3 + 1e-6
