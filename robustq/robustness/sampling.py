"""Randomized models, evaluated honestly.

A model with block noise switched on computes ``f(x; z)`` with a fresh ``z`` on every forward
pass, so one forward pass is one sample of a random variable. robustq

* detects randomness by itself: the same inputs are passed ``tries`` times and the model
  counts as randomized when the logits differ (AutoAttack's ``check_randomized``);
* attacks it with EOT: every attack gradient is the mean of ``eot_samples`` per-draw
  gradients (Athalye, Carlini & Wagner, ICML 2018), an unbiased estimate of the gradient of
  ``E_z[L(f(x; z))]`` whose variance falls as 1 / eot_samples;
* scores it over ``draws`` forward passes: for each example and draw ``k`` the prediction is
  correct or not, giving a (draws x n) boolean matrix ``C``. The accuracy is ``mean(C)``
  and its spread the standard deviation over draws of the per-draw accuracies
  ``mean_i C[k, i]`` (how much one evaluation with a single draw could have varied);
* refuses an evaluation with a single sample (``eot_samples == 1`` or ``draws == 1``) of a
  randomized model unless the caller asks for it: that is the weak protocol that let noisy
  defenses report inflated robustness.

A deterministic model needs none of this: one sample is exact, so eot_samples = draws = 1.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn

from ..errors import RobustqError
from ..models import noise_state


class SingleSampleError(RobustqError):
    """A randomized model was to be evaluated with one noise sample."""


@torch.no_grad()
def is_randomized(model: nn.Module, x: torch.Tensor, tries: int = 3, rtol: float = 1e-5) -> bool:
    """True when ``tries`` forward passes of the same ``x`` give different logits."""
    first = model(x).float()
    scale = float(first.abs().max().clamp_min(1e-12))
    for _ in range(tries - 1):
        if float((model(x).float() - first).abs().max()) > rtol * scale:
            return True
    return False


@torch.no_grad()
def draw_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1,
                 batch_size: int = 250) -> torch.Tensor:
    """Correctness ``(draws, n)`` bool on the CPU: one forward pass of every batch per draw."""
    out = torch.zeros(draws, x.shape[0], dtype=torch.bool)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        for k in range(draws):
            out[k, i:i + batch_size] = (model(xb).argmax(1) == yb).cpu()
    return out


def summarize(correct: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, spread)`` of a ``(draws, n)`` correctness matrix (spread 0 for one draw)."""
    per_draw = correct.double().mean(1)
    spread = float(per_draw.std()) if per_draw.numel() > 1 else 0.0
    return float(per_draw.mean()), spread


def sampling_plan(randomized: bool, eot_samples: Optional[int], draws: Optional[int], *,
                  default_eot: int, default_draws: int, allow_single_sample: bool = False
                  ) -> tuple[int, int]:
    """``(eot_samples, draws)`` to use; raises ``SingleSampleError`` for a one-sample
    evaluation of a randomized model unless ``allow_single_sample``."""
    if not randomized:
        return 1, 1
    eot = default_eot if eot_samples is None else int(eot_samples)
    k = default_draws if draws is None else int(draws)
    if eot < 1 or k < 1:
        raise SingleSampleError(f"EOT samples and draws must be >= 1, got {eot} and {k}")
    if (eot == 1 or k == 1) and not allow_single_sample:
        raise SingleSampleError(
            "the model is randomized (its outputs differ between forward passes), so one noise "
            "sample per gradient or per prediction overstates robustness; use --eot N and "
            "--draws K with N, K > 1, or pass --allow-single-sample to accept a one-sample run")
    return eot, k


def noise_disabled(model: nn.Module):
    """Every block-noise layer off for the block, each one's state restored afterwards."""
    return noise_state(model, False)


@contextmanager
def inputs_only(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters stop requiring gradients for the block (attacks differentiate w.r.t. the
    input only, and autograd then keeps no activations for weight gradients)."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
