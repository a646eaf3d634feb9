"""Training objectives as small functions of logits (the paper's numbering).

* ``natural``:   CE(f(x), y)
* ``at``:        CE(f(x_adv), y), x_adv from PGD (Madry et al.); eq. (8) with alpha=0, beta=1
* ``trades``:    eq. (7), CE(f(x), y) + beta * KL(p(x) || p(x_adv)) (batch mean), x_adv
                 from TRADES' KL maximisation (``attacks/trades_kl.py``)
* ``tradeoff``:  eq. (8), alpha * CE(f(x), y) + beta * CE(f(x_adv), y), x_adv from PGD

Each returns a dict: ``loss`` (to backpropagate) plus its parts for logging. Making x_adv is
an attack's job and switching modes is the engine's; ``OBJECTIVES`` tells the engine which
attack an objective needs and whether it needs the clean logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .registry import Registry

Logits = Optional[torch.Tensor]


def natural(logits: Logits, logits_adv: Logits, y: torch.Tensor) -> dict:
    ce = F.cross_entropy(logits.float(), y)
    return {"loss": ce, "ce_nat": ce.detach()}


def adversarial(logits: Logits, logits_adv: Logits, y: torch.Tensor) -> dict:
    ce = F.cross_entropy(logits_adv.float(), y)
    return {"loss": ce, "ce_adv": ce.detach()}


def trades(logits: Logits, logits_adv: Logits, y: torch.Tensor, beta: float = 6.0) -> dict:
    ce = F.cross_entropy(logits.float(), y)
    kl = F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits.float(), 1),
                  reduction="batchmean")
    return {"loss": ce + beta * kl, "ce_nat": ce.detach(), "kl": kl.detach()}


def tradeoff(logits: Logits, logits_adv: Logits, y: torch.Tensor, alpha: float = 1.0,
             beta: float = 8.0) -> dict:
    ce_adv = F.cross_entropy(logits_adv.float(), y)
    out = {"ce_adv": ce_adv.detach()}
    if alpha == 0:  # plain AT: the clean forward is skipped by the engine
        out["loss"] = beta * ce_adv
        return out
    ce_nat = F.cross_entropy(logits.float(), y)
    out.update(loss=alpha * ce_nat + beta * ce_adv, ce_nat=ce_nat.detach())
    return out


@dataclass(frozen=True)
class Objective:
    fn: Callable[..., dict]
    attack: Optional[str]          # registered attack that makes x_adv, or None
    params: tuple[str, ...] = ()   # hyperparameters taken from the loss config
    clean: str = "always"          # clean forward needed: "always", "never", "if_alpha"

    def needs_clean(self, **params) -> bool:
        if self.clean == "if_alpha":
            return params.get("alpha", 1.0) != 0
        return self.clean == "always"


OBJECTIVES: Registry[Objective] = Registry("loss")
OBJECTIVES.register("natural")(Objective(natural, None))
OBJECTIVES.register("at")(Objective(adversarial, "pgd", clean="never"))
OBJECTIVES.register("trades")(Objective(trades, "trades_kl", ("beta",)))
OBJECTIVES.register("tradeoff")(Objective(tradeoff, "pgd", ("alpha", "beta"), clean="if_alpha"))
