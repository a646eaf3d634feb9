"""PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018), L-inf.

Defaults are the paper's adversarial-training attack: eps 0.031, step 0.007, 10 steps,
uniform random start in the eps-ball, cross-entropy loss, projection onto the eps-ball and
[0, 1] after each step. ``loss="cw"`` maximises the Carlini-Wagner margin
``max_{j != y} z_j - z_y`` instead. With ``restarts > 1`` every example keeps the worst case
over the restarts: the first restart whose result is misclassified, else the one with the
highest loss. Restarts after the first only attack the examples not yet misclassified (the
others cannot change), which makes restarts cheap on a weak model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..eps import Eps
from .base import ATTACKS, Attack


def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``max_{j != y} z_j - z_y`` (positive = misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


LOSSES = {
    "ce": lambda z, y: F.cross_entropy(z.float(), y, reduction="none"),
    "cw": lambda z, y: cw_margin(z.float(), y),
}


@ATTACKS.register("pgd")
class PGD(Attack):
    """L-inf PGD (Madry et al., ICLR 2018): uniform random start in the eps-ball, ``steps``
    signed-gradient steps of size ``alpha`` on ``loss`` ("ce" or the C&W margin "cw"),
    projected after each step; ``restarts`` keeps each example's worst case. Defaults: the
    paper's training attack, eps 0.031, alpha 0.007, steps 10, restarts 1, loss "ce"."""
    name = "pgd"

    def __init__(self, eps: Eps = Eps(0.031), alpha: Eps = Eps(0.007), steps: int = 10,
                 random_start: bool = True, restarts: int = 1, loss: str = "ce", **kw) -> None:
        super().__init__(eps, **kw)
        self.alpha = Eps(alpha)
        self.steps, self.random_start, self.restarts = int(steps), bool(random_start), int(restarts)
        if loss not in LOSSES:
            raise ValueError(f"pgd loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if self.steps < 1 or self.restarts < 1 or self.alpha <= 0:
            raise ValueError("pgd needs steps >= 1, restarts >= 1 and alpha > 0")
        self.loss = loss

    def cost(self) -> tuple[float, float]:
        return float(self.steps * self.restarts * self.eot_samples), float(self.restarts)

    def _one_run(self, model, x, y):
        loss_fn = LOSSES[self.loss]
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x_adv + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp_(0, 1)
        for _ in range(self.steps):
            grad = self.input_grad(model, x_adv, lambda z: loss_fn(z, y).sum())
            x_adv = self.project(x_adv + self.alpha * grad.sign(), x)
        return x_adv

    def perturb(self, model, x, y):
        best = self._one_run(model, x, y)
        if self.restarts == 1:
            return best
        with torch.no_grad():
            best_z = model(best).float()
            best_loss, fooled = LOSSES[self.loss](best_z, y), best_z.argmax(1) != y
        for _ in range(self.restarts - 1):
            # a restart can only change examples not fooled yet, so only those are attacked
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            cand = self._one_run(model, x[idx], y[idx])
            with torch.no_grad():
                z = model(cand).float()
                loss, cand_fooled = LOSSES[self.loss](z, y[idx]), z.argmax(1) != y[idx]
            # take the candidate where it fools, or where it does not but its loss is higher
            take = cand_fooled | (loss > best_loss[idx])
            best[idx] = torch.where(take[:, None, None, None], cand, best[idx])
            best_loss[idx] = torch.where(take, loss, best_loss[idx])
            fooled[idx] = cand_fooled
        return best
