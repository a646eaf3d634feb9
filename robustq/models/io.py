"""Models robustq did not train: any ``nn.Module`` from an importable factory with its weights,
and ONNX files run by onnxruntime.

* ``build_foreign("mypkg.nets:resnet18")`` imports ``mypkg.nets`` (the current directory is
  searched first, like ``python -m``) and calls ``resnet18()`` with no arguments; the result
  must be an ``nn.Module`` that takes pixels in [0, 1] (normalization inside the model, as
  RobustBench requires) and returns logits;
* ``read_weights(FILE)`` reads a ``.safetensors`` file or a ``state_dict`` saved with
  ``torch.save`` through ``torch.load(weights_only=True)``: tensors only, no code is ever
  unpickled; ``fit_weights`` loads them after checking every name and shape;
* ``check_logits`` runs two images of the dataset's shape through the model and insists on
  ``(2, num_classes)`` logits;
* ``OnnxModel`` wraps an ONNX file in an ``nn.Module`` whose forward runs onnxruntime. It has
  no gradients (``differentiable = False``), so the evaluation engine gives it clean accuracy
  and black-box attacks only.

Each failure is one ``ConfigError`` / ``CheckpointError`` sentence.
"""
from __future__ import annotations

import importlib
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, require


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def import_factory(spec: str) -> Callable[[], object]:
    """The callable named by ``MODULE:FACTORY``."""
    module, _, name = spec.partition(":")
    if not module or not name.isidentifier():
        raise ConfigError(f"--model takes MODULE:FACTORY such as mypkg.nets:resnet18, got {spec!r}")
    added = os.getcwd() not in sys.path
    if added:  # the user's code, run from its folder, as python -m would find it
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # an ImportError, or any error raised by the user's module
        raise ConfigError(f"--model {spec}: module {module} does not import ({_first_line(e)}); "
                          f"run robustq from the folder that holds it or install it") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    factory = getattr(mod, name, None)
    if not callable(factory):
        raise ConfigError(f"--model {spec}: module {module} has no callable {name}")
    return factory


def build_foreign(spec: str) -> nn.Module:
    """``factory()`` from ``MODULE:FACTORY``, checked to be an ``nn.Module``, in eval mode."""
    factory = import_factory(spec)
    try:
        model = factory()
    except Exception as e:
        raise ConfigError(f"--model {spec}: calling {spec.partition(':')[2]}() failed "
                          f"({_first_line(e)}); give a factory that needs no arguments") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save``'d state dict (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors has its own error types for each malformation
            raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds pickled Python objects, not only tensors (a whole "
                              f"saved model?), so it was not loaded (that could run code); save "
                              f"model.state_dict() instead") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]   # a checkpoint dict that holds the state dict
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise CheckpointError(f"{path} is not a state_dict (a mapping of names to tensors); save "
                              f"model.state_dict() with torch.save or safetensors")
    return obj


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load ``state`` into ``model`` after checking that every name and shape matches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        what = "; ".join(f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                         for label, items in (("missing", missing), ("unexpected", extra),
                                              ("wrong shape", wrong)) if items)
        raise CheckpointError(f"the weights in {path} do not fit the model ({what}); pass the "
                              f"state_dict saved from this same network")
    model.load_state_dict(state)


@torch.no_grad()
def check_logits(model: nn.Module, shape: tuple[int, int, int], num_classes: int, what: str,
                 dataset: str) -> None:
    """Two images of ``shape`` in, ``(2, num_classes)`` logits out, or one sentence."""
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    param = next(iter(model.parameters()), None)
    x = x if param is None else x.to(param.device)
    size = "x".join(map(str, shape))
    try:
        out = model(x)
    except Exception as e:
        raise ConfigError(f"{what} fails on {dataset} images ({size}, pixels in [0, 1]): "
                          f"{_first_line(e)}") from None
    got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != [2, num_classes]:
        raise ConfigError(f"{what} gives outputs of shape {got} for 2 {dataset} images ({size}); "
                          f"expected logits of shape [2, {num_classes}]")


class OnnxModel(nn.Module):
    """An ONNX file as an ``nn.Module``: forward runs onnxruntime on the CPU; no gradients."""
    differentiable = False

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        require("onnxruntime", "evaluating an ONNX file")
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CheckpointError(f"{path} is not an ONNX model onnxruntime can run "
                                  f"({_first_line(e)})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().float().cpu().contiguous().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0]).to(x.device)
