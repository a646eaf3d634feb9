"""robustq: adversarially robust, low-bit, pruned image classifiers (Binary-Relax EnResNets).

The pipeline, one module per arrow: ``data`` -> ``models`` -> ``quant`` -> ``engine``
(``losses``, ``attacks``) -> ``evaluate`` (``robustness``) -> ``efficiency`` (sparsity,
pruning, export). ``build`` makes and loads models; ``jobs`` holds the verbs as functions,
which the ``robustq`` command (``cli.py``) calls with the parsed arguments.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing robustq stays free of torch
    import os

    import torch

__version__ = "0.1.0"


def load(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """The model in a ``robustq export`` file (``.safetensors``), in eval mode with the block
    noise on; rebuilt from the file alone, without the training code (``export.load``)."""
    from .efficiency.export import load as _load
    return _load(path, device)
