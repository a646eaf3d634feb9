"""The packed model file: one safetensors file, loadable without the training code.

Layout (``FORMAT = "robustq-packed"``, version 1):

* tensors: for each quantized weight ``NAME`` (per the run's bit map) ``NAME.codes``, a 1-D
  uint8 tensor holding the packed integer codes (``packing.py``: 1 bit binary, 2 bits
  ternary, m bits for m-bit, little-endian bit stream), and ``NAME.scale``, its fp32 scale of
  shape (1,), so that ``weight = scale * codes``; every other tensor of the pruned model (BN,
  float shortcuts and classifier, folded constants) as it is (fp32; BN counters int64);
* metadata ``{"robustq": JSON}``: ``format``, ``format_version``, ``version``, ``sha256``
  (the content hash of the tensors and the rest of the metadata, ``integrity.py``), ``arch`` (the
  dense architecture: depth, ensemble, noise, in_channels, num_classes, input_size),
  ``input_shape``, ``num_classes``, ``noise``, ``ensemble``, ``quant``, ``bit_map``,
  ``pruned`` (the channel plan, ``pruned.py``: the architecture after pruning), ``packed``
  (per packed tensor: scheme, bits, levels, shape) and provenance (method, dataset, epoch).

``load`` checks everything before building anything: the file parses, the content hash
matches (format version 2; version 1 files have none), the metadata is ours, of the right
types, within the architecture budget and consistent, every tensor has the shape the plan
implies, weights are finite and BN variances >= 0, every code lies inside its bit width and
the padding bits are zero. Any failure is one ``CheckpointError`` sentence.
safetensors holds raw arrays and JSON only, so loading never executes code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError, RobustqError
from ..integrity import HASH_KEY, check_model_meta, check_tensors, content_hash
from .packing import code_bits, pack_codes, recover_codes, unpack_codes
from .pruned import build_pruned

FORMAT, FORMAT_VERSION = "robustq-packed", 2   # 2: with the content hash
ARCH_FIELDS = ("depth", "ensemble", "noise", "in_channels", "num_classes", "input_size")


def _projection(scheme: str) -> tuple[int, int]:
    from ..quant import get_projection  # export side only: load never needs quant
    p = get_projection(scheme)
    return p.bits, p.levels


def pack_state(state: dict[str, torch.Tensor], bit_map: dict[str, str]) -> tuple[dict, dict]:
    """Split a pruned state dict into safetensors tensors and the ``packed`` table.

    A quantized weight whose codes cannot be recovered exactly stays fp32 (it is then listed
    nowhere in ``packed``), so the file always reproduces the model bit for bit."""
    tensors: dict[str, torch.Tensor] = {}
    table: dict[str, dict] = {}
    for name, t in state.items():
        layer = name.rsplit(".", 1)[0]
        scheme = bit_map.get(layer, "float")
        rec = None
        if name.endswith(".weight") and scheme != "float" and t.numel():
            bits, levels = _projection(scheme)
            rec = recover_codes(t, levels)
        if rec is None:
            tensors[name] = t.detach().contiguous().cpu()
            continue
        codes, scale = rec
        m = code_bits(bits, codes)
        tensors[name + ".codes"] = pack_codes(codes, m, levels)
        tensors[name + ".scale"] = scale.reshape(1).float()
        table[name] = {"scheme": scheme, "bits": m, "levels": levels, "shape": list(t.shape)}
    return tensors, table


def write_packed(path: str | Path, pruned: nn.Module, spec: dict, meta: dict, pack: bool = True) -> dict:
    """Write ``pruned`` (built from ``spec``) to ``path``; returns the metadata written."""
    from safetensors.torch import save
    from ..checkpoint import atomic_write

    arch = {k: meta["arch"][k] for k in ARCH_FIELDS}
    bit_map = meta.get("bit_map", {}) if pack else {}
    tensors, table = pack_state(pruned.state_dict(), bit_map)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
              "arch": arch, "input_shape": [arch["in_channels"], arch["input_size"], arch["input_size"]],
              "num_classes": arch["num_classes"], "noise": arch["noise"], "ensemble": arch["ensemble"],
              "quant": meta.get("quant", "float"), "bit_map": meta.get("bit_map", {}),
              "pruned": spec, "packed": table,
              **{k: meta[k] for k in ("method", "policy", "dataset", "epoch", "val") if k in meta}}
    header = json.loads(json.dumps(header))  # hashed as load will see it (tuples -> lists)
    header[HASH_KEY] = content_hash({"header": header, "tensors": tensors})
    atomic_write(path, save(tensors, metadata={"robustq": json.dumps(header)}))
    return header


def _fail(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} {what}; use an intact file written by robustq export")


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give the path of a file robustq export wrote")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("robustq")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for every malformation
        raise _fail(path, f"is not a readable safetensors file (truncated or corrupt: "
                          f"{str(e).splitlines()[0][:100] if str(e) else type(e).__name__})") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file without robustq's metadata; to "
                              f"evaluate your own network's weights pass --model MODULE:FACTORY "
                              f"--weights {path} --dataset NAME")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError:
        raise _fail(path, "has corrupt metadata (not JSON)") from None
    return header, tensors


def _check_header(path: Path, h: Any, tensors: dict) -> dict:
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise _fail(path, f"is not a {FORMAT} file")
    version = h.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(path, "has an invalid format version in its metadata")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}, newer than this robustq "
                              f"reads ({FORMAT_VERSION}); upgrade robustq")
    if (version >= 2 or HASH_KEY in h) and h.get(HASH_KEY) != content_hash(
            {"header": {k: v for k, v in h.items() if k != HASH_KEY}, "tensors": tensors}):
        raise _fail(path, "is corrupt: its content does not match its SHA-256 content hash (a "
                          "flipped bit or an edit)")
    check_model_meta(h, path)
    arch = h["arch"]
    shape = [arch["in_channels"], arch["input_size"], arch["input_size"]]
    if h.get("input_shape") != shape or h.get("num_classes") != arch["num_classes"] \
            or h.get("ensemble") != arch["ensemble"] or h.get("noise") != arch["noise"]:
        raise _fail(path, "has metadata that contradicts itself (input shape, classes, ensemble "
                          "size or noise differ from the architecture)")
    if not isinstance(h.get("packed"), dict) or not isinstance(h.get("pruned"), dict):
        raise _fail(path, "lacks the pruning plan or the packed-tensor table")
    return h


def _unpack(path: Path, name: str, info: Any, tensors: dict, want: torch.Size) -> torch.Tensor:
    codes, scale = tensors.pop(name + ".codes", None), tensors.pop(name + ".scale", None)
    if codes is None or scale is None:
        raise _fail(path, f"lists {name} as packed but lacks its codes or scale")
    if not isinstance(info, dict) or info.get("shape") != list(want):
        raise _fail(path, f"has metadata that disagrees with the plan for {name} (shape "
                          f"{info.get('shape') if isinstance(info, dict) else info} vs {list(want)})")
    bits, levels = info.get("bits"), info.get("levels")
    if not isinstance(bits, int) or not isinstance(levels, int) or not 1 <= bits <= 8 \
            or not 1 <= levels <= 2 ** (bits - 1) or (bits > 1 and 2 * levels > 2 ** bits - 2):
        raise _fail(path, f"declares an impossible bit width for {name} ({bits} bits, +-{levels})")
    if scale.dtype != torch.float32 or scale.shape != (1,) or not bool(torch.isfinite(scale).all()) \
            or float(scale) < 0:
        raise _fail(path, f"holds an invalid scale for {name}")
    try:
        c = unpack_codes(codes, math.prod(want), bits, levels)
    except ValueError as e:
        raise _fail(path, f"holds tampered codes for {name} ({e})") from None
    return (scale * c.to(torch.float32)).reshape(want)


def _state(path: Path, h: dict, tensors: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    state = {}
    for name, ref in model.state_dict().items():
        if name in h["packed"]:
            state[name] = _unpack(path, name, h["packed"][name], tensors, ref.shape)
            continue
        t = tensors.pop(name, None)
        if t is None:
            raise _fail(path, f"lacks the tensor {name} that its architecture needs")
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise _fail(path, f"has a tensor {name} of shape {list(t.shape)} ({t.dtype}) where "
                              f"its metadata implies {list(ref.shape)} ({ref.dtype})")
        state[name] = t
    check_tensors(state, path)
    if tensors or set(h["packed"]) - set(state):
        extra = sorted(tensors) or sorted(set(h["packed"]) - set(state))
        raise _fail(path, f"has tensors its metadata does not describe ({', '.join(extra[:3])})")
    return state


def load_packed(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """``(model in eval mode, metadata)`` from a file ``write_packed`` wrote. Noise is ON
    (as in the dense model files); ``robustq.models.set_noise(model, False)`` for
    deterministic outputs."""
    path = Path(path)
    h, tensors = _read(path)
    h = _check_header(path, h, tensors)
    try:
        model = build_pruned(h["arch"], h["pruned"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise _fail(path, f"has an invalid pruning plan ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})") from None
    model.load_state_dict(_state(path, h, tensors, model))
    meta = dict(h)
    meta.setdefault("method", "none")
    return model.to(device).eval(), meta


def load(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The model stored in a ``robustq export`` file, ready for inference (eval mode)."""
    return load_packed(path, device)[0]


def file_sizes(path: str | Path, dense: nn.Module, pruned: nn.Module) -> dict:
    """Bytes on disk of ``path`` beside the fp32 bytes of the dense and pruned models."""
    f32 = lambda m: sum(t.numel() * 4 for t in m.state_dict().values() if t.is_floating_point())
    return {"file_bytes": Path(path).stat().st_size, "float32_bytes": f32(dense),
            "pruned_float32_bytes": f32(pruned)}


def export_onnx(pruned: nn.Module, input_shape: list[int], path: str | Path,
                check: bool = True, opset: int = 17) -> Optional[float]:
    """Write ``pruned`` (noise off) as ONNX; with ``check``, run it in onnxruntime on random
    inputs and return the largest absolute difference from PyTorch."""
    import copy
    import io
    import warnings

    from ..models import set_noise
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        if check:
            import onnxruntime  # noqa: F401
    except ImportError:
        raise RobustqError("ONNX export needs the optional packages onnx and onnxruntime; "
                              "install them with pip install 'robustq[onnx]'") from None
    model = copy.deepcopy(pruned).cpu().eval()
    set_noise(model, False)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *input_shape),), buf, dynamo=False,
                          input_names=["images"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    from ..checkpoint import atomic_write
    atomic_write(path, buf.getvalue())
    return onnx_max_diff(model, path, input_shape) if check else None


def onnx_max_diff(model: nn.Module, path: str | Path, input_shape: list[int], n: int = 8) -> float:
    """Largest |PyTorch - onnxruntime| logit difference on ``n`` random images (noise off)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(n, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    out = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    return float((out - ref).abs().max())
