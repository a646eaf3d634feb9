"""Transfer attack (Papernot et al., "Transferability in Machine Learning", 2016; used as a
gradient-masking check by Athalye, Carlini & Wagner, ICML 2018, and Carlini et al., "On
Evaluating Adversarial Robustness", 2019).

The adversarial examples are crafted on a ``surrogate`` model with an inner white-box attack
(by default PGD-CE, 20 steps of eps/4, one restart) and then given to the attacked model,
whose gradients are never used: a black-box attack. A transfer attack that beats the
white-box attacks on the model itself means those white-box attacks are being fooled by
the model's gradients (masking), not that the model is robust.

Useful surrogates: an independently trained model, or the attacked model made smooth and
deterministic (noise off, a hard input layer replaced by the identity: BPDA's idea). With
``surrogate=None`` the surrogate is the attacked model itself with its block noise switched
off while crafting (its deterministic twin); for a model without noise that is simply a
white-box PGD.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..models.enresnet import BlockNoise
from ..eps import Eps
from .base import ATTACKS, Attack, make_attack


@ATTACKS.register("transfer")
class Transfer(Attack):
    """Transfer attack (Papernot et al., 2016): x_adv crafted on ``surrogate`` by ``inner``
    (default PGD-CE, 20 steps of eps/4) and given to the attacked model, whose gradients are
    never used. Default surrogate: the attacked model with its block noise off."""
    name = "transfer"

    def __init__(self, eps: Eps = Eps(0.031), surrogate: Optional[nn.Module] = None, inner: str = "pgd",
                 inner_args: Optional[dict] = None, **kw) -> None:
        super().__init__(eps, **kw)
        if inner == "transfer":
            raise ValueError("transfer cannot use itself as the inner attack")
        args = {"steps": 20, "alpha": Eps(eps) / 4} if inner == "pgd" else {}
        args.update(inner_args or {})
        self.surrogate = surrogate
        self.inner = make_attack(inner, eps=eps, **args)

    @property
    def white_box(self) -> bool:  # crafting on the model itself (noise off) needs its gradients
        return self.surrogate is None

    def cost(self) -> tuple[float, float]:
        return self.inner.cost()

    def perturb(self, model, x, y):
        if self.surrogate is not None:
            return self.inner(self.surrogate, x, y)
        noise = [m for m in model.modules() if isinstance(m, BlockNoise)]
        states = [m.enabled for m in noise]
        try:
            for m in noise:
                m.enabled = False
            return self.inner(model, x, y)
        finally:
            for m, on in zip(noise, states):
                m.enabled = on

    def hparams(self) -> dict:
        h = super().hparams()
        s = self.surrogate
        h["surrogate"] = "the model, noise off" if s is None else \
            f"{type(s).__name__}({sum(p.numel() for p in s.parameters()):,} params)"
        return h
