"""Loss values against hand computations (paper eqs. (7) and (8))."""
from __future__ import annotations

import math

import pytest
import torch

from robustq.losses import OBJECTIVES, adversarial, natural, trades, tradeoff

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
ADV = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
Y = torch.tensor([0, 1])


def ce_by_hand(logits, y):
    vals = [math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(logits.tolist(), y.tolist())]
    return sum(vals) / len(vals)


def kl_by_hand(p_logits, q_logits):
    """mean over the batch of KL(softmax(p) || softmax(q))."""
    total = 0.0
    for pr, qr in zip(p_logits.tolist(), q_logits.tolist()):
        zp, zq = sum(math.exp(v) for v in pr), sum(math.exp(v) for v in qr)
        p = [math.exp(v) / zp for v in pr]
        q = [math.exp(v) / zq for v in qr]
        total += sum(a * math.log(a / b) for a, b in zip(p, q))
    return total / len(p_logits)


def test_natural_and_adversarial_are_cross_entropies():
    assert natural(LOGITS, None, Y)["loss"].item() == pytest.approx(ce_by_hand(LOGITS, Y))
    assert adversarial(None, ADV, Y)["loss"].item() == pytest.approx(ce_by_hand(ADV, Y))


@pytest.mark.parametrize("alpha,beta", [(1.0, 8.0), (1.0, 1.0), (0.5, 4.0), (0.0, 1.0)])
def test_tradeoff_is_eq_8(alpha, beta):
    out = tradeoff(LOGITS, ADV, Y, alpha=alpha, beta=beta)
    expected = alpha * ce_by_hand(LOGITS, Y) + beta * ce_by_hand(ADV, Y)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["ce_adv"].item() == pytest.approx(ce_by_hand(ADV, Y), rel=1e-6)


def test_tradeoff_with_alpha_zero_needs_no_clean_logits():
    out = tradeoff(None, ADV, Y, alpha=0.0, beta=1.0)
    assert out["loss"].item() == pytest.approx(ce_by_hand(ADV, Y))
    assert not OBJECTIVES.get("tradeoff").needs_clean(alpha=0.0, beta=1.0)
    assert OBJECTIVES.get("tradeoff").needs_clean(alpha=1.0, beta=8.0)


@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_trades_is_eq_7(beta):
    out = trades(LOGITS, ADV, Y, beta=beta)
    expected = ce_by_hand(LOGITS, Y) + beta * kl_by_hand(LOGITS, ADV)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert OBJECTIVES.get("trades").needs_clean(beta=beta)


def test_only_the_objectives_that_use_clean_logits_ask_for_them():
    assert OBJECTIVES.get("natural").needs_clean()
    assert not OBJECTIVES.get("at").needs_clean()
    assert OBJECTIVES.get("trades").needs_clean(beta=6.0)


def test_objectives_name_their_attacks():
    assert OBJECTIVES.get("natural").attack is None
    assert OBJECTIVES.get("at").attack == "pgd"
    assert OBJECTIVES.get("tradeoff").attack == "pgd"
    assert OBJECTIVES.get("trades").attack == "trades_kl"


def test_losses_are_differentiable_through_both_terms():
    a, b = LOGITS.clone().requires_grad_(True), ADV.clone().requires_grad_(True)
    trades(a, b, Y, beta=2.0)["loss"].backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
