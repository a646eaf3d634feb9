"""Reader for SVHN's cropped digits (Netzer et al. 2011): ``train_32x32.mat``, ``test_32x32.mat``.

Each file is a MATLAB v5 MAT-file (read by ``matv5.read_mat``) with two variables: ``X``, uint8
of MATLAB shape ``(32, 32, 3, N)`` (height, width, RGB, image), and ``y``, ``(N, 1)`` labels
1..10 where **10 means the digit 0**. robustq maps 10 -> 0, so label ``k`` is the digit ``k``,
and returns images as ``(N, 3, 32, 32)``. The ``extra`` split (531k easier digits) is not used:
the paper trains on ``train`` only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .datasets import ImageData
from .matv5 import read_mat

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def read_svhn_file(path: Path) -> ImageData:
    """One SVHN ``*_32x32.mat`` file as an ``ImageData`` (digit labels 0..9)."""
    mat = read_mat(path, {"X", "y"})
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} has no {'X' if 'X' not in mat else 'y'} variable; it is not an "
                        f"SVHN cropped-digits file: download it again")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path} holds X of type/shape {x.dtype} {x.shape}, not uint8 "
                        f"(32, 32, 3, N); it is not SVHN's 32x32 format: download it again")
    y = y.reshape(-1)
    if y.shape[0] != x.shape[3]:
        raise DataError(f"{path} has {y.shape[0]} labels for {x.shape[3]} images; it is "
                        f"corrupt: download it again")
    if y.size and (np.any(y != np.round(y)) or y.min() < 1 or y.max() > 10):
        raise DataError(f"{path} has labels in [{y.min()}, {y.max()}], but SVHN's are the "
                        f"integers 1..10 (10 = digit 0); the file is corrupt or not SVHN")
    labels = y.astype(np.int64) % 10                       # 10 means the digit 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return ImageData(torch.from_numpy(images), torch.from_numpy(labels))


def read_svhn(root: Path) -> tuple[ImageData, ImageData]:
    """SVHN's train and test splits from the two official files in ``root``."""
    root = Path(root)
    return read_svhn_file(root / SVHN_FILES[0]), read_svhn_file(root / SVHN_FILES[1])
