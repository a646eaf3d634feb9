"""The attack contract every attack in robustq honours (after torchattacks' ``Attack``).

* inputs are pixels in [0, 1] (checked); labels are class indices;
* the output is detached, lies in the L-inf ball of radius ``radius`` around the input
  (``eps`` for every attack but N-FGSM, whose paper deliberately leaves the eps-ball) and in
  [0, 1];
* the model's train/eval mode is saved and restored; the attack runs in ``model_mode``
  (``"eval"`` by default; ``"train"`` reproduces the reference's training-time PGD, which
  runs with BatchNorm in train mode; ``"keep"`` leaves the mode as it is);
* gradients are taken with respect to the input only (``torch.autograd.grad``): no
  parameter ``.grad`` is created or changed;
* gradients of randomized models can be averaged over ``eot_samples`` forward passes
  (expectation over transformation); the default of 1 is the paper's protocol;
* ``repr`` lists every hyperparameter.

Subclasses implement ``perturb(model, x, y)``; ``__call__`` wraps it in the contract.

For code written against torchattacks, where an attack owns its model and is called as
``atk(images, labels)``, ``bind`` gives that shape::

    atk = robustq.attacks.PGD(eps=8/255, alpha=2/255, steps=10).bind(model)
    x_adv = atk(x, y)          # same contract: pixels in [0, 1], detached, mode restored
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..registry import Registry

ATTACKS: Registry[type] = Registry("attack")


def parse_eps(value) -> float:
    """``0.031``, ``"0.031"`` or ``"8/255"`` -> float (configs keep the user's spelling)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


class Attack:
    name = "attack"

    def __init__(self, eps=0.031, *, model_mode: str = "eval", eot_samples: int = 1) -> None:
        self.eps_spec = eps
        self.eps = parse_eps(eps)
        if self.eps < 0:
            raise ValueError(f"attack eps must be >= 0, got {eps}")
        if model_mode not in ("eval", "train", "keep"):
            raise ValueError(f"model_mode must be 'eval', 'train' or 'keep', got {model_mode!r}")
        if eot_samples < 1:
            raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
        self.model_mode = model_mode
        self.eot_samples = int(eot_samples)

    # -- the contract -------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.aminmax(x)
        if lo < 0 or hi > 1:
            raise ValueError(f"{self.name}: inputs must be pixels in [0, 1], got range "
                             f"[{float(lo):.3g}, {float(hi):.3g}]; normalise inside the model")
        was_training = model.training
        if self.model_mode != "keep":
            model.train(self.model_mode == "train")
        try:
            x_adv = self.perturb(model, x.detach(), y.detach())
        finally:
            model.train(was_training)
        r = self.radius
        return torch.min(torch.max(x_adv, x - r), x + r).clamp_(0.0, 1.0).detach()

    @property
    def radius(self) -> float:
        """The L-inf bound of ``attack(x) - x``: ``eps`` unless an attack says otherwise."""
        return self.eps

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def bind(self, model: nn.Module) -> "BoundAttack":
        """This attack tied to ``model``, called as ``atk(x, y)`` like a torchattacks attack."""
        return BoundAttack(self, model)

    # -- helpers for subclasses ---------------------------------------------------------
    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Into the eps-ball around ``x`` and into [0, 1]."""
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp_(0.0, 1.0)

    def input_grad(self, model: nn.Module, x: torch.Tensor,
                   loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Gradient of ``loss_fn(model(x))`` w.r.t. ``x``, averaged over ``eot_samples``."""
        return self.input_grad_logits(model, x, loss_fn)[0]

    def input_grad_logits(self, model: nn.Module, x: torch.Tensor,
                          loss_fn: Callable[[torch.Tensor], torch.Tensor]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_grad`` plus the (detached) logits averaged over the same draws.

        EOT (Athalye et al., ICML 2018): for a random model f(x; z) the attack ascends
        ``E_z[L(f(x; z))]``, whose gradient is estimated by the mean of ``eot_samples``
        independent per-draw gradients (variance / eot_samples)."""
        grad, logits = None, None
        for _ in range(self.eot_samples):
            x_ = x.detach().requires_grad_(True)
            with torch.enable_grad():
                z = model(x_)
                g, = torch.autograd.grad(loss_fn(z), x_)
            z = z.detach().float()
            grad = g if grad is None else grad.add_(g)
            logits = z if logits is None else logits.add_(z)
        assert grad is not None and logits is not None
        if self.eot_samples == 1:
            return grad, logits
        return grad.div_(self.eot_samples), logits.div_(self.eot_samples)

    def hparams(self) -> dict:
        """Every hyperparameter; values given as text ("8/255") are shown as given."""
        h = {k: v for k, v in vars(self).items() if not k.endswith("_spec")}
        h.update({k[:-5]: v for k, v in vars(self).items() if k.endswith("_spec")})
        return h

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


class BoundAttack:
    """An attack bound to one model: ``atk(x, y)`` (or ``atk.forward(x, y)``) returns x_adv.

    The torchattacks calling convention (``torchattacks.Attack(model)(images, labels)``) on
    top of robustq's contract; ``atk.attack`` and ``atk.model`` are the two parts."""

    def __init__(self, attack: Attack, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"bind needs a torch.nn.Module, got {type(model).__name__}")
        self.attack, self.model = attack, model

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.attack(self.model, x, y)

    forward = __call__

    def __repr__(self) -> str:
        return f"{self.attack!r}.bind({type(self.model).__name__})"


def make_attack(name: str, **kwargs) -> Attack:
    """Build a registered attack by name with keyword hyperparameters."""
    return ATTACKS.get(name)(**kwargs)
