"""FGSM (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015). The paper's A1: one signed-gradient step of size eps (0.031) on the
cross-entropy with the true labels, clipped to [0, 1]."""
from __future__ import annotations

import torch.nn.functional as F

from .base import ATTACKS, Attack


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """FGSM (Goodfellow et al., ICLR 2015): one signed-gradient step of size ``eps`` on the
    cross-entropy, clipped to [0, 1]. The paper's A1. Default: eps 0.031."""
    name = "fgsm"

    def perturb(self, model, x, y):
        grad = self.input_grad(model, x, lambda z: F.cross_entropy(z, y, reduction="sum"))
        return x + self.eps * grad.sign()
