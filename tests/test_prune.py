"""Physical pruning computes the same function (eval mode) and removes what it claims."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from robustq.build import Arch, build_network
from robustq.models import set_noise
from robustq.efficiency.prune import count_flops, count_params, prune, prune_report
from robustq.efficiency.pruned import PrunedConv
from robustq.efficiency.sparsity import layer_role, sparsity_report

from .efficiency_helpers import one_thread, randomize_bn, sparse_model  # noqa: F401 (fixture)


def _outputs(model: nn.Module, x: torch.Tensor, noise: bool, seed: int = 1) -> torch.Tensor:
    set_noise(model, noise)
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(x)


def _check_same(dense: nn.Module, pruned: nn.Module, x: torch.Tensor) -> None:
    torch.testing.assert_close(_outputs(pruned, x, False), _outputs(dense, x, False), atol=1e-5, rtol=1e-5)
    # the stream keeps its shape, so with the same seed even the noisy outputs agree
    torch.testing.assert_close(_outputs(pruned, x, True), _outputs(dense, x, True), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depth,ensemble", list(itertools.product([8, 14, 20], [1, 2])))
@pytest.mark.parametrize("p", [0.3, 0.8])
def test_pruned_model_computes_the_same_function(depth, ensemble, p):
    dense, meta = sparse_model(depth, ensemble, p=p, seed=depth + ensemble)
    pruned, spec = prune(dense, meta["arch"])
    _check_same(dense, pruned, torch.rand(3, 3, 12, 12))
    assert count_params(pruned) < count_params(dense)


@pytest.mark.parametrize("scheme,policy", [("binary", "paper"), ("ternary", "all_conv"), ("3bit", "all")])
def test_stem_shortcut_and_classifier_slices_are_pruned_exactly(scheme, policy):
    """Zero slices that read the image, the stream (block conv1, shortcut) and the pooled
    stream (classifier): quantized shortcuts/classifier under the wider policies."""
    dense, meta = sparse_model(14, 2, scheme, p=0.4, seed=3, policy=policy)
    with torch.no_grad():
        for m in dense.members:
            m.conv1.weight[:, 1] = 0                      # an image channel nobody reads
            m.blocks[2].shortcut.weight[:, 3] = 0         # a stream channel the shortcut skips
            m.blocks[2].shortcut.weight[5] = 0            # a shortcut filter writing nothing
            m.linear.weight[:, 7] = 0                     # a pooled channel the classifier skips
    pruned, spec = prune(dense, meta["arch"])
    assert all(1 not in s["stem"]["in"] for s in spec["members"])
    assert spec["members"][0]["head"]["read"] is not None
    _check_same(dense, pruned, torch.rand(4, 3, 12, 12))


def test_whole_blocks_and_whole_convs_dead():
    """Empty reads, no live private channel, a branch made only of BN constants, a dead stem."""
    dense, meta = sparse_model(14, 1, "ternary", p=0.0, seed=5, size=9)
    with torch.no_grad():
        m = dense.members[0]
        m.blocks[0].conv1.weight.zero_()             # all private channels constant
        m.blocks[1].conv2.weight.zero_()             # branch writes nothing
        m.blocks[2].conv1.weight[:, :, :, :] = 0     # stage-2 entry: conv1 reads nothing ...
        m.blocks[2].shortcut.weight.zero_()          # ... nor does the shortcut
        m.blocks[3].conv1.weight[::2] = 0
    pruned, spec = prune(dense, meta["arch"])
    plan = spec["members"][0]["blocks"]
    assert plan[0]["mid"] == [] and plan[0]["const"] and plan[2]["read"] == []
    _check_same(dense, pruned, torch.rand(2, 3, 9, 9))
    with torch.no_grad():
        m.conv1.weight.zero_()
    pruned, _ = prune(dense, meta["arch"])
    _check_same(dense, pruned, torch.rand(2, 3, 9, 9))


def test_bn_constant_is_folded_with_its_borders():
    """A zero filter before BN is a constant channel; through the zero-padded 3x3 conv its
    contribution differs at the borders, so a scalar bias would be wrong. Ours is exact."""
    dense, meta = sparse_model(8, 1, "4bit", p=0.0, seed=7, size=10)
    block = dense.members[0].blocks[0]
    with torch.no_grad():
        block.conv1.weight[:4] = 0
    pruned, spec = prune(dense, meta["arch"])
    conv2 = pruned.members[0].blocks[0].conv2
    assert isinstance(conv2, PrunedConv) and conv2.const is not None
    cmap = conv2.constant_map(torch.zeros(1, 1, 10, 10))[0]
    assert not torch.allclose(cmap[:, 0, 0], cmap[:, 5, 5])          # corner != interior
    torch.testing.assert_close(cmap[:, 3:7, 3:7], cmap[:, 5:6, 5:6].expand(-1, 4, 4))
    _check_same(dense, pruned, torch.rand(3, 3, 10, 10))
    _check_same(dense, pruned, torch.rand(3, 3, 16, 16))            # any input size


def test_real_images():
    """The bundled Fashion-MNIST test images, 1 input channel."""
    from robustq.data import load_dataset
    _, test, _ = load_dataset("fashion-mnist-10k", None)
    x = test.images[:16].float() / 255                  # uint8 -> [0, 1] pixels
    dense, meta = sparse_model(20, 2, "4bit", p=0.35, seed=11, in_channels=1, size=x.shape[-1])
    pruned, _ = prune(dense, meta["arch"])
    _check_same(dense, pruned, x)


def test_counts_and_the_papers_arithmetic():
    arch = Arch(20, 1, 0.1, 3, 10, 32)
    dense = build_network(arch).eval()
    assert count_params(dense) == 272_282
    # ResNet20 on 32x32: the well-known ~41M multiply-adds
    assert 40_000_000 < count_flops(dense, (3, 32, 32)) < 41_500_000
    layers = [n for n, m in dense.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    with torch.no_grad():
        dense.members[0].blocks[4].conv2.weight[:, :5] = 0   # 5 private channels: slices
        dense.members[0].blocks[4].conv1.weight[5:7] = 0     # 2 more: filters (constants)
        dense.members[0].blocks[5].conv1.weight[:, :3] = 0   # 3 stream-reading slices
    randomize_bn(dense, torch.Generator().manual_seed(0))
    pruned, _ = prune(dense, arch.to_dict())
    r = prune_report(dense, pruned, arch.to_dict(), layers)
    assert r["params_paper_pruned"] == 272_282 - 5 * 32 * 9 - 3 * 32 * 9
    # 7 x (conv1 filter + BN channel + conv2 slice), 3 x (slice + block-5 bn1 channel),
    # minus the folded constant kernel (32 x 1 x 3 x 3) that replaces the 2 constant channels
    removed = 7 * (32 * 9 + 2 + 32 * 9) + 3 * (32 * 9 + 2) - 32 * 9
    assert r["params"] - r["params_pruned"] == removed
    assert r["flops_pruned"] < r["flops"]
    sp = sparsity_report(dense, layers)
    assert sp["removable_slices"] == 5 and sp["gathered_slices"] == 3
    assert sp["removable_channels"] == 7 and sp["constant_channels"] == 2


def test_layer_roles():
    assert layer_role("members.0.conv1") == "stem"
    assert layer_role("members.1.blocks.3.conv1") == "block_in"
    assert layer_role("members.1.blocks.3.conv2") == "block_mid"
    assert layer_role("members.0.blocks.3.shortcut") == "shortcut"
    assert layer_role("members.0.linear") == "classifier"


@pytest.mark.parametrize("policy", ["paper", "all"])
def test_aligned_pruning_is_exact_and_keeps_multiples_of_8(policy):
    dense, meta = sparse_model(14, 2, "4bit", p=0.3, seed=13, policy=policy)
    pruned, spec = prune(dense, meta["arch"], align=8)
    for m in pruned.members:
        for b in m.blocks:
            for conv in (b.conv1, b.conv2, b.shortcut):
                if conv is not None:
                    assert conv.out_channels % 8 == 0 and conv.in_channels % 8 == 0
    _check_same(dense, pruned, torch.rand(3, 3, 12, 12))
    assert count_params(prune(dense, meta["arch"])[0]) <= count_params(pruned) < count_params(dense)


def test_pruning_is_exact_math_in_float64():
    """The 1e-5 of the fp32 tests is rounding only: in float64 the functions agree to 1e-12
    (without constants; a folded constant kernel is stored in fp32, so it agrees to ~1e-7)."""
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    for filters, tol in ((False, 1e-12), (True, 1e-6)):
        dense, meta = sparse_model(20, 2, "4bit", p=0.4, seed=17, filters=filters)
        pruned, _ = prune(dense, meta["arch"])
        torch.testing.assert_close(_outputs(pruned.double(), x, False),
                                   _outputs(dense.double(), x, False), atol=tol, rtol=tol)
