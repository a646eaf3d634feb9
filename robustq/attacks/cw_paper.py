"""The "C&W" attack exactly as the paper's reference code ran it (the paper's A3).

It is NOT the Carlini-Wagner attack (Carlini & Wagner, S&P 2017), hence the honest name.
Per example it minimises, with Adam (lr 0.0006, 50 iterations) directly on the image
variable ``w`` (initialised at ``x``; no tanh change of variables, no binary search over c,
no clipping during the optimisation),

    ||w - x||_2^2 + c * max(Z_pred(w) - Z_other(w), 0),   c = 10,

where Z are the (ensemble-averaged) logits, ``pred`` is the model's label on the clean
``x`` and ``other`` the runner-up class. ``best_w`` is the iterate with the smallest
distortion that changed the prediction (the last iterate where none did), and the returned
image is ``x + eps * (best_w - x)`` with eps = 0.031: the perturbation shrinks to about 1e-3
in L-inf, which is why A3 accuracies sit near clean accuracy. It is kept so the paper's
Tables 1-6 can be compared; use the strong attacks for robustness claims. Unlike the
reference we clip the final image to [0, 1] (the attack contract); at this scale it
changes almost nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ATTACKS, Attack


@ATTACKS.register("cw_paper")
class CWPaper(Attack):
    """The paper's A3 "C&W" as its reference code ran it (not Carlini-Wagner proper; see the
    module docstring): Adam on the image, loss ``||w - x||^2 + c * max(Z_pred - Z_other, 0)``.
    Defaults: c 10, lr 0.0006, steps 50; returns ``x + eps (best_w - x)``, eps 0.031."""
    name = "cw_paper"

    def __init__(self, eps=0.031, c: float = 10.0, lr: float = 0.0006, steps: int = 50,
                 **kw) -> None:
        super().__init__(eps, **kw)
        self.c, self.lr, self.steps = float(c), float(lr), int(steps)
        if self.steps < 1 or self.lr <= 0 or self.c < 0:
            raise ValueError("cw_paper needs steps >= 1, lr > 0 and c >= 0")

    def cost(self) -> tuple[float, float]:
        return float(self.steps * self.eot_samples), 1.0

    def perturb(self, model, x, y):
        with torch.no_grad():
            z0 = model(x)
        pred = z0.argmax(1)
        pred_mask = F.one_hot(pred, num_classes=z0.shape[1]).bool()
        w = x.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        best_w = x.clone()
        best_dist = torch.full((x.shape[0],), float("inf"), device=x.device)

        def hinge(z: torch.Tensor) -> torch.Tensor:
            z = z.float()
            z_pred = z.gather(1, pred[:, None]).squeeze(1)
            z_other = z.masked_fill(pred_mask, float("-inf")).amax(1)
            return self.c * (z_pred - z_other).clamp_min(0).sum()

        for _ in range(self.steps):
            # d/dw of the hinge term, averaged over eot_samples noise draws (one by default:
            # the paper's protocol), and the logits of those same draws
            grad, z = self.input_grad_logits(model, w, hinge)
            with torch.no_grad():
                diff = w.detach() - x
                dist = diff.flatten(1).pow(2).sum(1)
                better = (z.argmax(1) != pred) & (dist < best_dist)
                best_dist = torch.where(better, dist, best_dist)
                best_w = torch.where(better[:, None, None, None], w.detach(), best_w)
            w.grad = grad.add_(diff, alpha=2.0)  # + d||w - x||^2 / dw
            opt.step()
        with torch.no_grad():
            never = torch.isinf(best_dist)[:, None, None, None]
            best_w = torch.where(never, w.detach(), best_w)
            return x + self.eps * (best_w - x)
