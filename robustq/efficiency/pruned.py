"""The pruned network: a smaller dense EnResNet rebuilt from a channel plan (``spec``).

This module is all ``robustq.load`` needs besides ``models`` (no training, quantization or
attack code). ``prune.py`` derives the plan and the weights from a trained model.

The plan keeps the residual stream at full width (16/32/64 channels) and prunes around it:

* the stem reads only the image channels its live slices use, computes only its nonzero
  filters and writes them into a zero stream (``index_copy``);
* a block gathers the stream channels its first conv and projection shortcut read
  (``read``), applies BN-ReLU to those only, runs the first conv into the live private
  channels (``mid``) only, and adds the second conv's nonzero filters into the shortcut with
  ``index_add`` (the residual sum, no extra pass);
* private channels whose first-conv filter is zero are constant after BN-ReLU in eval mode;
  their contribution to the second conv is the fixed map ``conv2d(ones, K)`` with
  ``K[o] = sum_j relu(bn2(0))_j W2[o, j]`` (``const``), exact at the zero-padded borders;
* the head gathers the pooled channels the classifier reads.

Keeping the stream whole keeps the block noise exactly as in the dense model (the same tensor
shape, the same std and, for a fixed seed, the same draws). The pruned network is for
inference: BatchNorm must stay in eval mode (the folded constants use its running stats).

``spec`` is JSON: ``{"widths": [...], "members": [member, ...]}`` with, per member,
``{"stem": {"in", "out"}, "blocks": [{"read", "conv1_in", "mid", "const", "conv2_out",
"shortcut": null | {"in", "out"}}], "head": {"read"}}``. Each index list is sorted and
unique; ``null`` means "all channels". ``conv1_in`` / ``shortcut.in`` index into ``read``.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..models.enresnet import BlockNoise, Ensemble

Index = Optional[list]


def check_index(idx: Index, n: int, what: str) -> Index:
    """``idx`` if it is null or a sorted list of distinct ints in ``[0, n)``; else ValueError."""
    if idx is None:
        return None
    if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
        raise ValueError(f"{what} must be a list of channel numbers")
    if any(b <= a for a, b in zip(idx, idx[1:])) or (idx and (idx[0] < 0 or idx[-1] >= n)):
        raise ValueError(f"{what} must be increasing channel numbers below {n}")
    return idx


def _count(idx: Index, n: int) -> int:
    return n if idx is None else len(idx)


def _buffer(module: nn.Module, name: str, idx: Index) -> None:
    module.register_buffer(name, None if idx is None else torch.tensor(idx, dtype=torch.long),
                           persistent=False)


def _scatter(y: torch.Tensor, idx: Optional[torch.Tensor], channels: int) -> torch.Tensor:
    if idx is None:
        return y
    out = y.new_zeros(y.shape[0], channels, *y.shape[2:])
    return out.index_copy(1, idx, y)


class PrunedConv(nn.Conv2d):
    """A bias-free conv over the gathered inputs ``in_idx`` (None: all), producing only the
    kept outputs, plus the folded constant map ``conv2d(ones, const)`` when ``const``."""

    def __init__(self, in_idx: Index, n_in: int, n_out: int, kernel: int, stride: int,
                 padding: int, const: bool = False) -> None:
        super().__init__(n_in, n_out, kernel, stride, padding, bias=False)
        _buffer(self, "in_idx", in_idx)
        self.register_buffer("const", torch.zeros(n_out, 1, kernel, kernel) if const else None)

    def reset_parameters(self) -> None:  # weights are always loaded (possibly 0 inputs)
        pass

    def constant_map(self, x: torch.Tensor) -> torch.Tensor:
        ones = x.new_ones(1, 1, *x.shape[2:])
        return F.conv2d(ones, self.const, None, self.stride, self.padding)  # (1, out, H', W')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_idx is not None:
            x = x.index_select(1, self.in_idx)
        if self.in_channels == 0:  # only constants reach this conv
            y = self.constant_map(x)
            return y.expand(x.shape[0], *y.shape[1:])
        y = self._conv_forward(x, self.weight, None)
        return y if self.const is None else y + self.constant_map(x)


class PrunedBlock(nn.Module):
    """A pre-activation block over a full-width stream with pruned private channels."""

    def __init__(self, in_planes: int, planes: int, stride: int, spec: dict, noise: nn.Module) -> None:
        super().__init__()
        self.planes, self.stride = planes, stride
        read = check_index(spec["read"], in_planes, "read")
        n_read = _count(read, in_planes)
        _buffer(self, "read_idx", read)
        self.bn1 = nn.BatchNorm2d(n_read) if n_read else None
        mid = check_index(spec["mid"], planes, "mid")
        c1_in = check_index(spec["conv1_in"], n_read, "conv1_in")
        self.conv1 = PrunedConv(c1_in, _count(c1_in, n_read), len(mid), 3, stride, 1) if mid else None
        self.bn2 = nn.BatchNorm2d(len(mid)) if mid else None
        out = check_index(spec["conv2_out"], planes, "conv2_out")
        self.conv2 = (PrunedConv(None, len(mid), _count(out, planes), 3, 1, 1, bool(spec["const"]))
                      if _count(out, planes) else None)
        _buffer(self, "out_idx", out)
        sc = spec["shortcut"]
        self.projection = sc is not None
        self.shortcut, sc_out = None, None
        if sc is not None:
            sc_in = check_index(sc["in"], n_read, "shortcut.in")
            sc_out = check_index(sc["out"], planes, "shortcut.out")
            if _count(sc_out, planes):
                self.shortcut = PrunedConv(sc_in, _count(sc_in, n_read), _count(sc_out, planes), 1, stride, 0)
        _buffer(self, "sc_out_idx", sc_out)
        self.noise = noise

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        r = s if self.read_idx is None else s.index_select(1, self.read_idx)
        a = torch.relu(self.bn1(r)) if self.bn1 is not None else r     # r: 0 channels otherwise
        if not self.projection:
            sc = s
        elif self.shortcut is None:
            sc = s.new_zeros(s.shape[0], self.planes, *s[:, :1, ::self.stride, ::self.stride].shape[2:])
        else:
            sc = _scatter(self.shortcut(a), self.sc_out_idx, self.planes)
        if self.conv2 is None:
            return self.noise(sc)
        h = (torch.relu(self.bn2(self.conv1(a))) if self.conv1 is not None
             else a[:, :0, ::self.stride, ::self.stride])             # no live private channel
        y = self.conv2(h)
        return self.noise(sc + y if self.out_idx is None else sc.index_add(1, self.out_idx, y))


class PrunedResNet(nn.Module):
    """One pruned member: stem, pruned blocks over the full-width stream, head."""

    def __init__(self, spec: dict, depth: int, in_channels: int, num_classes: int,
                 noise: float, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem_in = check_index(spec["stem"]["in"], in_channels, "stem.in")
        stem_out = check_index(spec["stem"]["out"], widths[0], "stem.out")
        self.width = widths[0]
        self.conv1 = (PrunedConv(stem_in, _count(stem_in, in_channels), _count(stem_out, widths[0]), 3, 1, 1)
                      if _count(stem_out, widths[0]) else None)
        _buffer(self, "stem_out_idx", stem_out)
        if len(spec["blocks"]) != 3 * n:
            raise ValueError(f"a depth-{depth} member has {3 * n} blocks, the plan lists {len(spec['blocks'])}")
        make_noise = functools.partial(BlockNoise, noise) if noise > 0 else nn.Identity
        blocks, in_planes, it = [], widths[0], iter(spec["blocks"])
        for stage, planes in enumerate(widths):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(PrunedBlock(in_planes, planes, stride, next(it), make_noise()))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        read = check_index(spec["head"]["read"], in_planes, "head.read")
        _buffer(self, "head_idx", read)
        self.bn = nn.BatchNorm2d(_count(read, in_planes)) if _count(read, in_planes) else None
        self.linear = nn.Linear(_count(read, in_planes), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is None:
            s = x.new_zeros(x.shape[0], self.width, *x.shape[2:])
        else:
            s = _scatter(self.conv1(x), self.stem_out_idx, self.width)
        s = self.blocks(s)                                          # (B, 64, H/4, W/4)
        r = s if self.head_idx is None else s.index_select(1, self.head_idx)
        f = torch.relu(self.bn(r)).mean(dim=(2, 3)) if self.bn is not None else r.sum(dim=(2, 3))
        return self.linear(f)


def build_pruned(arch: dict, spec: dict) -> Ensemble:
    """The pruned ensemble for ``arch`` (Arch fields) and ``spec``; weights uninitialised."""
    members = spec["members"]
    if len(members) != arch["ensemble"]:
        raise ValueError(f"the plan lists {len(members)} members, the architecture {arch['ensemble']}")
    widths = tuple(spec.get("widths", (16, 32, 64)))
    if len(widths) != 3 or not all(isinstance(w, int) and 1 <= w <= 4096 for w in widths):
        raise ValueError(f"widths must be three channel counts, got {widths!r:.60}")
    return Ensemble([PrunedResNet(m, arch["depth"], arch["in_channels"], arch["num_classes"],
                                  arch["noise"], widths) for m in members])
