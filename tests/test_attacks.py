"""The attack contract (STYLE.md #4) for every registered attack, and attack strength order."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustq.attacks import ATTACKS, make_attack
from robustq.eps import Eps
from robustq.data import load_dataset
from robustq.models import enresnet

# cheap settings so the contract test stays fast; attacks not listed use their defaults
FAST = {"ifgsm": {"steps": 3}, "pgd": {"steps": 3, "restarts": 2}, "cw_paper": {"steps": 3},
        "trades_kl": {"steps": 2}, "cw_l2": {"steps": 3, "binary_steps": 2},
        "apgd_ce": {"steps": 3}, "apgd_dlr": {"steps": 3}, "random_sign": {"tries": 3},
        "transfer": {"inner_args": {"steps": 2}}}


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained naturally on 2,000 bundled Fashion-MNIST images (a few seconds)."""
    torch.manual_seed(0)
    train, test, _ = load_dataset("fashion-mnist-10k")
    x = train.images[:2000].float() / 255
    y = train.labels[:2000]
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        for i in range(0, 2000, 100):
            loss = F.cross_entropy(model(x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), test.images[:300].float() / 255, test.labels[:300]


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("start_in_train_mode", [False, True])
def test_attack_contract(name, start_in_train_mode):
    torch.manual_seed(0)
    model = enresnet(8, 1, 0.1, 3, 10)
    model.train(start_in_train_mode)
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 10, (6,))
    marker = {n: torch.full_like(p, 7.0) for n, p in list(model.named_parameters())[::2]}
    for n, p in model.named_parameters():
        p.grad = marker[n].clone() if n in marker else None
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    if getattr(ATTACKS.get(name), "requires", None):  # an attack from an optional package
        pytest.importorskip(ATTACKS.get(name).requires)
    attack = make_attack(name, eps=0.05, **FAST.get(name, {}))
    x_adv = attack(model, x, y)

    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= attack.radius + 1e-6
    assert attack.radius == 0.05 or name == "n_fgsm"
    assert model.training == start_in_train_mode
    for n, p in model.named_parameters():
        assert (p.grad is None) if n not in marker else torch.equal(p.grad, marker[n]), n
    if attack.model_mode == "eval":  # an eval-mode attack leaves BN statistics alone
        for k, v in model.state_dict().items():
            if k in stats:
                assert torch.equal(v, stats[k]), k
    text = repr(attack)
    assert text.startswith(type(attack).__name__) and "eps=0.05" in text


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_refuses_inputs_outside_unit_range(name):
    model = enresnet(8, 1, 0.0, 3, 10).eval()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_attack(name, **FAST.get(name, {}))(model, torch.rand(2, 3, 8, 8) * 2 - 0.5,
                                                 torch.zeros(2, dtype=torch.long))


def test_eps_is_kept_as_written():
    a = make_attack("ifgsm", eps="8/255", alpha="1/255")
    assert a.eps == pytest.approx(8 / 255) and a.alpha == pytest.approx(1 / 255)
    assert "eps='8/255'" in repr(a) and "alpha='1/255'" in repr(a)
    assert Eps("0.031") == 0.031 and Eps(0.5) == 0.5 and Eps("8/255").spec == "8/255"
    assert isinstance(a.eps, float) and 2 * a.eps == pytest.approx(16 / 255)
    for bad in ("8/0", "eight", "", True, None, "nan"):
        with pytest.raises(ValueError):
            Eps(bad)
    with pytest.raises(ValueError):
        make_attack("fgsm", eps=-0.1)


def test_accuracy_drops_clean_then_fgsm_then_ifgsm(trained):
    model, x, y = trained
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, make_attack("fgsm", eps=0.031)(model, x, y), y)
    ifgsm = accuracy(model, make_attack("ifgsm", eps=0.031)(model, x, y), y)
    cw = accuracy(model, make_attack("cw_paper", eps=0.031)(model, x, y), y)
    assert clean > 0.6                        # the model learned something
    assert clean > fgsm >= ifgsm              # a natural model is not robust
    assert cw >= ifgsm                        # the paper's C&W shrinks its perturbation ~1e-3
    assert clean - cw < 0.1


def test_fgsm_is_one_signed_step_of_size_eps(trained):
    model, x, y = trained
    x = x[:20] * 0.5 + 0.25   # interior: no clipping
    x_ = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(x_), y[:20], reduction="sum"), x_)
    assert torch.allclose(make_attack("fgsm", eps=0.031)(model, x, y[:20]), x + 0.031 * g.sign())


def test_pgd_restarts_never_weaker_than_one_run(trained):
    model, x, y = trained
    torch.manual_seed(1)
    one = accuracy(model, make_attack("pgd", eps=0.02, steps=5)(model, x, y), y)
    torch.manual_seed(1)  # the first restart is the same run as above
    more = accuracy(model, make_attack("pgd", eps=0.02, steps=5, restarts=3)(model, x, y), y)
    assert more <= one


def test_cw_paper_perturbation_is_tiny(trained):
    model, x, y = trained
    x_adv = make_attack("cw_paper")(model, x[:50], y[:50])
    assert 0 < (x_adv - x[:50]).abs().max() < 2e-3


def test_every_registered_attack_is_a_public_documented_class():
    import inspect

    import robustq.attacks as attacks

    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        assert getattr(attacks, cls.__name__) is cls and cls.__name__ in attacks.__all__, name
        doc = cls.__dict__.get("__doc__") or ""
        assert "Default" in doc and any(c.isdigit() for c in doc), name  # paper year, defaults
        assert inspect.signature(cls).parameters["eps"].default == 0.031, name


def test_bind_gives_the_torchattacks_calling_convention(trained):
    from robustq.attacks import PGD

    model, x, y = trained
    torch.manual_seed(1)
    atk = PGD(eps=8 / 255, alpha=2 / 255, steps=5).bind(model)
    x_adv = atk(x, y)
    torch.manual_seed(1)
    assert torch.equal(x_adv, PGD(eps=8 / 255, alpha=2 / 255, steps=5)(model, x, y))
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and accuracy(model, x_adv, y) < accuracy(model, x, y)
    assert atk.model is model and "PGD(" in repr(atk) and ".bind(Sequential)" in repr(atk)
    with pytest.raises(TypeError, match="nn.Module"):
        PGD().bind(lambda t: t)
