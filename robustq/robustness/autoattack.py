"""AutoAttack (Croce & Hein, ICML 2020) through the ``pyautoattack`` package, run the way
RobustBench runs it: ``AutoAttack(model, norm="Linf", eps=eps, version=...)`` then
``run_standard_evaluation(x, y, bs)`` on the whole evaluation set.

* a deterministic model gets version ``standard``: APGD-CE, APGD-T (9 target classes), FAB-T
  and Square (5,000 queries), each on the points the previous ones did not break;
* a randomized model gets version ``rand``: APGD-CE and APGD-DLR with EOT over 20 forward
  passes (``eot_iter``), one restart each.

AutoAttack decides "broken" from one forward pass; robustq then scores the returned images
over its own ``draws`` like every other attack. AutoAttack's own cumulative accuracies after
each of its attacks, and its warnings (its randomness and gradient checks), are captured
from its log and kept in the record.
"""
from __future__ import annotations

import logging
import re

import torch
from torch import nn

from ..attacks.apgd import require_pyautoattack
from ..attacks.base import parse_eps

_AFTER = re.compile(r"robust accuracy after (\S+): ([\d.]+)%")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


class AutoAttackRun:
    """Callable like an attack, on the whole set at once (``whole_set``)."""
    whole_set = True

    def __init__(self, eps, eot_samples: int = 1, batch_size: int = 250) -> None:
        self.eps_spec, self.eps = eps, parse_eps(eps)
        self.eot_samples, self.batch_size = int(eot_samples), int(batch_size)
        self.version = "rand" if self.eot_samples > 1 else "standard"
        self.log: dict[str, float] = {}
        self.warnings: list[str] = []
        self.n_given = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        require_pyautoattack()
        from pyautoattack import AutoAttack

        self.n_given = int(x.shape[0])
        was_training = model.training
        model.eval()
        aa = AutoAttack(model, norm="Linf", eps=self.eps, version=self.version,
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
                x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=self.batch_size)
        finally:
            logger.removeHandler(capture)
            logger.setLevel(level)
            logger.propagate = propagate
            model.train(was_training)
        self._read(capture.messages)
        return x_adv.detach()

    def _read(self, messages: list[tuple[int, str]]) -> None:
        for level, text in messages:
            m = _AFTER.search(text)
            if m:
                self.log[m.group(1).lower()] = float(m.group(2)) / 100
            elif level >= logging.WARNING:
                self.warnings.append(text)

    def __repr__(self) -> str:
        return (f"AutoAttack(version={self.version!r}, norm='Linf', eps={self.eps_spec!r}, "
                f"eot_iter={self.eot_samples if self.version == 'rand' else 1}, package=pyautoattack)")
