"""Random corners of the eps-ball: a black-box baseline for the gradient-masking checks
(Carlini et al., "On Evaluating Adversarial Robustness", 2019, section 5: "verify that
random noise does not succeed where gradients fail").

``tries`` candidates ``x + eps * s`` with ``s`` uniform in {-1, +1}^d are drawn per example
(clipped to [0, 1]); each example keeps the first candidate that is misclassified, else the
one with the highest cross-entropy. No gradient is taken. Defaults: eps 0.031, 20 tries.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ATTACKS, Attack


@ATTACKS.register("random_sign")
class RandomSign(Attack):
    """Random corners of the eps-ball (Carlini et al., 2019, section 5), a gradient-free
    baseline for the masking checks. Defaults: eps 0.031, tries 20."""
    name = "random_sign"
    white_box = False

    def __init__(self, eps=0.031, tries: int = 20, **kw) -> None:
        super().__init__(eps, **kw)
        self.tries = int(tries)
        if self.tries < 1:
            raise ValueError("random_sign needs tries >= 1")

    def cost(self) -> tuple[float, float]:
        return 0.0, float(self.tries)

    @torch.no_grad()
    def perturb(self, model, x, y):
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.tries):
            sign = torch.randint_like(x, 0, 2).mul_(2).sub_(1)
            cand = (x + self.eps * sign).clamp_(0, 1)
            z = model(cand).float()
            loss, cand_fooled = F.cross_entropy(z, y, reduction="none"), z.argmax(1) != y
            take = ~fooled & (cand_fooled | (loss > best_loss))
            best = torch.where(take[:, None, None, None], cand, best)
            best_loss = torch.where(take, loss, best_loss)
            fooled |= cand_fooled
        return best
