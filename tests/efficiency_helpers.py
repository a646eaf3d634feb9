"""Tiny models with randomly dead channels, for the pruning and export tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustq.build import Arch, build_model
from robustq.checkpoint import FORMAT_VERSION, MODEL_FORMAT, save
from robustq.quant import bake


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a shared, oversubscribed CPU two spinning
    OpenMP threads made a 12x12 ResNet20 forward 100x slower (1.8 s vs 0.02 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@torch.no_grad()
def randomize_bn(model: nn.Module, g: torch.Generator) -> None:
    """Eval-mode BN with non-trivial statistics, so a zero channel becomes a nonzero constant."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.rand(n, generator=g) * 1.5 - 0.5)


@torch.no_grad()
def zero_randomly(model: nn.Module, p: float, g: torch.Generator, filters: bool = True) -> None:
    """Zero each input slice (and, with ``filters``, each output filter) of every conv with
    probability ``p``: stem, block, shortcut and stream-writing convs alike."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight
            w[:, torch.rand(w.shape[1], generator=g) < p] = 0
            if filters:
                w[torch.rand(w.shape[0], generator=g) < p] = 0


def sparse_model(depth: int = 8, ensemble: int = 1, scheme: str = "4bit", p: float = 0.3,
                 seed: int = 0, in_channels: int = 3, size: int = 12, policy: str = "paper",
                 noise: float = 0.1, filters: bool = True) -> tuple[nn.Module, dict]:
    """A baked (exactly Q(w)) model in eval mode with random dead channels, and its meta."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    arch = Arch(depth, ensemble, noise, in_channels, 10, size)
    model, bit_map = build_model(arch, scheme, policy)
    model = bake(model).eval()
    zero_randomly(model, p, g, filters)
    randomize_bn(model, g)
    meta = {"arch": arch.to_dict(), "quant": scheme, "method": "br", "policy": policy,
            "bit_map": bit_map, "dataset": "fashion-mnist-10k", "epoch": 1, "val": {}}
    return model, meta


def save_model_file(model: nn.Module, meta: dict, path: Path) -> Path:
    """A ``model.pt`` as the engine writes it."""
    save({"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "version": "test",
          "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()}, "meta": meta}, path)
    return path
