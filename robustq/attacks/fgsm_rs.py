"""FGSM from a random start ("FGSM-RS"; Wong, Rice & Kolter, "Fast is better than free:
Revisiting adversarial training", ICLR 2020), the single-step attack of fast adversarial
training.

``delta ~ U[-eps, eps]`` (kept so that ``x + delta`` stays in [0, 1]), one signed-gradient
step of size ``alpha`` on the cross-entropy at ``x + delta``, then projection back onto the
eps-ball and [0, 1]:

    x_adv = clip_[0,1]( x + clip_[-eps, eps]( delta + alpha * sign(grad_x CE(f(x + delta), y)) ) )

Default ``alpha = 1.25 eps`` (the paper's 10/255 for eps 8/255). Larger steps (2 eps) make
catastrophic overfitting likely, as the paper shows; the engine's guard watches for it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..eps import Eps
from .base import ATTACKS, Attack


@ATTACKS.register("fgsm_rs")
class FGSMRS(Attack):
    """FGSM-RS (Wong et al., ICLR 2020): uniform random start, one step of ``alpha``, projected.
    Defaults: eps 0.031, alpha 1.25 eps."""
    name = "fgsm_rs"

    def __init__(self, eps: Eps = Eps(0.031), alpha: Optional[Eps] = None, **kw) -> None:
        super().__init__(eps, **kw)
        self.alpha = 1.25 * self.eps if alpha is None else Eps(alpha)
        if self.alpha <= 0 and self.eps > 0:
            raise ValueError("fgsm_rs needs alpha > 0")

    def perturb(self, model, x, y):
        start = (x + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp_(0, 1)
        grad = self.input_grad(model, start, lambda z: F.cross_entropy(z.float(), y, reduction="sum"))
        return self.project(start + self.alpha * grad.sign(), x)
