"""Sparsity counts on constructed weights (REFERENCE.md section 6)."""
from __future__ import annotations

import torch

from robustq.build import Arch, build_model
from robustq.quant import quant_layers
from robustq.efficiency.sparsity import conv_sparsity, sparsity_report


def test_counts_on_a_constructed_weight():
    w = torch.randn(4, 3, 3, 3)
    w[:, 1] = 0          # one whole input slice
    w[2] = 0             # one whole output filter
    w[0, 0, 0, 0] = 0    # a stray zero
    c = conv_sparsity(w)
    assert c["zero_in_slices"] == 1 and c["in_slices"] == 3
    assert c["zero_out_filters"] == 1 and c["out_filters"] == 4
    assert c["zeros"] == 4 * 9 + 2 * 9 + 1 and c["weights"] == 108


def _zero_slices(model, layers, how_many):
    """Zero the first ``how_many`` input slices, walking the quantized convs in order."""
    left = how_many
    for name in layers:
        w = model.get_submodule(name).weight
        k = min(left, w.shape[1])
        with torch.no_grad():
            w[:, :k] = 0
        left -= k
    assert left == 0


def test_resnet56_member_has_1971_slices_and_654_zero_ones_give_33_18_percent():
    model, bits = build_model(Arch(56, 1, 0.1, 3, 10, 32), "float")
    layers = [n for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(layers) == 1 + 2 * 27
    _zero_slices(model, layers, 654)
    rep = sparsity_report(model, layers)
    assert rep["counts"]["in_slices"] == 1971
    assert rep["counts"]["zero_in_slices"] == 654
    assert round(100 * rep["channel_sparsity"], 2) == 33.18


def test_report_reads_quantized_weights_of_quantized_layers():
    model, bits = build_model(Arch(8, 1, 0.1, 3, 10, 8), "4bit")
    layers = [n for n, _ in quant_layers(model)]
    rep = sparsity_report(model, layers)
    expected = sum(int((m.quantized_weight() == 0).sum()) for _, m in quant_layers(model))
    assert rep["counts"]["zeros"] == expected > 0
    assert set(rep["per_layer"]) == set(layers)
    assert 0 < rep["weight_sparsity"] < 1
