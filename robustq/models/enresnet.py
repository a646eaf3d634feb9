"""EnResNet: an ensemble of noise-injected ResNets (Wang et al., "ResNets Ensemble via the
Feynman-Kac Formalism", NeurIPS 2019), as used by Li, Wang & Xin (LOD 2021).

Each member is a pre-activation ResNet whose every residual block adds Gaussian noise to
its output, after the residual sum:

    out <- out + c * std(out) * N(0, I)

where ``std(out)`` is the scalar standard deviation of the whole batch tensor (gradients
flow through it) and ``c = 0.1`` for every block. In the reference code the noise stays on
at test time and inside every attack; here it can be switched off (``set_noise``) so a
model can also be evaluated deterministically.

``En_n`` averages the LOGITS of ``n`` independent members (each with its own BatchNorm);
the members are trained jointly through that mean.

Speed: drawing the noise is the costliest elementwise work in the network (about as many
values as activations, at every forward of every attack step). ``randn_like`` on a
channels_last or bf16 tensor is several times slower than ``normal_`` on a contiguous fp32
buffer, so the noise is drawn in the tensor's physical (memory) order in fp32 and viewed
back; the forward is one fused ``addcmul`` and the backward is written in closed form
(``GaussianBlockNoise``), which cut the noise's share of a channels_last PGD step several-fold.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from torch import nn

from .resnet import PreActResNet


def _physical_randn(x: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped and strided like ``x`` (NCHW or channels_last), fp32.

    Drawn into a contiguous buffer in the tensor's memory order: ``normal_`` there is
    several times faster than ``randn_like`` on a channels_last or bf16 tensor."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = x.shape
        return torch.empty((n, h, w, c), device=x.device, dtype=torch.float32).normal_().permute(0, 3, 1, 2)
    return torch.empty(x.shape, device=x.device, dtype=torch.float32).normal_()


class GaussianBlockNoise(torch.autograd.Function):
    """``out = x + c * std(x) * z`` with ``z ~ N(0, I)``, gradients through ``std`` included.

    Written as one Function so the forward is a single fused ``addcmul`` and the backward is
    closed form instead of autograd's five elementwise passes. With ``N = x.numel()``,
    ``s = std(x)`` (unbiased) and upstream gradient ``g``:

        dL/dx = g + c * <g, z> * (x - mean(x)) / ((N - 1) * s)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, coef: float) -> torch.Tensor:  # type: ignore[override]
        std = x.std() if x.element_size() >= 4 else x.float().std()  # reduce bf16 in fp32
        z = _physical_randn(x).to(x.dtype)
        ctx.save_for_backward(x, z, std)
        ctx.coef = coef
        return torch.addcmul(x, z, (coef * std).to(x.dtype))

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, z, std = ctx.saved_tensors
        n = x.numel()
        acc = torch.float32 if g.element_size() < 4 else g.dtype
        k = ctx.coef * (g * z).sum(dtype=acc) / ((n - 1) * std)
        k = k.to(g.dtype)
        return torch.addcmul(g, x, k).sub_(k * x.mean(dtype=acc).to(g.dtype)), None


class BlockNoise(nn.Module):
    """``x + coef * std(x) * randn``; identity when disabled or ``coef == 0``."""

    def __init__(self, coef: float = 0.1) -> None:
        super().__init__()
        self.coef = float(coef)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.coef == 0.0:
            return x
        return GaussianBlockNoise.apply(x, self.coef)

    def extra_repr(self) -> str:
        return f"coef={self.coef}, enabled={self.enabled}"


class Ensemble(nn.Module):
    """Mean of the members' logits (En_n)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x)
        for m in self.members[1:]:
            out = out + m(x)
        return out / len(self.members)


def enresnet(depth: int = 20, ensemble: int = 1, noise: float = 0.1, in_channels: int = 3,
             num_classes: int = 10) -> Ensemble:
    """En_{ensemble}ResNet{depth}. ``noise=0`` gives a plain ResNet (the paper's baselines)."""
    if ensemble < 1:
        raise ValueError(f"ensemble size must be >= 1, got {ensemble}")
    if noise < 0:
        raise ValueError(f"noise coefficient must be >= 0, got {noise}")
    noise_layer = functools.partial(BlockNoise, noise) if noise > 0 else nn.Identity
    return Ensemble([PreActResNet(depth, in_channels, num_classes, noise_layer) for _ in range(ensemble)])


def set_noise(model: nn.Module, enabled: bool) -> None:
    """Switch every block-noise layer of ``model`` on or off."""
    for m in model.modules():
        if isinstance(m, BlockNoise):
            m.enabled = enabled


@contextlib.contextmanager
def noise_state(model: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """Every block-noise layer on (or off) inside the block; each layer's own previous state
    is restored afterwards, also on error."""
    layers = [m for m in model.modules() if isinstance(m, BlockNoise)]
    before = [m.enabled for m in layers]
    try:
        for m in layers:
            m.enabled = enabled
        yield model
    finally:
        for m, on in zip(layers, before):
            m.enabled = on


def has_noise(model: nn.Module) -> bool:
    """True when some noise layer of ``model`` is active (its outputs are random)."""
    return any(isinstance(m, BlockNoise) and m.enabled and m.coef > 0 for m in model.modules())


def model_name(depth: int, ensemble: int, noise: float) -> str:
    """The paper's naming: ``En2ResNet20`` with noise, ``ResNet20`` without."""
    return f"En{ensemble}ResNet{depth}" if noise > 0 else (
        f"ResNet{depth}" if ensemble == 1 else f"{ensemble}xResNet{depth}")
