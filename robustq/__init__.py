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
    """The model in any file robustq writes, in eval mode with the block noise on, rebuilt
    from the file alone: ``model.pt`` (``robustq train``: the selected model, weights exactly
    Q(w)) or ``.safetensors`` (``robustq prune``: pruned float32; ``robustq export``: pruned,
    packed low-bit). The kind is told by the file's suffix, as ``robustq eval`` does."""
    from pathlib import Path
    if Path(path).suffix == ".safetensors":  # without importing the training code
        from .efficiency.export import load as _load
        return _load(path, device)
    from .build import load_model_file
    return load_model_file(path, device)[0]
