"""Gradient-masking checks (after Athalye, Carlini & Wagner, ICML 2018; Carlini et al., "On
Evaluating Adversarial Robustness", 2019; AutoAttack's ``checks.py``).

A defense can look robust because its gradients are useless (zero, noisy, shattered by a
quantizer or a threshold) rather than because no adversarial example exists. Each check
below is a symptom of that; each becomes a flag ``{"fired", "value", "threshold",
"explanation"}`` with a one-line explanation. A fired flag means: do not trust the white-box
numbers until it is understood.

* ``randomized``     repeated forward passes disagree (informational: the suite then uses EOT
                     and several draws; a fired flag here is handled, not a failure);
* ``zero_gradients`` the fraction of inputs whose (EOT-averaged) cross-entropy gradient is
                     exactly zero exceeds 10%: gradient attacks cannot move them;
* ``large_eps``      PGD at eps = 0.5 (the whole image can be pushed to mid-grey) leaves more
                     than 5% accuracy: an attack that cannot win an unwinnable game for the
                     defender is not finding the model's weaknesses;
* ``more_steps``     PGD with the suite's many steps and restarts is less successful than a
                     10-step single-start PGD (beyond the tolerance): more effort must never
                     help the model;
* ``black_box``      a transfer attack (from a surrogate) or random corners of the eps-ball,
                     which never see the model's gradients, beat the white-box worst case.

The tolerance for the comparisons is ``max(1%, 2 / n)`` (two examples), plus twice the
larger spread over draws for a randomized model.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import make_attack
from .sampling import summarize
from .suites import run_attacks

ZERO_GRAD_MAX = 0.10
LARGE_EPS = 0.5
LARGE_EPS_MAX_ACC = 0.05


def flag(fired: bool, value: float, threshold: float, explanation: str) -> dict:
    return {"fired": bool(fired), "value": round(float(value), 4),
            "threshold": round(float(threshold), 4), "explanation": explanation}


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                           eot_samples: int = 1, batch_size: int = 250) -> float:
    """Fraction of examples whose EOT-averaged CE input gradient is exactly zero."""
    probe = make_attack("fgsm", eps=0.0, eot_samples=eot_samples)
    zero = 0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        g = probe.input_grad(model, xb, lambda z: F.cross_entropy(z.float(), yb, reduction="sum"))
        zero += int((g.flatten(1).abs().amax(1) == 0).sum())
    return zero / max(x.shape[0], 1)


def probe_attacks(eps: float, eot_samples: int, surrogate: Optional[nn.Module] = None) -> dict:
    """The checks' own attacks: PGD at eps 0.5 and PGD-10 at eps, random corners, transfer."""
    pgd = lambda e, steps: make_attack("pgd", eps=e, alpha=e / 4, steps=steps, eot_samples=eot_samples)
    return {"large_eps": pgd(LARGE_EPS, 20), "pgd10": pgd(eps, 10),
            "random_sign": make_attack("random_sign", eps=eps),
            "transfer": make_attack("transfer", eps=eps, surrogate=surrogate)}


def masking_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                   randomized: bool, eot_samples: int, draws: int, white_box: torch.Tensor,
                   strong_pgd: Optional[torch.Tensor], surrogate: Optional[nn.Module] = None,
                   batch_size: int = 250, seed: int = 0, log: Callable[[str], None] = print,
                   progress: bool = False) -> dict[str, dict]:
    """All checks on ``(x, y)``; ``white_box`` and ``strong_pgd`` are the suite's ``(draws, n)``
    correctness on these examples (worst case over its white-box attacks, and its PGD-CE)."""
    n = x.shape[0]
    wb_acc, wb_std = summarize(white_box)
    tol = lambda *stds: max(0.01, 2.0 / n) + (2 * max(stds) if randomized else 0.0)
    flags = {"randomized": flag(
        randomized, float(randomized), 0.5,
        f"forward passes disagree: gradients averaged over {eot_samples} draws (EOT), accuracy "
        f"over {draws} draws" if randomized else "forward passes agree: the model is deterministic")}

    z = zero_gradient_fraction(model, x, y, eot_samples=eot_samples, batch_size=batch_size)
    flags["zero_gradients"] = flag(z > ZERO_GRAD_MAX, z, ZERO_GRAD_MAX,
        f"{100 * z:.1f}% of inputs have an exactly zero loss gradient"
        + (": gradient attacks cannot move them" if z > ZERO_GRAD_MAX else " (fine)"))

    log(f"masking checks on {n} examples")
    out = run_attacks(model, x, y, probe_attacks(eps, eot_samples, surrogate), draws=draws,
                      batch_size=batch_size, seed=seed, log=log, progress=progress,
                      desc="masking checks")
    big, big_std = summarize(out.correct["large_eps"])
    flags["large_eps"] = flag(big > LARGE_EPS_MAX_ACC, big, LARGE_EPS_MAX_ACC,
        f"PGD at eps {LARGE_EPS} leaves {100 * big:.1f}% accuracy"
        + (": the attack fails where it must succeed (masking)" if big > LARGE_EPS_MAX_ACC else " (near zero, fine)"))

    weak, weak_std = summarize(out.correct["pgd10"])
    strong, strong_std = summarize(strong_pgd if strong_pgd is not None else white_box)
    t = tol(weak_std, strong_std)
    flags["more_steps"] = flag(strong > weak + t, strong - weak, t,
        f"PGD with more steps and restarts: {100 * strong:.1f}% vs 10 steps: {100 * weak:.1f}%"
        + (": more effort helped the model (masking)" if strong > weak + t else " (more effort never helped the model)"))

    bb = {k: summarize(out.correct[k]) for k in ("transfer", "random_sign")}
    best = min(bb, key=lambda k: bb[k][0])
    t = tol(wb_std, bb[best][1])
    flags["black_box"] = flag(bb[best][0] < wb_acc - t, wb_acc - bb[best][0], t,
        f"best black-box ({best}) {100 * bb[best][0]:.1f}% vs white-box worst case {100 * wb_acc:.1f}%"
        + (": black-box beat white-box (masking)" if bb[best][0] < wb_acc - t else " (white-box is stronger, fine)"))
    return flags


MASKING_FLAGS = ("zero_gradients", "large_eps", "more_steps", "black_box", "eps_monotone")


def masking_suspected(flags: dict[str, dict]) -> bool:
    """True when any check other than the (handled) randomness flag fired."""
    return any(flags[k]["fired"] for k in MASKING_FLAGS if k in flags)
