"""Figures of sparsity: per-layer bars, and quantized channels drawn as in the paper's Fig. 1.

matplotlib is the optional extra ``plot``; it is imported only when a figure is drawn, through
its object-oriented API (``Figure``), so no global backend is switched.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from ..errors import RobustqError

ROLE_COLORS = {"stem": "#7f7f7f", "block_in": "#1f77b4", "block_mid": "#d62728",
               "shortcut": "#2ca02c", "classifier": "#9467bd"}


def _figure(**kw):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise RobustqError("drawing figures needs matplotlib, which is not installed; install "
                           "it with pip install 'robustq[plot]'") from None
    return Figure(**kw)


def plot_layer_sparsity(report: dict, path: str | Path, title: str = "") -> Path:
    """Bars per quantized layer: weight sparsity, and zero input slices (channel sparsity)
    coloured by role, with zero output filters on top."""
    layers = list(report["per_layer"].items())
    fig = _figure(figsize=(max(6.0, 0.22 * len(layers) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    xs = range(len(layers))
    ax.plot(xs, [100 * v["weight_sparsity"] for _, v in layers], "k.-", lw=1, label="weight sparsity")
    ax.bar(xs, [100 * v["channel_sparsity"] for _, v in layers],
           color=[ROLE_COLORS.get(v["role"], "#333") for _, v in layers], alpha=0.8)
    ax.plot(xs, [100 * v["filter_sparsity"] for _, v in layers], "x", color="orange",
            label="zero output filters")
    for role, color in ROLE_COLORS.items():
        if any(v["role"] == role for _, v in layers):
            ax.bar([0], [0], color=color, label=f"zero input slices: {role}")
    ax.set_xticks(list(xs), [n.replace("members.", "m").replace("blocks.", "b") for n, _ in layers],
                  rotation=90, fontsize=6)
    ax.set_ylabel("% of the layer")
    ax.set_ylim(0, 100)
    ax.set_title(title or f"channel sparsity {100 * report['channel_sparsity']:.1f}%, weight "
                          f"sparsity {100 * report['weight_sparsity']:.1f}%", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=130)
    return Path(path)


def pick_channels(w: torch.Tensor, n: int = 4) -> list[int]:
    """Up to ``n`` input channels of ``w``: zero ones first (half), then the least sparse."""
    zero = (w == 0).transpose(0, 1).flatten(1)
    frac = zero.float().mean(1)
    sparse = [int(i) for i in torch.nonzero(frac == 1).flatten()][: n // 2]
    dense = [int(i) for i in torch.argsort(frac) if int(i) not in sparse]
    return sorted(sparse + dense[: n - len(sparse)])


def _tile(codes: torch.Tensor) -> torch.Tensor:
    """One input slice ``(out, kh, kw)`` as a near-square mosaic of its ``out`` kernels,
    separated by NaN (drawn blank)."""
    out, kh, kw = codes.shape
    g = math.ceil(math.sqrt(out))
    img = torch.full((g * (kh + 1) - 1, g * (kw + 1) - 1), float("nan"))
    for o in range(out):
        r, c = divmod(o, g)
        img[r * (kh + 1): r * (kh + 1) + kh, c * (kw + 1): c * (kw + 1) + kw] = codes[o]
    return img


def plot_channels(w: torch.Tensor, path: str | Path, layer: str = "",
                  channels: Optional[list[int]] = None) -> Path:
    """Input channels ``W[:, k]`` of one quantized conv as code maps (the paper's Fig. 1):
    each slice's ``out`` 3x3 kernels tiled; white is zero, red/blue the signed levels."""
    w = w.detach().float().cpu()
    nz = w[w != 0].abs()
    codes = torch.round(w / nz.min()) if nz.numel() else w
    top = max(1.0, float(codes.abs().max()))
    channels = channels if channels is not None else pick_channels(w)
    fig = _figure(figsize=(2.6 * len(channels), 3.0), layout="constrained")
    axes = fig.subplots(1, len(channels), squeeze=False)[0]
    for ax, k in zip(axes, channels):
        im = ax.imshow(_tile(codes[:, k]).numpy(), cmap="RdBu_r", vmin=-top, vmax=top)
        zeros = float((codes[:, k] == 0).float().mean())
        ax.set_title(f"channel {k}: {100 * zeros:.0f}% zeros" + (" (sparse)" if zeros == 1 else ""),
                     fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="code (weight / smallest level)")
    fig.suptitle(f"quantized input channels of {layer}", fontsize=9)
    fig.savefig(path, dpi=130)
    return Path(path)
