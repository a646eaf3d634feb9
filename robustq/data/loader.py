"""In-memory batches with batched augmentation (after airbench's loader).

The whole split lives in memory as one uint8 tensor ``(N, C, H, W)``. A batch is gathered
by index, randomly cropped (zero padding ``pad``) and optionally flipped in ONE advanced-
indexing gather (no per-sample Python loop, no DataLoader workers), moved to the device as
uint8 and only there converted to fp32 pixels in [0, 1] (``/ 255``), in the requested
memory format. Shuffling and augmentation draw from an explicit ``torch.Generator`` so a run
is reproducible and resumable.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .datasets import ImageData


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)``: ``val_size`` examples held out with every class represented
    in proportion (largest-remainder rounding), reproducible from ``seed``."""
    n = labels.shape[0]
    if not 0 <= val_size < n:
        raise ValueError(f"validation size must be in [0, {n}), got {val_size}")
    g = torch.Generator().manual_seed(seed)
    classes, counts = labels.unique(return_counts=True)
    quota = counts.double() * val_size / n
    take = quota.floor().long()
    rest = val_size - int(take.sum())
    if rest:
        take[torch.argsort(quota - take, descending=True, stable=True)[:rest]] += 1
    val = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = (labels == c).nonzero().squeeze(1)
        val.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
    val_idx = torch.cat(val).sort().values
    mask = torch.ones(n, dtype=torch.bool)
    mask[val_idx] = False
    return mask.nonzero().squeeze(1), val_idx


def augment(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and optional horizontal flip of a uint8 batch."""
    b, c, h, w = images.shape
    if pad == 0 and not flip:
        return images
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    rows = dy + torch.arange(h)                                       # (B, H)
    cols = dx + torch.arange(w)                                       # (B, W)
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def to_pixels(images: torch.Tensor, device: torch.device | str = "cpu",
              channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> fp32 in [0, 1] on ``device`` (exact ``k / 255``)."""
    x = images.to(device, non_blocking=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(dtype=torch.float32, memory_format=fmt).div_(255.0)


class Batches:
    """Iterate ``(x, y)`` batches of ``data``; one pass is one epoch.

    ``shard=(rank, world)`` gives each of ``world`` processes a disjoint slice of every
    permutation (for a later DDP run)."""

    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool = False,
                 pad: int = 0, flip: bool = False, augment_data: bool = False,
                 generator: Optional[torch.Generator] = None, device: torch.device | str = "cpu",
                 channels_last: bool = False, drop_last: bool = False,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.data, self.batch_size, self.shuffle = data, int(batch_size), shuffle
        self.pad, self.flip, self.augment = pad, flip, augment_data
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device, self.channels_last, self.drop_last, self.shard = device, channels_last, drop_last, shard

    def __len__(self) -> int:
        n = len(range(self.shard[0], len(self.data), self.shard[1]))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[self.shard[0]::self.shard[1]]
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            images = self.data.images[idx]
            if self.augment:
                images = augment(images, self.pad, self.flip, self.generator)
            yield (to_pixels(images, self.device, self.channels_last),
                   self.data.labels[idx].to(self.device, non_blocking=True))
