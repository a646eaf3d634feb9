"""TRADES' inner maximisation (Zhang et al., "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019), used to train with the paper's eq. (7).

Maximises ``KL(p(x) || p(x_adv))`` (summed over the batch) with ``steps`` signed-gradient
steps of size ``alpha`` from ``x + 0.001 * N(0, I)``, projecting onto the eps-ball and [0, 1]
after every step. ``p(x)`` is the model's softmax on the clean input, computed once in the
attack's model mode (eval, as in TRADES). The labels are not used. Defaults: eps 0.031,
alpha 0.007 (TRADES' own CIFAR setting is 0.003), 10 steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..eps import Eps
from .base import ATTACKS, Attack


@ATTACKS.register("trades_kl")
class TradesKL(Attack):
    """TRADES' KL inner maximisation (Zhang et al., ICML 2019); labels unused. Defaults:
    eps 0.031, alpha 0.007, steps 10, start ``x + 0.001 N(0, I)``."""
    name = "trades_kl"

    def __init__(self, eps: Eps = Eps(0.031), alpha: Eps = Eps(0.007), steps: int = 10, **kw) -> None:
        super().__init__(eps, **kw)
        self.alpha, self.steps = Eps(alpha), int(steps)
        if self.steps < 1 or self.alpha <= 0:
            raise ValueError("trades_kl needs steps >= 1 and alpha > 0")

    def cost(self) -> tuple[float, float]:
        return float(self.steps * self.eot_samples), 1.0

    def perturb(self, model, x, y):
        with torch.no_grad():
            p_clean = F.softmax(model(x).float(), dim=1)
        x_adv = (x + 0.001 * torch.randn_like(x)).clamp_(0, 1)
        kl = lambda z: F.kl_div(F.log_softmax(z.float(), dim=1), p_clean, reduction="sum")
        for _ in range(self.steps):
            grad = self.input_grad(model, x_adv, kl)
            x_adv = self.project(x_adv + self.alpha * grad.sign(), x)
        return x_adv
