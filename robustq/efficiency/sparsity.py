"""Weight, channel and filter sparsity of the quantized convolutions, and what pruning can
remove (the paper's definitions; docs/method.md, "Sparsity").

* weight sparsity: the fraction of exactly-zero entries over all quantized conv weights;
* channel sparsity: over all quantized convs, the number of INPUT-channel slices
  ``W[:, k, :, :]`` that are entirely zero, divided by the number of all such slices,
  unweighted (a stem slice counts like any other). This is the definition that reproduces the
  reference's published numbers: a ResNet56 member has 1,971 slices, and 654 zero slices give
  the published 33.18%;
* filter sparsity (extra): OUTPUT filters ``W[o]`` that are entirely zero.

Only layers the quantization policy selected count (the paper's: all 3x3 convs).

What a zero slice lets pruning remove depends on what the conv reads (``ROLES``):

* ``block_mid`` (a block's second conv) reads a channel private to its block: the zero slice,
  the first conv's filter that produced the channel and its BatchNorm channel all go. A zero
  FILTER of the first conv kills its channel too, even under a nonzero slice: BN turns the
  zero into a constant, which ``prune.py`` folds into the second conv (see there).
* ``block_in`` / ``shortcut`` read the residual stream (through the block's BN-ReLU): the
  slice's weights go (the pruned conv reads a gathered subset of the stream), but the stream
  channel cannot: the identity shortcuts, later blocks and the head still read it, and the
  block noise's std is taken over the whole stream tensor.
* ``stem`` reads the image: the slice goes, the image keeps its channels (the model's input).
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

ROLES = {
    "stem": "reads the input image: the slice's weights are dropped (the conv reads the used "
            "image channels), the image keeps its channels",
    "block_in": "reads the residual stream: the slice's weights are dropped (the conv reads a "
                "gathered subset), but the stream channel stays, since the identity shortcuts, "
                "later blocks and the head still read it and the block noise's std spans it",
    "shortcut": "reads the residual stream: the slice's weights are dropped, the stream "
                "channel stays (as for block_in)",
    "block_mid": "reads a channel private to its block: slice, producing filter and BatchNorm "
                 "channel are all removed",
    "classifier": "reads the pooled stream: the column is dropped, the stream channel stays",
}
_BLOCK = re.compile(r"(^|.*\.)blocks\.\d+\.(conv1|conv2|shortcut)$")


def layer_role(name: str) -> str:
    """The role (a key of ``ROLES``) of a conv/linear layer, from its module name."""
    m = _BLOCK.match(name)
    if m:
        return {"conv1": "block_in", "conv2": "block_mid", "shortcut": "shortcut"}[m.group(2)]
    return "classifier" if name.split(".")[-1] == "linear" else "stem"


@torch.no_grad()
def conv_sparsity(weight: torch.Tensor) -> dict:
    """Counts for one conv weight ``(out, in, kh, kw)``."""
    zero = weight == 0
    return {
        "shape": list(weight.shape),
        "zeros": int(zero.sum()),
        "weights": weight.numel(),
        "zero_in_slices": int(zero.all(dim=(0, 2, 3)).sum()),
        "in_slices": int(weight.shape[1]),
        "zero_out_filters": int(zero.all(dim=(1, 2, 3)).sum()),
        "out_filters": int(weight.shape[0]),
    }


def _weight(m: nn.Module) -> torch.Tensor:
    return m.quantized_weight() if hasattr(m, "quantized_weight") else m.weight


@torch.no_grad()
def block_channels(model: nn.Module) -> dict[str, dict]:
    """Per residual block (by name): its private channels, dead and constant ones.

    A private channel ``j`` (conv1 output, bn2, conv2 input) is dead when conv1's filter ``j``
    or conv2's slice ``j`` is all zero; ``constant`` counts the dead ones whose filter is zero
    but whose slice is not (their BN constant is folded into conv2 by pruning)."""
    out = {}
    for name, m in model.named_modules():
        conv1, conv2 = getattr(m, "conv1", None), getattr(m, "conv2", None)
        if not (isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d)):
            continue
        w1, w2 = _weight(conv1), _weight(conv2)
        if w1.shape[0] != w2.shape[1]:  # a pruned block that keeps no private channel
            continue
        live_filter = (w1 != 0).flatten(1).any(1)
        live_slice = (w2 != 0).transpose(0, 1).flatten(1).any(1)
        out[name] = {"channels": int(w1.shape[0]),
                     "dead": int((~(live_filter & live_slice)).sum()),
                     "constant": int((~live_filter & live_slice).sum())}
    return out


def _totals(per_layer: dict) -> dict:
    keys = ("zeros", "weights", "zero_in_slices", "in_slices", "zero_out_filters", "out_filters")
    return {k: sum(v[k] for v in per_layer.values()) for k in keys}


def sparsity_report(model: nn.Module, layers: Iterable[str]) -> dict:
    """Totals and per-layer figures for the conv layers named in ``layers``.

    Besides the paper's sparsities: each layer's ``role``; ``removable_slices`` (zero slices
    whose channel goes with them) and ``gathered_slices`` (zero slices whose weights go but
    whose channel stays, with the reason in ``ROLES``); per block the dead private channels."""
    wanted = set(layers)
    per_layer = {}
    for name, m in model.named_modules():
        if name in wanted and isinstance(m, nn.Conv2d):
            v = conv_sparsity(_weight(m))
            v["role"] = layer_role(name)
            v["weight_sparsity"] = v["zeros"] / v["weights"] if v["weights"] else 0.0
            v["channel_sparsity"] = v["zero_in_slices"] / v["in_slices"] if v["in_slices"] else 0.0
            v["filter_sparsity"] = v["zero_out_filters"] / v["out_filters"] if v["out_filters"] else 0.0
            per_layer[name] = v
    tot = _totals(per_layer)
    frac = lambda a, b: tot[a] / tot[b] if tot[b] else 0.0
    blocks = block_channels(model)
    removable = sum(v["zero_in_slices"] for v in per_layer.values() if v["role"] == "block_mid")
    return {
        "weight_sparsity": frac("zeros", "weights"),
        "channel_sparsity": frac("zero_in_slices", "in_slices"),
        "filter_sparsity": frac("zero_out_filters", "out_filters"),
        "counts": tot,
        "removable_slices": removable,
        "gathered_slices": tot["zero_in_slices"] - removable,
        "removable_channels": sum(b["dead"] for b in blocks.values()),
        "constant_channels": sum(b["constant"] for b in blocks.values()),
        "private_channels": sum(b["channels"] for b in blocks.values()),
        "blocks": blocks,
        "per_layer": per_layer,
    }


def format_sparsity(report: dict, max_layers: int = 200) -> str:
    """A human table: one row per layer, then the totals and what pruning can remove."""
    lines = [f"{'layer':<34}{'role':<11}{'shape':<17}{'weight':>8}{'channel':>9}{'filter':>8}"]
    for name, v in list(report["per_layer"].items())[:max_layers]:
        shape = "x".join(str(s) for s in v["shape"])
        lines.append(f"{name:<34}{v['role']:<11}{shape:<17}{100 * v['weight_sparsity']:7.1f}%"
                     f"{v['zero_in_slices']:>4}/{v['in_slices']:<4}{v['zero_out_filters']:>3}/"
                     f"{v['out_filters']:<3}")
    c = report["counts"]
    lines.append(f"total: weight sparsity {100 * report['weight_sparsity']:.2f}%  channel sparsity "
                 f"{100 * report['channel_sparsity']:.2f}% ({c['zero_in_slices']}/{c['in_slices']} "
                 f"input slices)  filter sparsity {100 * report['filter_sparsity']:.2f}%")
    lines.append(f"removable: {report['removable_slices']} zero slices go with their channel "
                 f"(block_mid: {ROLES['block_mid']}); {report['removable_channels']} of "
                 f"{report['private_channels']} private block channels are dead "
                 f"({report['constant_channels']} of them constant, folded)")
    lines.append(f"not removable as channels: {report['gathered_slices']} zero slices read the "
                 f"residual stream or the image; their weights are dropped but the channel stays "
                 f"(block_in: {ROLES['block_in']})")
    return "\n".join(lines)
