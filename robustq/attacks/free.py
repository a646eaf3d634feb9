"""Free adversarial training's perturbation (Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer,
Davis, Taylor & Goldstein, "Adversarial Training for Free!", NeurIPS 2019).

Free AT replays every minibatch ``m`` times; ONE backward pass per replay gives both the
weight gradient (the optimizer steps on it) and the input gradient, which moves a
perturbation ``delta`` that persists across replays and across minibatches:

    for each minibatch (x, y), m times:
        loss = L(f(x + delta), y);  backward          # grads w.r.t. weights AND delta
        weights <- SGD step;  delta <- clip_[-eps, eps](delta + eps * sign(grad_delta))

(step size eps, ``delta`` starts at 0 and is carried to the next minibatch). So training
costs one forward-backward per replay, like natural training, and epochs are counted in
gradient passes over the data: an epoch replays ``ceil(batches / m)`` minibatches m times
each, the same number of optimizer steps as one epoch of any other method.

``FreeReplay`` holds ``delta`` for the engine (``engine.TrainStep``). ``Free`` is the same
perturbation as a stand-alone attack under the contract (m ascent steps on a fixed model
from delta = 0), for tests and for attacking a model the way free AT trains it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..eps import Eps
from .base import ATTACKS, Attack


class FreeReplay:
    """The persistent perturbation of free AT: ``inputs(x)`` gives x + delta (a leaf that
    requires grad), ``ascend(x_in)`` moves delta by ``step * sign(x_in.grad)`` after the
    training backward."""

    def __init__(self, eps: float, step: Optional[float] = None) -> None:
        self.eps, self.step = float(eps), float(eps if step is None else step)
        self.delta: Optional[torch.Tensor] = None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.delta is None or self.delta.shape[1:] != x.shape[1:] or len(self.delta) < len(x):
            self.delta = torch.zeros_like(x)
        d = self.delta[:len(x)]  # a smaller last batch uses the first rows
        return (x + d).clamp_(0, 1).requires_grad_(True)

    @torch.no_grad()
    def ascend(self, x: torch.Tensor, x_in: torch.Tensor) -> None:
        """Update delta from the gradient the training backward left on ``x_in``."""
        if x_in.grad is None:
            raise RuntimeError("free AT: the training loss did not reach the input")
        d = (x_in - x + self.step * x_in.grad.sign()).clamp_(-self.eps, self.eps)
        self.delta[:len(x)] = (x + d).clamp_(0, 1) - x   # feasible: x + delta in [0, 1]


@ATTACKS.register("free")
class Free(Attack):
    """Free AT's perturbation as an attack: ``replay`` ascent steps of size ``alpha`` (= eps)
    from delta = 0, projected onto the eps-ball and [0, 1] (Shafahi et al., NeurIPS 2019).
    Defaults: eps 0.031, replay 8, alpha eps."""
    name = "free"

    def __init__(self, eps: Eps = Eps(0.031), replay: int = 8, alpha: Optional[Eps] = None,
                 **kw) -> None:
        super().__init__(eps, **kw)
        self.replay = int(replay)
        self.alpha = self.eps if alpha is None else Eps(alpha)
        if self.replay < 1:
            raise ValueError(f"free needs replay m >= 1, got {replay}")

    def cost(self) -> tuple[float, float]:
        return float(self.replay * self.eot_samples), 0.0

    def perturb(self, model, x, y):
        x_adv = x.clone()
        for _ in range(self.replay):
            grad = self.input_grad(model, x_adv, lambda z: F.cross_entropy(z.float(), y, reduction="sum"))
            x_adv = self.project(x_adv + self.alpha * grad.sign(), x)
        return x_adv
