"""Weight projections onto low-bit sets: ``Q(w) = scale * codes`` with integer codes.

How it works
------------
Every projection maps a float weight tensor ``w`` to one per-tensor scale ``s > 0`` and a
tensor of small signed integer codes, so that ``Q(w) = s * codes``. The formulas are those of
the paper's reference code (docs/method.md, "Quantization"):

* ``binary`` (BWN / XNOR-Net): ``s = mean|w|``, ``codes = sign(w)`` (sign(0) = 0).
* ``ternary`` ("tnn"): threshold ``d = 0.7 mean|w|``, mask ``m = |w| >= d``, codes
  ``m * sign(w)`` and ``s = sum(|w| m) / N`` with N the number of ALL entries (the reference
  behaviour). ``ternary_twn`` uses TWN's ``s = sum(|w| m) / sum(m)`` (the least-squares
  scale for that mask). Note the reference scale makes ``Q(Q(w)) != Q(w)``.
* ``4bit``: 15 symmetric levels ``{-7..7} * s``; ``d = max|w| / 15``; level
  ``q = clip(round_half_down(|w| / 2d), 0, 7)`` (so ``|w| <= d`` gives 0 and the thresholds
  sit at odd multiples of d); least-squares scale ``s = sum(|w| q) / sum(q^2)``.
* ``{m}bit`` for m in 2..8 generalises the 4-bit rule: ``L = 2^(m-1) - 1`` levels per sign,
  ``d = max|w| / (2L + 1)``, ``q = clip(round_half_down(|w| / 2d), 0, L)``, least-squares
  scale. ``4bit`` is exactly ``mbit(4)``. The paper writes the m-bit set as
  ``R+ x {0, ±1, ..., ±2^(m-1)}``; that has ``2^m + 1`` values, one more than m bits can
  hold, so we use the symmetric ``2^m - 1`` levels that the reference's 4-bit rule uses.
  ``2bit`` is therefore a ternary set with threshold ``max|w|/3`` and a least-squares scale,
  unlike ``ternary`` (threshold ``0.7 mean|w|``, reference scale).

All projections run in fp32 without autograd; gradients reach ``w`` by straight-through
estimation in ``layers.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..registry import Registry


@dataclass(frozen=True)
class Projection:
    """A per-tensor projection onto ``{s * c : c in codes}``; ``bits`` is the storage width."""

    name: str
    bits: int
    levels: int  # largest |code|

    def codes_and_scale(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        codes, scale = self.codes_and_scale(w)
        return (scale * codes).to(w.dtype)


def _round_half_down(v: torch.Tensor) -> torch.Tensor:
    return torch.ceil(v - 0.5)


@dataclass(frozen=True)
class Binary(Projection):
    @torch.no_grad()
    def codes_and_scale(self, w):
        w = w.float()
        return torch.sign(w), w.abs().mean()


@dataclass(frozen=True)
class Ternary(Projection):
    twn_scale: bool = False

    @torch.no_grad()
    def codes_and_scale(self, w):
        w = w.float()
        a = w.abs()
        mask = (a >= 0.7 * a.mean()).float()
        denom = mask.sum().clamp_min(1.0) if self.twn_scale else torch.tensor(float(w.numel()))
        return mask * torch.sign(w), (a * mask).sum() / denom


@dataclass(frozen=True)
class MBit(Projection):
    @torch.no_grad()
    def codes_and_scale(self, w):
        w = w.float()
        a = w.abs()
        # clamp keeps an all-zero tensor finite (all codes 0) without a host sync
        d = (a.max() / (2 * self.levels + 1)).clamp_min(torch.finfo(torch.float32).tiny)
        q = _round_half_down(a / (2 * d)).clamp_(0, self.levels)
        return q * torch.sign(w), (a * q).sum() / (q * q).sum().clamp_min(1.0)


PROJECTIONS: Registry[Projection] = Registry("quantizer")
PROJECTIONS.register("binary")(Binary("binary", bits=1, levels=1))
PROJECTIONS.register("ternary")(Ternary("ternary", bits=2, levels=1))
PROJECTIONS.register("ternary_twn")(Ternary("ternary_twn", bits=2, levels=1, twn_scale=True))
for _m in range(2, 9):
    PROJECTIONS.register(f"{_m}bit")(MBit(f"{_m}bit", bits=_m, levels=2 ** (_m - 1) - 1))

_ALIASES = {"1bit": "binary", "bwn": "binary", "tnn": "ternary", "twn": "ternary_twn"}


def canonical_name(name: str) -> str:
    """Normalise user spellings (``4-bit``, ``tnn``, ``1bit``) to a registered name."""
    key = re.sub(r"[\s_-]+", "", str(name).lower()).replace("ternarytwn", "ternary_twn")
    return _ALIASES.get(key, key)


def get_projection(name: str) -> Projection:
    """The projection called ``name`` (see ``PROJECTIONS.names()``)."""
    return PROJECTIONS.get(canonical_name(name))
