"""Run a suite on a model: randomness detection, sampling plan, attacks, worst case, the
noise-off twin, masking checks and the robustness curve, into one flat record.

The record follows RobustBench's model cards in spirit: one flat JSON object naming the
threat model (``Linf``), eps as the user wrote it, the number of examples, and for each
attack its accuracy; plus everything needed to reproduce or doubt it: EOT samples, draws,
seeds, every attack's hyperparameters, the accuracy spread over draws, timings, and the
masking flags. ``evaluate.evaluate`` adds the model/quantization/sparsity keys around it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .checks import masking_checks, masking_suspected
from .curve import monotone_flag, robustness_curve
from .sampling import inputs_only, is_randomized, noise_disabled, sampling_plan
from .suites import SUITES, Outcome, Suite, run_attacks


@dataclass
class SuiteOptions:
    eot_samples: Optional[int] = None     # None: the suite's default for randomized models
    draws: Optional[int] = None           # None: the suite's default for randomized models
    allow_single_sample: bool = False     # accept eot_samples or draws of 1 on a random model
    seed: int = 0
    batch_size: int = 250
    noise_off: bool = True                # also evaluate a randomized model with noise off
    checks: Optional[bool] = None         # None: the suite's default (on for strong)
    n_check: int = 200                    # examples the masking checks use
    surrogate: Optional[nn.Module] = None  # for the transfer check; None: noise-off twin
    curve_eps: Optional[Sequence] = None  # eps values for the robustness curve; None: none


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"unknown evaluation suite {name!r}; choose one of {', '.join(SUITES.names())}")
    return SUITES.get(name)


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
    """Run ``suite`` on pixels ``x`` (in [0, 1]) and labels ``y``; returns the suite's record."""
    opts, spec = opts or SuiteOptions(), get_suite(suite)
    model.eval()
    started = time.perf_counter()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), inputs_only(model):
        torch.manual_seed(opts.seed)
        randomized, eot, draws = plan(model, x, spec, opts)
        log(f"suite {suite}: {x.shape[0]} examples, eps {eps}, "
            + (f"randomized model: EOT {eot}, {draws} draws" if randomized else "deterministic model"))
        out = run_attacks(model, x, y, spec.build(eps, eot), draws=draws,
                          batch_size=opts.batch_size, seed=opts.seed, log=log)
        record = {"suite": suite, "threat_model": "Linf", "eps": eps, "n_eval": int(x.shape[0]),
                  "randomized": randomized, "eot_samples": eot, "draws": draws, **out.summary(),
                  "seeds": out.seeds, "attack_settings": out.settings, "attack_seconds": out.seconds}
        _autoattack_extras(record, out)
        if randomized and opts.noise_off:
            record["noise_off"] = _noise_off(model, x, y, spec, eps, opts, log)
        flags = {}
        if spec.checks if opts.checks is None else opts.checks:
            flags.update(_checks(model, x, y, eps, out, randomized, eot, draws, opts, log))
        if opts.curve_eps:
            record["curve"] = robustness_curve(model, x, y, list(opts.curve_eps), eot_samples=eot,
                                               draws=draws, batch_size=opts.batch_size,
                                               seed=opts.seed, log=log)
            flags["eps_monotone"] = monotone_flag(record["curve"])
        if flags:
            record["masking_checks"] = flags
            record["masking_suspected"] = masking_suspected(flags)
    record["suite_seconds"] = round(time.perf_counter() - started, 2)
    return record


def _noise_off(model, x, y, spec: Suite, eps, opts: SuiteOptions, log) -> dict:
    """The same suite on the same model with its block noise off (deterministic: 1 sample)."""
    log("same model, noise off:")
    with noise_disabled(model):
        out = run_attacks(model, x, y, spec.build(eps, 1), draws=1, batch_size=opts.batch_size,
                          seed=opts.seed, log=log)
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
                          seed=opts.seed + 100, log=log)


def _autoattack_extras(record: dict, out: Outcome) -> None:
    """AutoAttack's version, its own cumulative accuracies (rescaled from the examples it was
    given to all examples) and its warnings."""
    run = out.objects.get("autoattack")
    if run is None:
        return
    record["autoattack_version"] = run.version
    given, n = run.n_given, out.correct["natural"].shape[1]
    record["autoattack_log"] = {k: round(v * given / n, 4) for k, v in run.log.items()}
    record["autoattack_warnings"] = run.warnings
