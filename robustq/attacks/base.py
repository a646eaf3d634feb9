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

Subclasses implement ``perturb(model, x, y)``; ``__call__`` wraps it in the contract. They
also say what the evaluation engine needs to know before it starts: ``white_box`` (it needs
the model's gradients), ``requires`` (an optional package, checked before any work) and
``cost()`` (gradient and forward passes per example, for the time estimate).

For code written against torchattacks, where an attack owns its model and is called as
``atk(images, labels)``, ``bind`` gives that shape::

    atk = robustq.attacks.PGD(eps=8/255, alpha=2/255, steps=10).bind(model)
    x_adv = atk(x, y)          # same contract: pixels in [0, 1], detached, mode restored
"""
from __future__ import annotations

import difflib
import inspect
import typing
from typing import Callable, Optional

import torch
from torch import nn

from ..eps import Eps
from ..registry import Registry

ATTACKS: Registry[type] = Registry("attack")


class Attack:
    name = "attack"
    white_box = True                 # needs the model's gradients
    requires: Optional[str] = None   # an optional package it imports, e.g. "pyautoattack"

    def __init__(self, eps: Eps = Eps(0.031), *, model_mode: str = "eval",
                 eot_samples: int = 1) -> None:
        self.eps = Eps(eps)  # a float; a spelling such as "8/255" is parsed here, once
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

    def cost(self) -> tuple[float, float]:
        """``(gradient passes, forward passes)`` per attacked example, at most."""
        return float(self.eot_samples), 0.0

    def extras(self, n: int) -> dict:
        """Keys this attack adds to the results record after its run on ``n`` examples."""
        return {}

    def state(self) -> dict:
        """What this attack accumulates across batches (JSON values), for a resumed evaluation
        (``robustness/journal.py``); most attacks keep nothing."""
        return {}

    def load_state(self, state: dict) -> None:
        """Continue from ``state()`` as saved after some batches."""

    def hparams(self) -> dict:
        """Every hyperparameter; epsilons and steps are shown as the user wrote them."""
        return dict(vars(self))

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


# settings an evaluation sets for every attack at once, never per attack
_SHARED = {"eps": "eval.eps", "eot_samples": "eval.eot_samples (--eot)",
           "surrogate": "--surrogate MODEL_FILE"}


def attack_params(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword hyperparameters of an attack class, its bases' included."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        for p in list(inspect.signature(klass.__init__).parameters.values())[1:]:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params.setdefault(p.name, p)
    return params


def check_attack_args(name: str, args, eps: Eps) -> dict:
    """``eval.attack_args[name]`` checked against the attack's signature and built once;
    returns the settings with step sizes parsed to ``Eps``. Raises one ValueError sentence."""
    where = f"eval.attack_args.{name}"
    if name not in ATTACKS:
        close = difflib.get_close_matches(str(name), ATTACKS.names(), n=1)
        raise ValueError(f"eval.attack_args names {name!r}, which is not an attack"
                         + (f" (did you mean {close[0]!r}?)" if close else
                            f"; choose from {', '.join(ATTACKS.names())}"))
    if not isinstance(args, dict):
        raise ValueError(f"{where} must be a mapping of settings such as {{steps: 20}}, got {args!r}")
    cls, out = ATTACKS.get(name), {}
    params = attack_params(cls)
    hints = typing.get_type_hints(cls.__init__)
    for key, value in args.items():
        if key in _SHARED:
            raise ValueError(f"{where}.{key}: {key} is set for every attack at once; use {_SHARED[key]}")
        if key not in params:
            known = [k for k in params if k not in _SHARED]
            close = difflib.get_close_matches(str(key), known, n=1)
            raise ValueError(f"{where}: {name} has no setting {key!r}"
                             + (f" (did you mean {close[0]!r}?)" if close else
                                f"; its settings are {', '.join(known)}"))
        try:
            eps_like = hints.get(key) is Eps or Eps in typing.get_args(hints.get(key))
            out[key] = Eps(value) if eps_like and value is not None else value
        except ValueError as e:
            raise ValueError(f"{where}.{key}: {e}") from None
    try:
        cls(eps=eps, **out)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return out
