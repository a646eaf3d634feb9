"""Splits and augmentation: the validation split is stratified and reproducible; random crops
are shifted windows of the zero-padded image, flips only where the dataset allows them, and
pixel values and labels come through intact."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustq.data import DATASETS, Batches, ImageData, augment, stratified_split, to_pixels


def test_split_is_stratified_disjoint_and_reproducible():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([500, 300, 200, 7])])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    tr, val = stratified_split(labels, 101, seed=3)
    assert len(val) == 101 and len(tr) + len(val) == len(labels)
    assert not set(tr.tolist()) & set(val.tolist())
    counts = torch.bincount(labels[val], minlength=4)
    expected = torch.tensor([500, 300, 200, 7]) * 101 / len(labels)
    assert (counts - expected).abs().max() < 1                 # each class in proportion
    again = stratified_split(labels, 101, seed=3)
    assert torch.equal(again[1], val) and torch.equal(again[0], tr)
    assert not torch.equal(stratified_split(labels, 101, seed=4)[1], val)


def windows(img: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """Every crop (and mirror, if ``flip``) the augmentation may produce from ``img``."""
    _, h, w = img.shape
    p = F.pad(img, (pad,) * 4)
    out = [p[:, y:y + h, x:x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    return out + [o.flip(2) for o in out] if flip else out


@pytest.mark.parametrize("pad,flip", [(4, True), (4, False), (2, False), (0, True)])
def test_augment_output_is_a_shifted_window_of_the_padded_image(pad, flip):
    x = torch.randint(1, 256, (24, 3, 12, 10), dtype=torch.uint8)  # asymmetric, no zeros
    out = augment(x, pad, flip, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    flipped = 0
    for i in range(len(x)):
        cands = windows(x[i], pad, flip)
        match = [k for k, c in enumerate(cands) if torch.equal(out[i], c)]
        assert match, f"image {i} is not a crop{'/flip' if flip else ''} of its input"
        flipped += min(match) >= (2 * pad + 1) ** 2
    if flip:
        assert 0 < flipped < len(x)                           # both kinds drawn
    assert torch.equal(x, x.clone())                           # input untouched


def test_augment_is_reproducible_and_leaves_no_flip_for_digits():
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        assert spec.flip == name.startswith("cifar"), name
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    a = augment(x, 2, False, torch.Generator().manual_seed(5))
    b = augment(x, 2, False, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_batches_keep_pixels_and_labels_together():
    """Image i is constant v_i (1..250) with label v_i % 10; after shuffle, crop, flip and
    conversion every batch image must still be v_i (or padding 0) with its own label."""
    n = 600
    v = torch.arange(n) % 250 + 1
    data = ImageData(v.to(torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).contiguous(),
                     v % 10)
    seen = 0
    for x, y in Batches(data, 128, shuffle=True, pad=4, flip=True, augment_data=True,
                        generator=torch.Generator().manual_seed(0)):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        vals = (x * 255).round().to(torch.int64).flatten(1).max(1).values
        assert torch.equal(vals % 10, y)
        assert torch.equal(x, (x * 255).round() / 255)           # exact k / 255
        seen += len(y)
    assert seen == n


def test_to_pixels_is_exact_k_over_255():
    k = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_pixels(k).view(-1), torch.arange(256, dtype=torch.float32) / 255)
