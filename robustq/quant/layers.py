"""Quantization injected into plain PyTorch models by swapping layers.

How it works
------------
``quantize_model(model, projection, policy)`` replaces the ``nn.Conv2d`` / ``nn.Linear``
layers that ``policy`` selects by ``QuantConv2d`` / ``QuantLinear``. Each keeps its float
weight ``w`` as the trainable parameter (the optimizer, momentum and weight decay act on w)
and computes with

    u = (lam * Q(w) + w) / (lam + 1)    Binary-Relax phase (``layer.lam`` is a float)
    u = Q(w)                            Binary-Connect phase (``layer.lam is None``)

The gradient with respect to ``u`` is applied to ``w`` unchanged (straight-through, the
autograd Function ``StraightThrough``). ``u`` is cached per optimizer step: it depends only
on ``w`` and ``lam``, so the ~12 forwards of one PGD-10 training step project once.

``bake(model)`` swaps the quantized layers back to plain layers holding exactly ``Q(w)``:
that is the model we evaluate, save and report as "quantized" (never a relaxed u).

Policies (``POLICIES``): ``paper`` quantizes every 3x3 conv, the stem included, and keeps
the 1x1 shortcuts, the classifier and BatchNorm in float, as the paper does; ``all_conv``
adds the shortcuts, ``all`` also the classifier.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .projections import Projection

LayerFilter = Callable[[str, nn.Module], bool]

POLICIES: dict[str, LayerFilter] = {
    "paper": lambda name, m: isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3),
    "all_conv": lambda name, m: isinstance(m, nn.Conv2d),
    "all": lambda name, m: isinstance(m, (nn.Conv2d, nn.Linear)),
}


class StraightThrough(torch.autograd.Function):
    """Forward returns ``u``; backward hands the gradient to ``w`` unchanged."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return u.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


class _QuantMixin:
    """Shared by the quantized layers: projection, relaxation state and the u cache."""

    weight: nn.Parameter
    projection: Projection
    lam: Optional[float]

    def _init_quant(self, projection: Projection) -> None:
        self.projection = projection
        self.lam = None  # None: Binary-Connect (u = Q(w)); float: Binary-Relax weight
        self._cache: tuple = ((), None)

    @torch.no_grad()
    def quantized_weight(self) -> torch.Tensor:
        """Exactly ``Q(w)`` (fresh tensor)."""
        return self.projection(self.weight)

    def effective_weight(self) -> torch.Tensor:
        """``u`` for the current ``w`` and ``lam``; recomputed only when either changed."""
        w = self.weight
        key = (w.data_ptr(), w._version, w.device, self.lam)
        if self._cache[0] != key:
            with torch.no_grad():
                q = self.projection(w)
                u = q if self.lam is None else (self.lam * q + w) / (self.lam + 1.0)
            self._cache = (key, u)
        u = self._cache[1]
        if torch.is_grad_enabled() and w.requires_grad:
            return StraightThrough.apply(w, u)
        return u

    def quant_repr(self) -> str:
        phase = "BC" if self.lam is None else f"BR lam={self.lam:.4g}"
        return f"{self.projection.name}, {phase}"


class QuantConv2d(_QuantMixin, nn.Conv2d):
    @classmethod
    def from_float(cls, conv: nn.Conv2d, projection: Projection) -> "QuantConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                device=conv.weight.device, dtype=conv.weight.dtype)
        q._init_quant(projection)
        q.load_state_dict(conv.state_dict())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.quant_repr()}"


class QuantLinear(_QuantMixin, nn.Linear):
    @classmethod
    def from_float(cls, lin: nn.Linear, projection: Projection) -> "QuantLinear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None,
                device=lin.weight.device, dtype=lin.weight.dtype)
        q._init_quant(projection)
        q.load_state_dict(lin.state_dict())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.quant_repr()}"


QUANT_TYPES = (QuantConv2d, QuantLinear)


def _swap(model: nn.Module, make: Callable[[str, nn.Module], Optional[nn.Module]]) -> None:
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            new = make(full, child)
            if new is not None:
                setattr(module, child_name, new)


def quantize_model(model: nn.Module, projection: Projection,
                   module_filter: LayerFilter = POLICIES["paper"]) -> dict[str, str]:
    """Swap the layers ``module_filter`` selects for quantized ones, in place.

    Returns the per-layer bit map ``{layer name: projection name or 'float'}``."""
    def make(name: str, child: nn.Module) -> Optional[nn.Module]:
        if isinstance(child, QUANT_TYPES) or not module_filter(name, child):
            return None
        if isinstance(child, nn.Conv2d):
            return QuantConv2d.from_float(child, projection)
        if isinstance(child, nn.Linear):
            return QuantLinear.from_float(child, projection)
        return None

    _swap(model, make)
    return bit_map(model)


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_TYPES)]


def set_relaxation(model: nn.Module, lam: Optional[float]) -> None:
    """Set the Binary-Relax weight of every quantized layer (None = Binary-Connect)."""
    for _, m in quant_layers(model):
        m.lam = lam


def bit_map(model: nn.Module) -> dict[str, str]:
    """``{layer: quantizer}`` for every conv / linear layer; 'float' where not quantized."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QUANT_TYPES):
            out[name] = m.projection.name
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            out[name] = "float"
    return out


@torch.no_grad()
def bake(model: nn.Module) -> nn.Module:
    """Replace every quantized layer by a plain layer holding exactly ``Q(w)``, in place."""
    def make(name: str, child: nn.Module) -> Optional[nn.Module]:
        if not isinstance(child, QUANT_TYPES):
            return None
        if isinstance(child, QuantConv2d):
            plain: nn.Module = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                         child.stride, child.padding, child.dilation, child.groups,
                                         child.bias is not None, child.padding_mode)
        else:
            plain = nn.Linear(child.in_features, child.out_features, child.bias is not None)
        plain = plain.to(device=child.weight.device, dtype=child.weight.dtype)
        plain.weight.copy_(child.quantized_weight())
        if child.bias is not None:
            plain.bias.copy_(child.bias)
        return plain

    _swap(model, make)
    return model
