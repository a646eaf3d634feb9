"""From a config to a model: architecture, then quantization injected by policy."""
from __future__ import annotations

from dataclasses import dataclass, asdict

from torch import nn

from .models import enresnet, model_name
from .quant import POLICIES, get_projection, quantize_model
from .quant.projections import canonical_name


@dataclass(frozen=True)
class Arch:
    """Everything needed to rebuild a network (stored in every model file)."""
    depth: int
    ensemble: int
    noise: float
    in_channels: int
    num_classes: int
    input_size: int

    @property
    def name(self) -> str:
        return model_name(self.depth, self.ensemble, self.noise)

    def to_dict(self) -> dict:
        return asdict(self)


def build_network(arch: Arch) -> nn.Module:
    """The float network (plain nn.Conv2d everywhere)."""
    return enresnet(arch.depth, arch.ensemble, arch.noise, arch.in_channels, arch.num_classes)


def build_model(arch: Arch, scheme: str = "float", policy: str = "paper") -> tuple[nn.Module, dict]:
    """The network with the layers ``policy`` selects quantized by ``scheme``.

    Returns ``(model, bit_map)``; ``bit_map`` names each conv/linear layer's quantizer."""
    model = build_network(arch)
    scheme = canonical_name(scheme)
    if scheme == "float":
        from .quant import bit_map
        return model, bit_map(model)
    return model, quantize_model(model, get_projection(scheme), POLICIES[policy])
