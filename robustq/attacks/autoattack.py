"""AutoAttack (Croce & Hein, ICML 2020) through the ``pyautoattack`` package, run the way
RobustBench runs it: ``AutoAttack(model, norm="Linf", eps=eps, version=...)`` then
``run_standard_evaluation(x, y, bs)``, here on each batch the evaluation engine gives it,
like every other attack.

* a deterministic model gets version ``standard``: APGD-CE, APGD-T (9 target classes), FAB-T
  and Square (5,000 queries), each on the points the previous ones did not break;
* a randomized model gets version ``rand``: APGD-CE and APGD-DLR with EOT over 20 forward
  passes (``eot_iter``), one restart each.

AutoAttack decides "broken" from one forward pass; robustq then scores the returned images
over its own ``draws`` like every other attack. AutoAttack's own cumulative accuracies after
each of its attacks (summed over batches), and its warnings (its randomness and gradient
checks), are captured from its log and kept in the record (``extras``).
"""
from __future__ import annotations

import logging
import re

import torch
from torch import nn

from ..eps import Eps
from .apgd import in_standard_layout, require_pyautoattack
from .base import ATTACKS, Attack

_AFTER = re.compile(r"robust accuracy after (\S+): ([\d.]+)%")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020), the official code
    (pyautoattack): version ``standard`` (APGD-CE, APGD-T, FAB-T, Square) on a deterministic
    model, ``rand`` (APGD-CE and APGD-DLR with EOT) when ``eot_samples > 1``. Defaults: eps
    0.031, the official settings of each version (100 iterations, 5,000 Square queries)."""
    name = "autoattack"
    requires = "pyautoattack"

    def __init__(self, eps: Eps = Eps(0.031), **kw) -> None:
        super().__init__(eps, **kw)
        self.version = "rand" if self.eot_samples > 1 else "standard"
        self._correct: dict[str, float] = {}   # examples still robust after each attack
        self._warnings: list[str] = []

    def cost(self) -> tuple[float, float]:
        if self.version == "rand":   # APGD-CE and APGD-DLR, 100 iterations, EOT
            return 200.0 * self.eot_samples, 2.0
        # APGD-CE, APGD-T and FAB-T (9 targets x 100 iterations), Square (5,000 queries)
        return 1900.0, 5000.0

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return in_standard_layout(lambda x: self._run(model, x, y), x)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        require_pyautoattack()
        from pyautoattack import AutoAttack as Official

        aa = Official(model, norm="Linf", eps=float(self.eps), version=self.version,
                      seed=torch.initial_seed(), device=x.device)
        if self.version == "rand":
            aa.apgd.eot_iter = self.eot_samples  # 20 in AutoAttack's rand version
        logger, capture = logging.getLogger("auto-attack"), _Capture()
        level, propagate = logger.level, logger.propagate
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=int(x.shape[0]))
        finally:
            logger.removeHandler(capture)
            logger.setLevel(level)
            logger.propagate = propagate
        self._read(capture.messages, int(x.shape[0]))
        return x_adv.detach()

    def _read(self, messages: list[tuple[int, str]], n: int) -> None:
        for level, text in messages:
            m = _AFTER.search(text)
            if m:
                key = m.group(1).lower()
                self._correct[key] = self._correct.get(key, 0.0) + float(m.group(2)) / 100 * n
            elif level >= logging.WARNING and text not in self._warnings:
                self._warnings.append(text)

    def extras(self, n: int) -> dict:
        """AutoAttack's version, its own cumulative accuracies after each of its attacks (over
        all ``n`` examples: those it was not given were wrong on clean inputs) and warnings."""
        return {"autoattack_version": self.version,
                "autoattack_log": {k: round(v / max(n, 1), 4) for k, v in self._correct.items()},
                "autoattack_warnings": list(self._warnings)}

    def state(self) -> dict:
        return {"correct": dict(self._correct), "warnings": list(self._warnings)}

    def load_state(self, state: dict) -> None:
        self._correct = dict(state.get("correct", {}))
        self._warnings = list(state.get("warnings", []))

    def hparams(self) -> dict:
        return {"version": self.version, "norm": "Linf", "eps": self.eps,
                "eot_samples": self.eot_samples, "eot_iter": self.eot_samples if self.version == "rand" else 1,
                "package": "pyautoattack"}
