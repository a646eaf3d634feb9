"""Run a suite on a model: readiness checks, randomness detection, sampling plan, a cost
estimate, the attacks, worst case, the noise-off twin, masking checks and the robustness
curve, into one flat record.

The record follows RobustBench's model cards in spirit: one flat JSON object naming the
threat model (``Linf``), eps as the user wrote it, the number of examples, and for each
attack its accuracy; plus everything needed to reproduce or doubt it: EOT samples, draws,
seeds, every attack's hyperparameters, the accuracy spread over draws, timings, and the
masking flags. ``evaluate.evaluate`` adds the model keys around it.

Before any work: every attack's optional package is checked, and a model that gives no
gradients (an ONNX file run by onnxruntime) is refused white-box attacks. Then one batch is
timed (a forward pass and an input gradient) and the cost of the whole run is logged as one
line: an upper bound, since only examples correct on clean inputs are attacked and restarts
skip the examples already fooled.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import Attack, make_attack
from ..eps import Eps
from ..errors import ConfigError, require
from ..models import has_noise
from .checks import masking_checks, masking_suspected, probe_attacks
from .curve import curve_attacks, monotone_flag, robustness_curve
from .journal import Journal, fingerprint
from .sampling import draw_correct, inputs_only, is_randomized, noise_disabled, sampling_plan
from .suites import SUITES, Outcome, Suite, build_attacks, sharded_run_attacks


@dataclass
class SuiteOptions:
    eot_samples: Optional[int] = None     # None: the suite's default for randomized models
    draws: Optional[int] = None           # None: the suite's default for randomized models
    allow_single_sample: bool = False     # accept eot_samples or draws of 1 on a random model
    seed: int = 0
    batch_size: int = 250
    noise_off: Optional[bool] = None      # rerun a randomized model with noise off; None: suite's
    checks: Optional[bool] = None         # None: the suite's default (on for strong)
    n_check: int = 200                    # examples the masking checks use
    surrogate: Optional[nn.Module] = None  # for the transfer attacks; None: noise-off twin
    curve_eps: Optional[Sequence] = None  # eps values for the robustness curve; None: none
    attacks: Optional[list[str]] = None   # eval.attacks, for suites that take them
    attack_args: Optional[dict] = None    # eval.attack_args: {attack: {setting: value}}
    progress: bool = False                # progress bars (on a terminal)
    dist: Optional[object] = None         # a torchrun job (distributed.Dist): examples split
    journal: Optional[object] = None      # a journal.Place: keep progress, continue from it


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"unknown evaluation suite {name!r}; choose one of {', '.join(SUITES.names())}")
    return SUITES.get(name)


def differentiable(model: nn.Module) -> bool:
    """False for models that give no input gradients (``OnnxModel``)."""
    return bool(getattr(model, "differentiable", True))


def check_ready(model: nn.Module, spec: Suite, eps: Eps, opts: SuiteOptions) -> None:
    """Everything that would fail later, checked before any work (one sentence each)."""
    attacks = build_attacks(spec, eps, 1, attacks=opts.attacks, attack_args=opts.attack_args,
                            surrogate=opts.surrogate)
    for name, a in attacks.items():
        if a.requires:
            require(a.requires, f"suite {spec.name} runs {name}, which")
    if not differentiable(model):
        white = [n for n, a in attacks.items() if a.white_box] + (["--curve"] if opts.curve_eps else [])
        if white:
            raise ConfigError(f"this model gives no gradients (ONNX files run through onnxruntime), "
                              f"so suite {spec.name} cannot run {', '.join(white)}; use --suite "
                              f"blackbox, with --surrogate MODEL_FILE for a transfer attack")


def plan(model: nn.Module, x: torch.Tensor, suite: Suite, opts: SuiteOptions) -> tuple[bool, int, int]:
    """``(randomized, eot_samples, draws)``; the paper suite is single-sample by definition."""
    randomized = is_randomized(model, x[:64])
    eot, draws = sampling_plan(randomized, opts.eot_samples, opts.draws,
                               default_eot=suite.default_eot, default_draws=suite.default_draws,
                               allow_single_sample=opts.allow_single_sample or suite.name == "paper")
    return randomized, eot, draws


def evaluate_suite(model: nn.Module, x: torch.Tensor, y: torch.Tensor, suite: str, eps,
                   opts: Optional[SuiteOptions] = None,
                   log: Callable[[str], None] = print) -> dict:
    """Run ``suite`` on pixels ``x`` (in [0, 1]) and labels ``y``; returns the suite's record.
    ``eps`` is an ``Eps``, a number or a spelling such as ``"8/255"``."""
    opts, spec, eps = opts or SuiteOptions(), get_suite(suite), Eps(eps)
    model.eval()
    check_ready(model, spec, eps, opts)
    started = time.perf_counter()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), inputs_only(model):
        torch.manual_seed(opts.seed)
        randomized, eot, draws = plan(model, x, spec, opts)
        attacks = build_attacks(spec, eps, eot, attacks=opts.attacks,
                                attack_args=opts.attack_args, surrogate=opts.surrogate)
        noise_off = randomized and has_noise(model)   # the block noise can be switched off
        twin = noise_off and (spec.noise_off if opts.noise_off is None else opts.noise_off)
        checks = (spec.checks if opts.checks is None else opts.checks) and differentiable(model)
        log(f"suite {suite}: {x.shape[0]} examples, eps {eps}, "
            + (f"randomized model: EOT {eot}, {draws} draws" if randomized else "deterministic model"))
        log(estimate(model, x, y, _phases(spec, eps, attacks, x.shape[0], draws, twin, checks, eot, opts),
                     opts))
        journal = _journal(model, x, y, suite, eps, attacks, randomized, eot, draws, twin, opts, log)
        out = sharded_run_attacks(model, x, y, attacks, dist=opts.dist, draws=draws,
                                  batch_size=opts.batch_size, seed=opts.seed, log=log,
                                  progress=opts.progress, desc=f"suite {suite}", journal=journal)
        record = {"suite": suite, "threat_model": "Linf", "eps": eps.spec, "n_eval": int(x.shape[0]),
                  "randomized": randomized, "eot_samples": eot, "draws": draws, **out.summary(),
                  "seeds": out.seeds, "attack_settings": out.settings, "attack_seconds": out.seconds}
        for a in attacks.values():
            record.update(a.extras(int(x.shape[0])))
        record["natural_acc_noise_off"] = record["natural_acc"] if not randomized else None
        if twin:
            record["noise_off"] = _noise_off(model, x, y, spec, eps, opts, log, journal)
            record["natural_acc_noise_off"] = record["noise_off"]["natural_acc"]
        elif noise_off:
            with noise_disabled(model):
                clean = draw_correct(model, x, y, 1, opts.batch_size)
            record["natural_acc_noise_off"] = float(clean.double().mean())
        _checks_and_curve(record, model, x, y, eps, out, randomized, eot, draws, checks, opts, log)
    record["suite_seconds"] = round(time.perf_counter() - started, 2)
    if journal is not None and journal.resumed:   # the compute of the interrupted runs counts too
        record["suite_seconds"] = round(record["suite_seconds"] + journal.reused_seconds, 2)
        record["resumed_seconds"] = round(journal.reused_seconds, 2)
    return record


def _checks_and_curve(record, model, x, y, eps, out, randomized, eot, draws, checks,
                      opts: SuiteOptions, log) -> None:
    flags = {}
    if checks:
        flags.update(_checks(model, x, y, eps, out, randomized, eot, draws, opts, log))
    if opts.curve_eps:
        record["curve"] = robustness_curve(model, x, y, list(opts.curve_eps), eot_samples=eot,
                                           draws=draws, batch_size=opts.batch_size,
                                           seed=opts.seed, log=log, progress=opts.progress)
        flags["eps_monotone"] = monotone_flag(record["curve"])
    if flags:
        record["masking_checks"] = flags
        record["masking_suspected"] = masking_suspected(flags)


def _journal(model, x, y, suite, eps: Eps, attacks, randomized, eot, draws, twin,
             opts: SuiteOptions, log) -> Optional[Journal]:
    """The journal of this evaluation (None: not asked for, or a torchrun job)."""
    if opts.journal is None or (opts.dist is not None and getattr(opts.dist, "active", False)):
        return None
    from .. import __version__
    settings = {"suite": suite, "eps": eps.spec, "eot": eot, "draws": draws, "twin": twin,
                "randomized": randomized, "batch_size": opts.batch_size, "seed": opts.seed,
                "attacks": [[k, repr(a)] for k, a in attacks.items()],   # in order: seed + i
                "device": x.device.type, "autocast": str(torch.get_autocast_dtype(x.device.type))
                if torch.is_autocast_enabled(x.device.type) else None,
                "versions": [torch.__version__, __version__, _version("pyautoattack")]}
    key = fingerprint(model, x, y, settings, surrogate=opts.surrogate)
    if key is None:
        return None
    journal = Journal(opts.journal.name(key), key, log)
    if journal.resumed:
        log(f"continuing the interrupted evaluation kept in {journal.path} ({journal.describe()})")
    return journal


def _version(package: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _noise_off(model, x, y, spec: Suite, eps: Eps, opts: SuiteOptions, log, journal=None) -> dict:
    """The same suite on the same model with its block noise off (deterministic: 1 sample)."""
    log("same model, noise off:")
    attacks = build_attacks(spec, eps, 1, attacks=opts.attacks, attack_args=opts.attack_args,
                            surrogate=opts.surrogate)
    with noise_disabled(model):
        out = sharded_run_attacks(model, x, y, attacks, dist=opts.dist, draws=1,
                                  batch_size=opts.batch_size, seed=opts.seed, log=log,
                                  progress=opts.progress, desc="noise off", journal=journal,
                                  phase="noise_off")
    s = out.summary()
    return {"natural_acc": s["natural_acc"], "attacks": s["attacks"],
            "robust_acc_worst": s["robust_acc_worst"], "seeds": out.seeds}


def _checks(model, x, y, eps, out: Outcome, randomized, eot, draws, opts: SuiteOptions, log) -> dict:
    m = min(opts.n_check, x.shape[0])
    white = Outcome({k: v[:, :m] for k, v in out.correct.items()
                     if k not in ("transfer", "random_sign")}, {}, {}, {})
    strong = out.correct.get("pgd_ce")
    return masking_checks(model, x[:m], y[:m], eps, randomized=randomized, eot_samples=eot,
                          draws=draws, white_box=white.worst(),
                          strong_pgd=None if strong is None else strong[:, :m],
                          surrogate=opts.surrogate, batch_size=opts.batch_size,
                          seed=opts.seed + 100, log=log, progress=opts.progress)


# --- the cost estimate ---------------------------------------------------------------------

Phase = tuple[dict[str, Attack], int, int]   # (attacks, examples, draws)


def _phases(spec: Suite, eps: Eps, attacks: dict, n: int, draws: int, twin: bool, checks: bool,
            eot: int, opts: SuiteOptions) -> list[Phase]:
    phases = [(attacks, n, draws)]
    if twin:
        phases.append((build_attacks(spec, eps, 1, attacks=opts.attacks,
                                     attack_args=opts.attack_args, surrogate=opts.surrogate), n, 1))
    if checks:
        phases.append((probe_attacks(eps, eot, opts.surrogate), min(opts.n_check, n), draws))
    if opts.curve_eps:
        phases.append((curve_attacks([Eps(e) for e in opts.curve_eps], eot), n, draws))
    return phases


def _seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return max(time.perf_counter() - started, 1e-6)


def estimate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, phases: list[Phase],
             opts: SuiteOptions) -> str:
    """One line: the run's cost at most, from a forward pass and an input gradient timed on
    the first batch (after one untimed warm-up pass)."""
    xb, yb = x[:opts.batch_size], y[:opts.batch_size]
    grads = sum(a.cost()[0] * k for attacks, k, _ in phases for a in attacks.values())
    forwards = sum(d * k for _, k, d in phases) + sum(   # clean draws, then per attack
        (a.cost()[1] + d) * k for attacks, k, d in phases for a in attacks.values())
    with torch.no_grad():
        model(xb)
        fwd_rate = xb.shape[0] / _seconds(lambda: model(xb))
    grad_model = model if differentiable(model) else opts.surrogate
    grad_rate = float("inf")
    if grads and grad_model is not None:
        probe = make_attack("fgsm", eps=0.0)
        loss = lambda z: F.cross_entropy(z.float(), yb, reduction="sum")
        probe.input_grad(grad_model, xb, loss)   # warm-up: first calls pay one-time costs
        grad_rate = xb.shape[0] / _seconds(lambda: probe.input_grad(grad_model, xb, loss))
    total = grads / grad_rate + forwards / fwd_rate
    return (f"estimated time: at most {_duration(total)} ({grads:,.0f} gradient and "
            f"{forwards:,.0f} forward passes of one image; timed on the first batch: "
            + (f"{grad_rate:,.0f} img/s with input gradients, " if grads else "")
            + f"{fwd_rate:,.0f} img/s forward)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
