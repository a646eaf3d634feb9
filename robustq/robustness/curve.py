"""Robustness curve: accuracy under attack as a function of eps.

For each eps (an ``Eps``, recorded as written, e.g. "4/255") the model is attacked with PGD-CE (``steps``
steps of 2.5 eps / steps, one random start, EOT on a randomized model) and scored over
``draws`` forward passes; eps = 0 is the clean accuracy. A curve that rises with eps means
the attack, not the model, is the limit: the ``eps_monotone`` flag fires when accuracy at a
larger eps exceeds accuracy at a smaller one by more than max(1%, 2 / n).

The numbers go into ``results.json`` (``curve``); ``plot_curve`` draws them into a PNG with
matplotlib (the optional extra ``robustq[plot]``), without touching pyplot's global state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..attacks import make_attack
from ..eps import Eps
from ..errors import require
from .checks import flag
from .sampling import summarize
from .suites import run_attacks

DEFAULT_EPS = tuple(Eps(e) for e in ("0", "1/255", "2/255", "4/255", "8/255", "12/255", "16/255"))


def curve_attacks(eps_list: Sequence[Eps], eot_samples: int = 1, steps: int = 20) -> dict:
    """One PGD-CE per positive eps, named by its spelling."""
    return {str(e): make_attack("pgd", eps=e, alpha=2.5 * e / steps, steps=steps,
                                eot_samples=eot_samples) for e in eps_list if e > 0}


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: Sequence[Eps],
                     *, eot_samples: int = 1, draws: int = 1, steps: int = 20, batch_size: int = 250,
                     seed: int = 0, log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """``{"eps": [as written], "acc": [...], "std": [...], "attack": ...}``."""
    eps_list = [Eps(e) for e in eps_list]
    log(f"robustness curve (PGD-CE-{steps}) on {x.shape[0]} examples")
    out = run_attacks(model, x, y, curve_attacks(eps_list, eot_samples, steps), draws=draws,
                      batch_size=batch_size, seed=seed, log=log, progress=progress, desc="curve")
    acc, std = [], []
    for e in eps_list:
        a, s = summarize(out.correct["natural" if e == 0 else str(e)])
        acc.append(a)
        std.append(s)
    return {"eps": [e.spec for e in eps_list], "acc": acc, "std": std, "n": int(x.shape[0]),
            "attack": f"PGD-CE, {steps} steps of 2.5 eps/{steps}, 1 start, EOT {eot_samples}, "
                      f"{draws} draws", "seeds": out.seeds}


def monotone_flag(curve: dict) -> dict:
    """Fires when accuracy rises with eps by more than the tolerance."""
    order = sorted(range(len(curve["eps"])), key=lambda i: Eps(curve["eps"][i]))
    acc = [curve["acc"][i] for i in order]
    rise = max([b - a for a, b in zip(acc, acc[1:])] or [0.0])
    tol = max(0.01, 2.0 / max(curve["n"], 1)) + 2 * max(curve["std"] or [0.0])
    return flag(rise > tol, rise, tol,
                f"accuracy rose by {100 * rise:.1f} points with a larger eps (masking)" if rise > tol
                else "accuracy never rises with eps (fine)")


def plot_curve(curve: dict, path: str | Path, title: str = "") -> Path:
    """Accuracy vs eps (in /255 units) as a PNG; needs matplotlib (robustq[plot])."""
    require("matplotlib", "the robustness curve PNG (--curve)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = [255 * Eps(e) for e in curve["eps"]]
    ys = [100 * a for a in curve["acc"]]
    err = [100 * s for s in curve["std"]]
    fig = Figure(figsize=(5, 3.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(xs, ys, yerr=err if any(err) else None, marker="o", capsize=3)
    ax.set_xlabel("eps (x 1/255, L-inf)")
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title or curve["attack"], fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
