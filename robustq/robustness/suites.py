"""Evaluation suites: which attacks, how many noise samples, and the worst case per example.

A suite is a named set of attacks plus its sampling defaults (``SUITES``). Every suite, the
paper's included, is run by the same code (``run.evaluate_suite`` -> ``run_attacks``): the
same batching, the same per-example correctness over draws, the same record.

* ``paper``      the configured ``eval.attacks`` (the paper's A1-A3 by default: FGSM,
                 IFGSM-20, its "C&W") with one noise sample, its protocol, for comparison with
                 its tables;
* ``quick``      FGSM and PGD-CE-10, cheap enough to watch during training;
* ``strong``     ``eval.attacks``, then PGD-CE and PGD-CW (50 steps of 2.5 eps / 50, two
                 restarts) and C&W-L2 (4 x 50 steps), with EOT on randomized models (10
                 samples, 10 draws by default), plus the masking checks;
* ``autoattack`` ``eval.attacks`` and AutoAttack (``attacks/autoattack.py``);
* ``blackbox``   attacks that never use the model's gradients: random corners of the eps-ball
                 and, given a surrogate, a transfer attack (the only suite for ONNX models).

``eval.attack_args`` (``{attack: {setting: value}}``) change an attack's settings in every
suite that runs it, e.g. ``{pgd: {steps: 100}}`` for both PGD-CE and PGD-CW.

Correctness. The clean inputs are scored over ``draws`` forward passes, a ``(draws x n)``
boolean matrix. Every attack runs on the examples the model gets right on at least one clean
draw (the others count as errors without being attacked), and its adversarial images are
scored over ``draws`` passes too. So ``attacks[a]`` is "correct under attack a", counting an
example wrong on clean inputs as wrong, as RobustBench does.

Worst case, defined once: in draw ``k`` example ``i`` is robust when it is classified
correctly on its clean input AND on every attack's image, all in draw ``k``;
``robust_acc_worst`` is the mean of that over draws and examples. On a deterministic model
this is the usual "correct, and no attack succeeds".

Seeds: attack ``i`` of the suite runs after ``torch.manual_seed(seed + i)`` (recorded), inside
a forked generator, so an evaluation is reproducible and leaves the caller's RNG alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ..attacks import ATTACKS, Attack
from ..eps import Eps
from ..progress import work_bar
from ..registry import Registry
from .sampling import draw_correct, summarize

PAPER_ATTACKS = ("fgsm", "ifgsm", "cw_paper")
Specs = dict[str, tuple[str, dict]]   # record name -> (attack name, settings)


@dataclass(frozen=True)
class Suite:
    name: str
    own: Callable[[Eps], Specs]   # the suite's own attacks, after eval.attacks if it takes them
    takes_attacks: bool           # starts with eval.attacks (the paper's three by default)
    default_eot: int              # EOT samples for a randomized model when none are asked for
    default_draws: int            # forward draws for the accuracy of a randomized model
    checks: bool                  # run the gradient-masking checks by default
    noise_off: bool               # rerun it with the block noise off on a randomized model
    description: str


SUITES: Registry[Suite] = Registry("suite")


def _register(suite: Suite) -> Suite:
    SUITES.register(suite.name)(suite)
    return suite


def strong_specs(eps: Eps, steps: int = 50, restarts: int = 2) -> Specs:
    """PGD-CE, PGD-CW (Madry's step 2.5 eps / steps) and C&W-L2 (4 search steps of 50 Adam
    steps: it is the costliest attack and rarely the decisive one in L-inf)."""
    pgd = dict(alpha=2.5 * eps / steps, steps=steps, restarts=restarts)
    return {"pgd_ce": ("pgd", {**pgd, "loss": "ce"}), "pgd_cw": ("pgd", {**pgd, "loss": "cw"}),
            "cw_l2": ("cw_l2", {"steps": 50, "binary_steps": 4})}


def quick_specs(eps: Eps) -> Specs:
    """FGSM and PGD-CE with 10 steps of eps / 4 and one random start."""
    return {"fgsm": ("fgsm", {}), "pgd_ce": ("pgd", {"alpha": eps / 4, "steps": 10})}


_register(Suite("paper", lambda eps: {}, True, 1, 1, False, False,
                "eval.attacks (the paper's A1-A3) with one noise sample (its protocol; not a "
                "robustness claim)"))
_register(Suite("quick", quick_specs, False, 4, 4, False, True,
                "FGSM + PGD-CE-10, cheap, for training-time checks"))
_register(Suite("strong", strong_specs, True, 10, 10, True, True,
                "eval.attacks + PGD-CE/CW (50 steps, 2 restarts) + C&W-L2, EOT, masking checks"))
_register(Suite("autoattack", lambda eps: {"autoattack": ("autoattack", {})}, True, 20, 10,
                False, True, "eval.attacks + AutoAttack standard (deterministic) or rand with "
                             "EOT 20 (randomized), as RobustBench"))
_register(Suite("blackbox", lambda eps: {"random_sign": ("random_sign", {"tries": 100})}, False,
                4, 4, False, True, "random corners of the eps-ball (+ transfer from --surrogate): "
                                   "no gradients of the model, so it also runs on ONNX files"))


def build_attacks(suite: Suite, eps: Eps, eot: int, *, attacks: Optional[list[str]] = None,
                  attack_args: Optional[dict] = None,
                  surrogate: Optional[nn.Module] = None) -> dict[str, Attack]:
    """The suite's attacks (record name -> attack) with ``attack_args`` applied by attack name."""
    specs: Specs = {}
    if suite.takes_attacks:
        specs.update({n: (n, {}) for n in (PAPER_ATTACKS if attacks is None else attacks)})
    specs.update(suite.own(eps))
    if suite.name == "blackbox" and surrogate is not None:
        specs["transfer"] = ("transfer", {})
    out = {}
    for record, (name, settings) in specs.items():
        kwargs = {**settings, **(attack_args or {}).get(name, {}), "eps": eps, "eot_samples": eot}
        if name == "transfer":
            kwargs["surrogate"] = surrogate
        out[record] = ATTACKS.get(name)(**kwargs)
    return out


@dataclass
class Outcome:
    """Per-example results of a set of attacks: ``correct[name]`` is ``(draws, n)`` bool."""
    correct: dict[str, torch.Tensor]
    seeds: dict[str, int]
    seconds: dict[str, float]
    settings: dict[str, str]
    objects: dict[str, Attack] = field(default_factory=dict)   # the attacks, after their run

    def worst(self) -> torch.Tensor:
        """Robust per draw and example: correct on clean inputs and under every attack."""
        return torch.stack(list(self.correct.values())).all(0)   # (draws, n)

    def summary(self) -> dict:
        acc = {k: summarize(v) for k, v in self.correct.items()}
        worst = summarize(self.worst())
        return {"natural_acc": acc["natural"][0], "natural_acc_std": acc["natural"][1],
                "attacks": {k: a for k, (a, _) in acc.items() if k != "natural"},
                "attacks_std": {k: s for k, (_, s) in acc.items() if k != "natural"},
                "robust_acc_worst": worst[0], "robust_acc_worst_std": worst[1]}


def run_attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: dict[str, Attack], *,
                draws: int, batch_size: int, seed: int, log: Callable[[str], None] = print,
                progress: bool = False, desc: str = "attacks", journal=None,
                phase: str = "main") -> Outcome:
    """Clean accuracy and every attack's per-example correctness over ``draws`` draws.

    With a ``journal`` (``journal.Journal``) the progress is kept under ``phase`` (every
    finished attack; inside one, batches at most every ``journal.every_s``) and a journaled
    run continues where it stopped, with the same result."""
    clean = draw_correct(model, x, y, draws, batch_size)
    if journal is not None:
        journal.start_phase(phase, clean, log)
    out = Outcome({"natural": clean}, {}, {}, {})
    alive = clean.any(0).nonzero().squeeze(1).to(x.device)
    weights = {k: sum(a.cost()) + draws for k, a in attacks.items()}   # units of the bar
    bar = work_bar(sum(weights.values()) * alive.numel(), desc, enabled=progress)
    for i, (name, attack) in enumerate(attacks.items()):
        key = f"{phase}/{name}"
        kept = journal.finished(key) if journal is not None else None
        if kept is not None:                       # finished before the interruption
            attack.load_state(kept["state"])
            journal.restore(kept, x.device)        # the generators as after its pass
            correct, seconds, note = kept["correct"].to(clean.device), kept["seconds"], ", kept"
            bar.update(weights[name] * alive.numel())
        else:
            if alive.numel():
                bar.set_description(f"{desc} {name}")
            correct, seconds = _attack_pass(model, x, y, attack, alive, draws, batch_size, seed + i,
                                            key, journal, lambda b: bar.update(weights[name] * b))
            note = ""
        out.correct[name], out.seeds[name] = correct, seed + i
        out.seconds[name] = round(seconds, 2)
        out.settings[name], out.objects[name] = repr(attack), attack
        bar.write(f"  {name:<12} {100 * summarize(correct)[0]:6.2f} %   ({out.seconds[name]:.1f} s{note})",
                  log)
    bar.close()
    return out


def _attack_pass(model, x, y, attack: Attack, alive, draws: int, batch_size: int, seed: int,
                 key: str, journal, advance) -> tuple[torch.Tensor, float]:
    """One attack on the examples ``alive``: ``(correct (draws, n), seconds)``. A journal's
    partial pass of this attack is continued after the last batch it kept."""
    torch.manual_seed(seed)
    started, before = time.perf_counter(), 0.0
    correct = torch.zeros(draws, x.shape[0], dtype=torch.bool)
    n = alive.numel()
    if n:
        x_alive, y_alive = x[alive], y[alive]
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        if channels_last:
            x_alive = x_alive.contiguous(memory_format=torch.channels_last)  # as the model
        parts, first = [], 0
        resumed = journal.progress(key, n) if journal is not None else None
        if resumed is not None:
            kept = resumed["x_adv"].to(x.device, x_alive.dtype)
            parts = [kept.contiguous(memory_format=torch.channels_last) if channels_last else kept]
            first, before = kept.shape[0], resumed["seconds"]
            attack.load_state(resumed["state"])
            journal.restore(resumed, x.device)
            advance(first)
        for j in range(first, n, batch_size):
            parts.append(attack(model, x_alive[j:j + batch_size], y_alive[j:j + batch_size]))
            advance(parts[-1].shape[0])
            if journal is not None and j + batch_size < n and journal.due():
                journal.save_progress(key, batches=j // batch_size + 1, n_alive=n,
                                      x_adv=torch.cat(parts), state=attack.state(), device=x.device,
                                      seconds=before + time.perf_counter() - started)
        x_adv = torch.cat(parts)
        correct[:, alive.cpu()] = draw_correct(model, x_adv, y_alive, draws, batch_size)
    seconds = before + time.perf_counter() - started
    if journal is not None:
        journal.finish(key, correct=correct, seconds=seconds, state=attack.state(), device=x.device)
    return correct, seconds


def sharded_run_attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        attacks: dict[str, Attack], *, dist=None, **kw) -> Outcome:
    """``run_attacks`` with the examples split across the ranks of a torchrun job (``dist``,
    a ``distributed.Dist``; None or one process: the plain call). Each rank attacks its
    contiguous slice and the per-example correctness is gathered in order, so the Outcome
    (and the record made from it) is the single-process one for a deterministic model;
    seconds are rank 0's."""
    if dist is None or not dist.active:
        return run_attacks(model, x, y, attacks, **kw)
    from ..distributed import sharded_masks
    kept: dict = {}

    def part(lo: int, hi: int) -> dict:
        kept["out"] = run_attacks(model, x[lo:hi], y[lo:hi], attacks,
                                  **{**kw, "progress": kw.get("progress", False) and dist.main})
        return kept["out"].correct

    correct = sharded_masks(part, x.shape[0], dist)
    out = kept["out"]
    out.correct = {k: v.to(out.correct[k].device) for k, v in correct.items()}
    return out
