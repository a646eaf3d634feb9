"""From a config or a file to a model: architecture, then quantization injected by policy;
and loading every kind of model file robustq evaluates (``load_any_model``, ``load_foreign``).

``meta`` travels with every loaded model: for robustq's own files ``arch`` (the ``Arch``
fields), ``quant``, ``method``, ``bit_map``, ``dataset`` and provenance; for other models
``name``, ``architecture``, ``dataset`` and ``foreign: true``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .checkpoint import MODEL_FORMAT, load
from .errors import CheckpointError, ConfigError
from .models import enresnet, model_name
from .quant import POLICIES, get_projection, quantize_model
from .quant.projections import canonical_name


@dataclass(frozen=True)
class Arch:
    """Everything needed to rebuild a network (stored in every model file)."""
    depth: int
    ensemble: int
    noise: float
    in_channels: int
    num_classes: int
    input_size: int

    @property
    def name(self) -> str:
        return model_name(self.depth, self.ensemble, self.noise)

    def to_dict(self) -> dict:
        return asdict(self)


def build_network(arch: Arch) -> nn.Module:
    """The float network (plain nn.Conv2d everywhere)."""
    return enresnet(arch.depth, arch.ensemble, arch.noise, arch.in_channels, arch.num_classes)


def build_model(arch: Arch, scheme: str = "float", policy: str = "paper") -> tuple[nn.Module, dict]:
    """The network with the layers ``policy`` selects quantized by ``scheme``.

    Returns ``(model, bit_map)``; ``bit_map`` names each conv/linear layer's quantizer."""
    model = build_network(arch)
    scheme = canonical_name(scheme)
    if scheme == "float":
        from .quant import bit_map
        return model, bit_map(model)
    return model, quantize_model(model, get_projection(scheme), POLICIES[policy])


def quantized_layers(meta: dict) -> list[str]:
    """The layers a model file's bit map marks as quantized."""
    return [k for k, v in meta.get("bit_map", {}).items() if v != "float"]


def load_model_file(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a saved model (``model.pt``) from its metadata; weights exactly as saved."""
    obj = load(path, MODEL_FORMAT)
    meta = obj.get("meta", {})
    try:
        model = build_network(Arch(**meta["arch"]))
        model.load_state_dict(obj["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not describe a network robustq can rebuild "
                              f"({str(e).splitlines()[0][:120]}); it is corrupt or from "
                              f"another tool") from None
    return model.to(device).eval(), meta


_OWN_NET = ("evaluate your own network with --model MODULE:FACTORY --weights {path} "
            "--dataset NAME (docs/robustness.md)")


def _state_dict_hint(path: Path) -> Optional[CheckpointError]:
    """The error to give for a file that is a plain ``state_dict`` (not robustq's format)."""
    from .models.io import read_weights
    try:
        read_weights(path)
    except CheckpointError:
        return None
    return CheckpointError(f"{path} is a state_dict without robustq's metadata; "
                           + _OWN_NET.format(path=path))


def load_any_model(path: str | Path, device: torch.device | str = "cpu",
                   dataset: Optional[str] = None) -> tuple[nn.Module, dict]:
    """Load any model file robustq evaluates, by kind; returns ``(model in eval mode, meta)``:
    ``model.pt``, an exported ``.safetensors`` (pruned, packed) or an ``.onnx`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from .efficiency.export import load_packed
        return load_packed(path, device)
    if path.suffix == ".onnx":
        return _load_onnx(path, dataset)
    try:
        return load_model_file(path, device)
    except CheckpointError as e:
        raise (_state_dict_hint(path) if path.is_file() else None) or e from None


def _load_onnx(path: Path, dataset: Optional[str]) -> tuple[nn.Module, dict]:
    from .models.io import OnnxModel
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give the path of an ONNX file")
    sibling = path.with_suffix(".safetensors")  # robustq export --onnx writes both
    if dataset is None and sibling.is_file():
        from safetensors import safe_open
        with safe_open(str(sibling), framework="pt") as f:
            dataset = json.loads((f.metadata() or {}).get("robustq", "{}")).get("dataset")
    if dataset is None:
        raise ConfigError(f"{path} does not say which dataset it classifies; pass --dataset NAME")
    meta = {"name": path.name, "architecture": "ONNX model (onnxruntime)", "dataset": dataset,
            "foreign": True}
    return _checked(OnnxModel(path), meta, str(path)), meta


def load_foreign(spec: str, weights: Optional[str | Path], dataset: str,
                 device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Any ``nn.Module`` from ``MODULE:FACTORY`` (``models/io.py``), with its weights."""
    from .models.io import build_foreign, fit_weights, read_weights
    model = build_foreign(spec)
    if weights is not None:
        fit_weights(model, read_weights(weights), weights)
    meta = {"name": spec, "architecture": type(model).__name__, "dataset": dataset,
            "weights": None if weights is None else str(weights), "foreign": True}
    return _checked(model, meta, f"the model from {spec}").to(device), meta


def _checked(model: nn.Module, meta: dict, what: str) -> nn.Module:
    check_input(model, meta["dataset"], what)
    return model.eval()


def check_input(model: nn.Module, dataset: str, what: str) -> None:
    """Two images of ``dataset``'s shape give ``(2, classes)`` logits, or one sentence."""
    from .data import get_spec
    from .models.io import check_logits
    spec = get_spec(dataset)   # a DataError sentence for an unknown name
    check_logits(model, (spec.channels, spec.size, spec.size), spec.num_classes, what, spec.name)
