"""Quantizers against REFERENCE.md section 1-2 on hand-made tensors, and the BR machinery."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustq.build import Arch, build_model
from robustq.quant import (PROJECTIONS, QuantConv2d, RelaxSchedule, bake, bit_map, get_projection,
                           quant_layers, set_relaxation)
from robustq.quant.relax import default_cutoff, default_rho


def test_binary_matches_formula():
    w = torch.tensor([0.5, -1.5, 0.0, 2.0])
    q = get_projection("binary")(w)
    s = (0.5 + 1.5 + 0.0 + 2.0) / 4
    assert torch.equal(q, torch.tensor([s, -s, 0.0, s]))  # sign(0) = 0


def test_ternary_reference_scale_divides_by_all_entries():
    w = torch.tensor([1.0, -0.1, 0.8, -2.0, 0.05, 0.3])
    d = 0.7 * w.abs().mean()                       # 0.7 * 4.25/6 = 0.4958
    mask = w.abs() >= d                            # 1, 0.8, -2 kept
    assert mask.tolist() == [True, False, True, True, False, False]
    s_ref = (1.0 + 0.8 + 2.0) / 6
    assert torch.allclose(get_projection("ternary")(w), s_ref * mask * torch.sign(w))
    s_twn = (1.0 + 0.8 + 2.0) / 3
    assert torch.allclose(get_projection("ternary_twn")(w), s_twn * mask * torch.sign(w))


def test_4bit_levels_thresholds_and_scale():
    # max |w| = 1.5 -> d = 0.1; thresholds at odd multiples of d: 0.1, 0.3, 0.5, ...
    w = torch.tensor([1.5, 0.1, 0.1001, -0.3, 0.31, -0.7, 0.0, -1.39])
    codes, scale = get_projection("4bit").codes_and_scale(w)
    # |w|/(2d) = 7.5, 0.5, 0.5005, 1.5, 1.55, 3.5, 0, 6.95 -> round half down
    assert codes.tolist() == [7, 0, 1, -1, 2, -3, 0, -7]
    q = codes.abs()
    assert torch.isclose(scale, (w.abs() * q).sum() / (q * q).sum())
    assert torch.allclose(get_projection("4bit")(w), scale * codes)


@pytest.mark.parametrize("name", PROJECTIONS.names())
def test_every_projection_lies_on_its_grid(name):
    proj = get_projection(name)
    w = torch.randn(16, 8, 3, 3)
    codes, scale = proj.codes_and_scale(w)
    assert torch.equal(codes, codes.round()) and codes.abs().max() <= proj.levels
    assert scale > 0
    q = proj(w)
    assert q.shape == w.shape and q.dtype == w.dtype
    assert torch.allclose(q, scale * codes)
    assert len(torch.unique(q)) <= 2 * proj.levels + 1
    assert (torch.sign(q) * torch.sign(w) >= 0).all()  # never flips a sign


def test_mbit_4_is_the_reference_4bit_rule_and_2bit_is_uniform_ternary():
    w = torch.randn(1000)
    assert get_projection("4bit") == PROJECTIONS.get("4bit")
    codes, _ = get_projection("2bit").codes_and_scale(w)
    assert torch.equal(codes.abs() > 0, w.abs() > w.abs().max() / 3)


def test_projection_of_zero_tensor_is_zero_and_finite():
    for name in PROJECTIONS.names():
        q = get_projection(name)(torch.zeros(4, 4))
        assert torch.equal(q, torch.zeros(4, 4)), name


def test_aliases():
    assert get_projection("tnn").name == "ternary"
    assert get_projection("4-bit").name == "4bit"
    assert get_projection("1bit").name == "binary"
    with pytest.raises(KeyError):
        get_projection("9bit")


# --- Binary-Relax / Binary-Connect ---------------------------------------------------------

def _qconv(lam=None):
    conv = nn.Conv2d(3, 4, 3, bias=False)
    q = QuantConv2d.from_float(conv, get_projection("4bit"))
    q.lam = lam
    return q


def test_br_weight_formula_and_bc():
    q = _qconv(lam=3.0)
    w = q.weight.detach().clone()
    expected = (3.0 * get_projection("4bit")(w) + w) / 4.0
    assert torch.allclose(q.effective_weight().detach(), expected)
    q.lam = None
    assert torch.equal(q.effective_weight().detach(), get_projection("4bit")(w))


def test_straight_through_gradient_lands_on_w():
    q = _qconv(lam=None)
    x = torch.randn(2, 3, 5, 5)
    out = q(x)
    g = torch.randn_like(out)
    out.backward(g)
    # the conv's gradient w.r.t. the weight it used (u), evaluated by autograd on u itself
    u = get_projection("4bit")(q.weight.detach()).requires_grad_(True)
    torch.nn.functional.conv2d(x, u).backward(g)
    assert torch.allclose(q.weight.grad, u.grad)


def test_projection_is_cached_per_optimizer_step():
    q = _qconv(lam=None)
    u1 = q.effective_weight().detach().clone()
    cached = q._cache[1]
    q.effective_weight()
    assert q._cache[1] is cached                     # same weights: no re-projection
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    q(torch.randn(1, 3, 5, 5)).sum().backward()
    opt.step()                                       # w changed -> projected anew
    u2 = q.effective_weight().detach()
    assert q._cache[1] is not cached
    assert torch.equal(u2, get_projection("4bit")(q.weight.detach()))
    assert not torch.equal(u1, u2)


def test_lambda_schedule():
    s = RelaxSchedule.for_epochs("br", epochs=200)
    assert s.cutoff == 120 and math.isclose(s.rho, 1.05)
    assert s.lam(0) == 1.0 and math.isclose(s.lam(10), 1.05 ** 10)
    assert s.lam(119) is not None and s.lam(120) is None
    assert s.phase(119) == "BR" and s.phase(120) == "BC"
    assert not s.is_quantized(119) and s.is_quantized(120)
    short = RelaxSchedule.for_epochs("br", epochs=10, lam0=2.0)
    assert short.cutoff == default_cutoff(10) == 6
    assert math.isclose(short.rho, default_rho(6)) and math.isclose(short.rho ** 6, 1.05 ** 120)
    assert math.isclose(short.lam(5), 2.0 * short.rho ** 5)
    bc = RelaxSchedule.for_epochs("bc", epochs=10)
    assert all(bc.lam(e) is None and bc.is_quantized(e) for e in range(10))
    none = RelaxSchedule.for_epochs("none", epochs=10)
    assert none.phase(0) == "float" and not none.is_quantized(3)


def test_paper_policy_quantizes_3x3_convs_only():
    model, bits = build_model(Arch(20, 1, 0.1, 3, 10, 32), "4bit", "paper")
    quantized = [k for k, v in bits.items() if v != "float"]
    floats = [k for k, v in bits.items() if v == "float"]
    assert "members.0.conv1" in quantized                                  # the stem
    assert len(quantized) == 19                                            # stem + 9 blocks x 2
    assert sorted(floats) == sorted(["members.0.blocks.3.shortcut", "members.0.blocks.6.shortcut",
                                     "members.0.linear"])
    _, bits_all = build_model(Arch(20, 1, 0.1, 3, 10, 32), "ternary", "all")
    assert set(bits_all.values()) == {"ternary"}


def test_bake_holds_exactly_q_of_w():
    model, _ = build_model(Arch(8, 2, 0.1, 3, 10, 16), "4bit", "paper")
    set_relaxation(model, 5.0)  # a relaxed u must not leak into the baked model
    expected = {n: m.quantized_weight() for n, m in quant_layers(model)}
    bake(model)
    assert not quant_layers(model)
    for name, q in expected.items():
        assert torch.equal(model.get_submodule(name).weight, q)
    assert set(bit_map(model).values()) == {"float"}
