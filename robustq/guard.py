"""Catastrophic-overfitting guard for single-step adversarial training.

Single-step methods (FGSM-based) can lose all multi-step robustness within an epoch: the
network learns to make the one-step attack useless (its loss surface curves right next to the
data) while PGD still breaks it (Wong et al. 2020, Sec. 4; de Jorge et al. 2022). After each
epoch the engine validates on held-out training images with FGSM and with PGD; an epoch is
flagged when either

* its validation PGD accuracy fell more than ``drop`` below the best earlier epoch's, or
* its validation FGSM accuracy is more than ``gap`` above its validation PGD accuracy
  (after overfitting FGSM accuracy climbs toward clean accuracy while PGD's nears 0; on a
  healthy robust model the two are a few points apart).

A flagged epoch is logged (``metrics.csv`` column ``co``, a line in the log), never selected,
and stated in ``results.json`` (``training.catastrophic_overfitting``); with
``train.co_guard: stop`` training ends there, keeping the last good model.
"""
from __future__ import annotations

import math
from typing import Optional


def overfitting(history: list[dict], drop: float, gap: float) -> Optional[str]:
    """Why the LAST epoch of ``history`` (rows with ``val_robust_acc``, ``val_fgsm_acc``) is
    catastrophic overfitting, or None. Earlier rows are the epochs before it."""
    if not history:
        return None
    last = history[-1]
    pgd, fgsm = float(last["val_robust_acc"]), float(last.get("val_fgsm_acc", math.nan))
    if math.isnan(pgd):
        return None
    best = max((float(r["val_robust_acc"]) for r in history[:-1]
                if not math.isnan(float(r["val_robust_acc"]))), default=None)
    if best is not None and pgd < best - drop:
        return f"validation PGD accuracy fell to {pgd:.3f} from {best:.3f}"
    if not math.isnan(fgsm) and fgsm - pgd > gap:
        return f"validation FGSM accuracy {fgsm:.3f} is far above PGD accuracy {pgd:.3f}"
    return None
