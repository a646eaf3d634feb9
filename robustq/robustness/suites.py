"""Evaluation suites: which attacks, how many noise samples, and the worst case per example.

A suite is a named list of attacks plus its sampling defaults (``SUITES``):

* ``paper``      the paper's A1-A3 (FGSM, IFGSM-20, its "C&W") with one noise sample, exactly
                 its protocol, for comparison with its tables (run by ``evaluate.evaluate``);
* ``quick``      FGSM and PGD-CE-10, cheap enough to watch during training;
* ``strong``     the paper's three, then PGD-CE and PGD-CW (50 steps of 2.5 eps / 50, two
                 restarts) and C&W-L2 (4 x 50 steps), with EOT on randomized models (10
                 samples, 10 draws by default), plus the masking checks;
* ``autoattack`` the paper's three and AutoAttack (``robustness.autoattack``).

Worst case per example. Every attack runs on every example that the model gets right on at
least one clean draw (the others count as errors without being attacked). For attack ``a``
the correctness matrix ``C_a`` is ``(draws x n)``; ``attacks[a]`` is its accuracy alone. The
input itself lies in the eps-ball, so the worst case takes, per example, the row of whichever
of {clean, every attack} has the lowest mean correctness over draws; ``robust_acc_worst`` is
the accuracy of that choice. On a deterministic model this is the usual "robust iff no attack
succeeds".

Seeds: attack ``i`` of the suite runs after ``torch.manual_seed(seed + i)`` (recorded), inside
a forked generator, so an evaluation is reproducible and leaves the caller's RNG alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..attacks import Attack, make_attack, parse_eps
from ..registry import Registry
from .sampling import draw_correct, summarize

AttackSet = Callable[[object, int], dict]   # (eps as given, eot_samples) -> {name: attack}


@dataclass(frozen=True)
class Suite:
    name: str
    build: AttackSet
    default_eot: int          # EOT samples for a randomized model when none are asked for
    default_draws: int        # forward draws for the accuracy of a randomized model
    checks: bool              # run the gradient-masking checks by default
    description: str


SUITES: Registry[Suite] = Registry("suite")


def _register(suite: Suite) -> Suite:
    SUITES.register(suite.name)(suite)
    return suite


def paper_set(eps, eot: int) -> dict[str, Attack]:
    """A1-A3 with the paper's hyperparameters (EOT only where asked for)."""
    return {n: make_attack(n, eps=eps, eot_samples=eot) for n in ("fgsm", "ifgsm", "cw_paper")}


def strong_set(eps, eot: int, steps: int = 50, restarts: int = 2) -> dict[str, Attack]:
    """The paper's three, PGD-CE, PGD-CW (Madry's step 2.5 eps / steps) and C&W-L2 (4 search
    steps of 50 Adam steps: it is the costliest attack and rarely the decisive one in L-inf)."""
    alpha = 2.5 * parse_eps(eps) / steps
    pgd = dict(eps=eps, alpha=alpha, steps=steps, restarts=restarts, eot_samples=eot)
    return {**paper_set(eps, eot),
            "pgd_ce": make_attack("pgd", loss="ce", **pgd),
            "pgd_cw": make_attack("pgd", loss="cw", **pgd),
            "cw_l2": make_attack("cw_l2", eps=eps, steps=50, binary_steps=4, eot_samples=eot)}


def quick_set(eps, eot: int) -> dict[str, Attack]:
    """FGSM and PGD-CE with 10 steps of eps / 4 and one random start."""
    return {"fgsm": make_attack("fgsm", eps=eps, eot_samples=eot),
            "pgd_ce": make_attack("pgd", eps=eps, alpha=parse_eps(eps) / 4, steps=10,
                                  eot_samples=eot)}


def autoattack_set(eps, eot: int) -> dict[str, object]:
    from .autoattack import AutoAttackRun
    return {**paper_set(eps, eot), "autoattack": AutoAttackRun(eps, eot)}


_register(Suite("paper", paper_set, 1, 1, False,
                "the paper's A1-A3 with one noise sample (its protocol; not a robustness claim)"))
_register(Suite("quick", quick_set, 4, 4, False, "FGSM + PGD-CE-10, cheap, for training-time checks"))
_register(Suite("strong", strong_set, 10, 10, True,
                "paper's three + PGD-CE/CW (50 steps, 2 restarts) + C&W-L2, EOT, masking checks"))
_register(Suite("autoattack", autoattack_set, 20, 10, False,
                "AutoAttack standard (deterministic) or rand with EOT 20 (randomized), as RobustBench"))


@dataclass
class Outcome:
    """Per-example results of a set of attacks: ``correct[name]`` is ``(draws, n)`` bool."""
    correct: dict[str, torch.Tensor]
    seeds: dict[str, int]
    seconds: dict[str, float]
    settings: dict[str, str]
    objects: dict[str, object] = field(default_factory=dict)   # the attacks, after their run

    def worst(self) -> torch.Tensor:
        """Per example, the row of the source (clean or an attack) with the lowest mean."""
        stack = torch.stack(list(self.correct.values()))        # (sources, draws, n)
        pick = stack.float().mean(1).argmin(0)                  # (n,)
        return stack[pick, :, torch.arange(stack.shape[2])].T   # (draws, n)

    def summary(self) -> dict:
        acc = {k: summarize(v) for k, v in self.correct.items()}
        worst = summarize(self.worst())
        return {"natural_acc": acc["natural"][0], "natural_acc_std": acc["natural"][1],
                "attacks": {k: a for k, (a, _) in acc.items() if k != "natural"},
                "attacks_std": {k: s for k, (_, s) in acc.items() if k != "natural"},
                "robust_acc_worst": worst[0], "robust_acc_worst_std": worst[1]}


def _attack_batches(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int) -> torch.Tensor:
    if getattr(attack, "whole_set", False):   # e.g. AutoAttack: it batches by itself
        return attack(model, x, y)
    return torch.cat([attack(model, x[i:i + batch_size], y[i:i + batch_size])
                      for i in range(0, x.shape[0], batch_size)])


def run_attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: dict, *,
                draws: int, batch_size: int, seed: int,
                log: Callable[[str], None] = print) -> Outcome:
    """Clean accuracy and every attack's per-example correctness over ``draws`` draws."""
    clean = draw_correct(model, x, y, draws, batch_size)
    out = Outcome({"natural": clean}, {}, {}, {})
    alive = clean.any(0).nonzero().squeeze(1).to(x.device)
    for i, (name, attack) in enumerate(attacks.items()):
        torch.manual_seed(seed + i)
        started = time.perf_counter()
        correct = torch.zeros(draws, x.shape[0], dtype=torch.bool)
        if alive.numel():
            x_alive = x[alive]
            if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
                x_alive = x_alive.contiguous(memory_format=torch.channels_last)  # as the model
            x_adv = _attack_batches(model, attack, x_alive, y[alive], batch_size)
            correct[:, alive.cpu()] = draw_correct(model, x_adv, y[alive], draws, batch_size)
        out.correct[name], out.seeds[name] = correct, seed + i
        out.seconds[name] = round(time.perf_counter() - started, 2)
        out.settings[name], out.objects[name] = repr(attack), attack
        log(f"  {name:<12} {100 * summarize(correct)[0]:6.2f} %   ({out.seconds[name]:.1f} s)")
    return out
