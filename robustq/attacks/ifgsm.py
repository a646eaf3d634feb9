"""I-FGSM / BIM (Kurakin, Goodfellow & Bengio, "Adversarial Examples in the Physical World",
ICLR-W 2017). The paper's A2: 20 signed-gradient steps of size 1/255 on the cross-entropy,
no random start, projected onto the eps-ball (0.031) and [0, 1] after every step."""
from __future__ import annotations

import torch.nn.functional as F

from ..eps import Eps
from .base import ATTACKS, Attack


@ATTACKS.register("ifgsm")
class IFGSM(Attack):
    """I-FGSM / BIM (Kurakin et al., ICLR-W 2017): ``steps`` signed-gradient steps of size
    ``alpha`` on the cross-entropy, no random start, projected after each step. The paper's A2.
    Defaults: eps 0.031, alpha 1/255, steps 20."""
    name = "ifgsm"

    def __init__(self, eps: Eps = Eps(0.031), alpha: Eps = Eps("1/255"), steps: int = 20, **kw) -> None:
        super().__init__(eps, **kw)
        self.alpha, self.steps = Eps(alpha), int(steps)
        if self.steps < 1 or self.alpha <= 0:
            raise ValueError("ifgsm needs steps >= 1 and alpha > 0")

    def cost(self) -> tuple[float, float]:
        return float(self.steps * self.eot_samples), 0.0

    def perturb(self, model, x, y):
        x_adv = x.clone()
        for _ in range(self.steps):
            grad = self.input_grad(model, x_adv, lambda z: F.cross_entropy(z, y, reduction="sum"))
            x_adv = self.project(x_adv + self.alpha * grad.sign(), x)
        return x_adv
