"""APGD-CE and APGD-DLR (Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an
Ensemble of Diverse Parameter-free Attacks", ICML 2020), from the ``pyautoattack`` package.

Nothing is re-implemented here: the attack is the package's ``APGDAttack`` (the official
AutoAttack code), wrapped in robustq's attack contract. APGD is PGD with a step size that
starts at 2 eps, is halved whenever progress stalls (checkpoints at 22%, then shrinking
intervals, of the iterations) and momentum 0.75; the DLR loss
``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)`` is invariant to shifting and scaling the
logits. ``eot_samples`` is passed as the package's ``eot_iter`` (gradients averaged over
that many forward passes). AutoAttack's defaults: 100 iterations, 1 restart, rho 0.75.

The package is an optional extra: ``pip install "robustq[autoattack]"``. It reseeds torch's
global generator from ``seed``; the wrapper restores the caller's generator afterwards.
"""
from __future__ import annotations

import logging

import torch

from ..errors import DependencyError
from .base import ATTACKS, Attack

_LOG = logging.getLogger("robustq.apgd")


def require_pyautoattack():
    """Import ``pyautoattack`` or raise one sentence saying how to get it."""
    try:
        import pyautoattack
    except ImportError:
        raise DependencyError("AutoAttack needs the optional package pyautoattack; install it "
                              "with: pip install \"robustq[autoattack]\"") from None
    return pyautoattack


def in_standard_layout(run, x: torch.Tensor) -> torch.Tensor:
    """``run(x)`` on ``x`` in the standard (NCHW-contiguous) layout, its images returned in the
    layout ``x`` came in. pyautoattack makes its gradient buffers like the input and flattens
    them with ``.view`` (APGD-DLR's zero-gradient check), which a channels_last input breaks."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last)
    x_adv = run(x.contiguous())
    return x_adv.contiguous(memory_format=torch.channels_last) if channels_last else x_adv


class _APGD(Attack):
    requires = "pyautoattack"  # the optional package this attack needs
    loss = "ce"

    def __init__(self, eps=0.031, steps: int = 100, restarts: int = 1, rho: float = 0.75,
                 seed: int = 0, **kw) -> None:
        super().__init__(eps, **kw)
        self.steps, self.restarts, self.rho, self.seed = int(steps), int(restarts), float(rho), int(seed)
        if self.steps < 1 or self.restarts < 1 or not 0 < self.rho < 1:
            raise ValueError(f"{self.name} needs steps >= 1, restarts >= 1 and 0 < rho < 1")

    def cost(self) -> tuple[float, float]:
        return float(self.steps * self.restarts * self.eot_samples), float(self.restarts)

    def perturb(self, model, x, y):
        require_pyautoattack()
        from pyautoattack.autopgd_base import APGDAttack

        attack = APGDAttack(model, n_iter=self.steps, norm="Linf", n_restarts=self.restarts,
                            eps=self.eps, seed=self.seed, loss=self.loss,
                            eot_iter=self.eot_samples, rho=self.rho, verbose=False,
                            device=x.device, logger=_LOG)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return in_standard_layout(lambda x: attack.perturb(x, y), x)


@ATTACKS.register("apgd_ce")
class APGDCE(_APGD):
    """APGD-CE (Croce & Hein, ICML 2020), the official code from ``pyautoattack``.
    Defaults (AutoAttack's): eps 0.031, steps 100, restarts 1, rho 0.75, seed 0."""
    name = "apgd_ce"
    loss = "ce"


@ATTACKS.register("apgd_dlr")
class APGDDLR(_APGD):
    """APGD-DLR (Croce & Hein, ICML 2020): APGD on the shift- and scale-invariant DLR loss,
    from ``pyautoattack``. Defaults: eps 0.031, steps 100, restarts 1, rho 0.75, seed 0."""
    name = "apgd_dlr"
    loss = "dlr"
