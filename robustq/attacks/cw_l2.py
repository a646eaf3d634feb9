"""C&W-L2 (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P
2017), untargeted, judged inside the L-inf eps-ball.

Change of variables keeps every iterate a valid image: ``x' = (tanh(w) + 1) / 2``. For each
example Adam minimises over ``w``

    ||x' - x||_2^2 + c * f(x'),    f(x') = max(Z_y(x') - max_{j != y} Z_j(x'), -kappa),

(Z the logits, y the true label, kappa the confidence), and a binary search over ``c``
per example finds the smallest c that still succeeds: start at ``initial_const``; after a
search step that found an adversarial example, ``hi = c`` and ``c = (lo + hi) / 2``; after one
that did not, ``lo = c`` and ``c`` is multiplied by 10 while no upper bound is known. Each
search step restarts from ``w = atanh(2x - 1)`` and aborts early when the summed objective has
not dropped by 0.01% over a tenth of the steps (as in the paper).

robustq measures L-inf robustness, so an iterate counts as a success only if its projection
onto the eps-ball (and [0, 1]) is misclassified; the returned image is the successful
projected iterate with the smallest L2 distortion (the last projected iterate where none
succeeded). On a random model ``f``'s gradient is averaged over ``eot_samples`` draws.

Paper defaults: 9 search steps, up to 10,000 Adam steps, lr 0.01, c0 = 1e-3, kappa 0.
Ours, for a budget an evaluation can afford: 5 search steps of 100 Adam steps, lr 0.01,
c0 = 0.1 (so c spans 0.1 .. 1e3 when every step fails), kappa 0.
"""
from __future__ import annotations

import torch

from .base import ATTACKS, Attack
from .pgd import cw_margin


@ATTACKS.register("cw_l2")
class CWL2(Attack):
    """C&W-L2 (Carlini & Wagner, IEEE S&P 2017), untargeted, tanh change of variables and a
    binary search over c, judged inside the L-inf eps-ball. Defaults: eps 0.031, steps 100,
    binary_steps 5, lr 0.01, initial_const 0.1, kappa 0, abort_early True."""
    name = "cw_l2"

    def __init__(self, eps=0.031, steps: int = 100, binary_steps: int = 5, lr: float = 0.01,
                 initial_const: float = 0.1, kappa: float = 0.0, abort_early: bool = True,
                 **kw) -> None:
        super().__init__(eps, **kw)
        self.steps, self.binary_steps, self.lr = int(steps), int(binary_steps), float(lr)
        self.initial_const, self.kappa, self.abort_early = float(initial_const), float(kappa), bool(abort_early)
        if self.steps < 1 or self.binary_steps < 1 or self.lr <= 0:
            raise ValueError("cw_l2 needs steps >= 1, binary_steps >= 1 and lr > 0")
        if self.initial_const <= 0 or self.kappa < 0:
            raise ValueError("cw_l2 needs initial_const > 0 and kappa >= 0")

    def cost(self) -> tuple[float, float]:
        n = self.binary_steps * self.steps
        return float(n * self.eot_samples), float(n)

    def perturb(self, model, x, y):
        n = x.shape[0]
        lo = torch.zeros(n, device=x.device)
        hi = torch.full((n,), float("inf"), device=x.device)
        c = torch.full((n,), self.initial_const, device=x.device)
        best_x = x.clone()
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        for _ in range(self.binary_steps):
            found, best_x, best_l2 = self._search_step(model, x, y, c, best_x, best_l2)
            hi = torch.where(found, torch.minimum(hi, c), hi)
            lo = torch.where(found, lo, torch.maximum(lo, c))
            c = torch.where(torch.isinf(hi), c * 10, (lo + hi) / 2)
        return best_x

    def _search_step(self, model, x, y, c, best_x, best_l2):
        """One Adam run at fixed ``c``; returns (succeeded per example, best_x, best_l2)."""
        w = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        f_of = lambda z: (c * (-cw_margin(z.float(), y)).clamp_min(-self.kappa)).sum()
        prev, check_every = float("inf"), max(self.steps // 10, 1)
        last = best_x
        for it in range(self.steps):
            x_new = (torch.tanh(w.detach()) + 1) / 2
            grad_x, z = self.input_grad_logits(model, x_new, f_of)
            with torch.no_grad():
                delta = x_new - x
                objective = float(delta.flatten(1).pow(2).sum() + (c * (-cw_margin(z, y)).clamp_min(-self.kappa)).sum())
                last = self.project(x_new, x)
                fooled = model(last).argmax(1) != y          # judged in the eps-ball
                l2 = (last - x).flatten(1).norm(dim=1)
                better = fooled & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best_x = torch.where(better[:, None, None, None], last, best_x)
                found |= fooled
                # chain rule through x' = (tanh(w) + 1) / 2
                w.grad = (2 * delta + grad_x) * (1 - torch.tanh(w.detach()) ** 2) / 2
            opt.step()
            if self.abort_early and (it + 1) % check_every == 0:
                if objective > prev * 0.9999:
                    break
                prev = objective
        never = torch.isinf(best_l2)[:, None, None, None]
        return found, torch.where(never, last, best_x), best_l2
