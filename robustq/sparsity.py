"""Weight and channel sparsity of the quantized convolutions (REFERENCE.md section 6).

* weight sparsity: the fraction of exactly-zero entries over all quantized conv weights;
* channel sparsity: over all quantized convs, the number of INPUT-channel slices
  ``W[:, k, :, :]`` that are entirely zero, divided by the number of all such slices,
  unweighted (a stem slice counts like any other). This is the definition that reproduces the
  reference's published numbers: a ResNet56 member has 1,971 slices, and 654 zero slices give
  the published 33.18%;
* filter sparsity (extra): OUTPUT filters ``W[o]`` that are entirely zero.

Only layers the quantization policy selected count (the paper's: all 3x3 convs).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


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


def sparsity_report(model: nn.Module, layers: Iterable[str]) -> dict:
    """Totals and per-layer figures for the conv layers named in ``layers``."""
    wanted = set(layers)
    per_layer = {}
    for name, m in model.named_modules():
        if name in wanted and isinstance(m, nn.Conv2d):
            w = m.weight if not hasattr(m, "quantized_weight") else m.quantized_weight()
            per_layer[name] = conv_sparsity(w)
    tot = {k: sum(v[k] for v in per_layer.values()) for k in
           ("zeros", "weights", "zero_in_slices", "in_slices", "zero_out_filters", "out_filters")}
    frac = lambda a, b: tot[a] / tot[b] if tot[b] else 0.0
    for v in per_layer.values():
        v["weight_sparsity"] = v["zeros"] / v["weights"]
        v["channel_sparsity"] = v["zero_in_slices"] / v["in_slices"]
    return {
        "weight_sparsity": frac("zeros", "weights"),
        "channel_sparsity": frac("zero_in_slices", "in_slices"),
        "filter_sparsity": frac("zero_out_filters", "out_filters"),
        "counts": tot,
        "per_layer": per_layer,
    }
