"""N-FGSM (de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez & Dokania, "Make Some Noise: Reliable
and Efficient Single-Step Adversarial Training", NeurIPS 2022).

Stronger noise, no projection: ``eta ~ U[-k eps, k eps]`` (k = 2), one signed-gradient step
of size ``alpha = eps`` from ``x + eta``, and the result is NOT projected back onto the
eps-ball, only clipped to [0, 1]:

    x_adv = clip_[0,1]( x + eta + alpha * sign(grad_x CE(f(x + eta), y)) )

So ``|x_adv - x|_inf <= k eps + alpha`` (3 eps with the defaults): the paper's point is that
the larger, noisier perturbation avoids catastrophic overfitting at no extra cost (one
gradient per example, like FGSM). ``radius`` states that bound for the attack contract.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..eps import Eps
from .base import ATTACKS, Attack


@ATTACKS.register("n_fgsm")
class NFGSM(Attack):
    """N-FGSM (de Jorge et al., NeurIPS 2022): noise U[-k eps, k eps], one step of ``alpha``,
    unprojected. Defaults: eps 0.031, alpha eps, k 2."""
    name = "n_fgsm"

    def __init__(self, eps: Eps = Eps(0.031), alpha: Optional[Eps] = None, k: float = 2.0,
                 **kw) -> None:
        super().__init__(eps, **kw)
        self.alpha = self.eps if alpha is None else Eps(alpha)
        self.k = float(k)
        if self.k < 0 or self.alpha < 0:
            raise ValueError("n_fgsm needs k >= 0 and alpha >= 0")

    @property
    def radius(self) -> float:
        return self.k * self.eps + self.alpha

    def perturb(self, model, x, y):
        r = self.k * self.eps
        start = (x + torch.empty_like(x).uniform_(-r, r)).clamp_(0, 1)
        grad = self.input_grad(model, start, lambda z: F.cross_entropy(z.float(), y, reduction="sum"))
        return (start + self.alpha * grad.sign()).clamp_(0, 1)
