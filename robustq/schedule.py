"""Learning-rate schedules, defined per optimizer step for any run length.

* ``multistep`` (the paper's): ``lr * gamma^k`` in epoch ``e``, where ``k`` counts the
  milestones ``round(f * epochs) <= e`` (the paper's 80/120/160 of 200 are 0.4/0.6/0.8);
  constant within an epoch.
* ``onecycle`` (triangular, the schedule of fast adversarial training: Wong et al. 2020,
  de Jorge et al. 2022): rises linearly from 0 to ``lr`` at the fraction ``peak`` of the run
  (0.4: their ``epochs * 2 // 5``) and falls linearly back to 0 at the last step; evaluated
  after each step, at ``t = (step + 1) / steps_per_epoch`` epochs, so the first step already
  has a small positive rate and the last one is 0.

Both are a ``LambdaLR`` stepped once per optimizer step, so its state (the step count) makes
resume exact, mid-schedule included.
"""
from __future__ import annotations

import torch


def lr_factor(step: int, steps_per_epoch: int, epochs: int, schedule: str,
              milestones: list[float], gamma: float, peak: float) -> float:
    """The multiplier of the base learning rate for 0-based optimizer ``step``."""
    if schedule == "multistep":
        epoch = step // steps_per_epoch
        drops = sum(epoch >= max(1, round(f * epochs)) for f in milestones)
        return gamma ** drops
    if schedule == "onecycle":
        t, top = (step + 1) / steps_per_epoch, peak * epochs
        if t <= top:
            return t / top
        return max(0.0, (epochs - t) / (epochs - top))
    raise ValueError(f"unknown schedule {schedule!r}")


def make_scheduler(opt: torch.optim.Optimizer, train_cfg, steps_per_epoch: int):
    """A ``LambdaLR`` for ``train_cfg`` (``TrainConfig``), stepped after every optimizer step."""
    t = train_cfg
    spe = max(1, int(steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, spe, t.epochs, t.schedule, t.milestones, t.lr_gamma, t.peak))
