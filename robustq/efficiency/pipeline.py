"""The efficiency verbs as library functions: analyse, prune and export a run or model file,
and the efficiency keys the ``eval`` verb merges into its results (``efficiency_keys``).

Each verb takes a run directory (its ``model.pt``) or a model file (``model.pt`` or an
exported ``.safetensors``), writes its files next to it unless told otherwise, and returns a
dict with what it measured; ``cli.py`` prints it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..build import load_any_model, quantized_layers
from ..errors import CheckpointError, RobustqError
from ..models import noise_state


def resolve(target: str | Path) -> tuple[Path, Path]:
    """``(model file, stem for outputs)``: a run directory's ``model.pt`` or the file itself."""
    target = Path(target)
    if target.is_dir():
        if not (target / "model.pt").is_file():
            raise CheckpointError(f"{target} holds no model.pt; give a finished run directory "
                                  f"or a model file")
        return target / "model.pt", target / "model"
    # model.pt -> model.*; an export keeps its suffix (model.safetensors.*), so never collides
    return target, target.with_suffix("") if target.suffix == ".pt" else target


def _load(path: Path) -> tuple[nn.Module, dict]:
    model, meta = load_any_model(path, "cpu")
    return model.eval(), meta


def efficiency_keys(model: nn.Module, meta: dict) -> dict:
    """The results keys for sparsity and pruning, from one sparsity report: weight, channel
    and filter sparsity with counts and per layer; for robustq's own models also what
    pruning removes and the parameters and FLOPs before and after. A foreign model's
    sparsities are over all its convolutions; an ONNX model has none (None)."""
    from .prune import efficiency_record
    from .sparsity import sparsity_report
    if not any(True for _ in model.parameters()):
        return {"weight_sparsity": None, "channel_sparsity": None, "filter_sparsity": None}
    if meta.get("foreign"):
        layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    else:
        layers = quantized_layers(meta)
    sp = sparsity_report(model, layers)
    keys = {"weight_sparsity": sp["weight_sparsity"], "channel_sparsity": sp["channel_sparsity"],
            "filter_sparsity": sp["filter_sparsity"], "sparsity_counts": sp["counts"],
            "per_layer": sp["per_layer"]}
    if not meta.get("foreign"):
        keys.update(efficiency_record(model, meta, layers, sp))
    return keys


def _dense_or_pruned(model: nn.Module, meta: dict, align: int = 1) -> tuple[nn.Module, dict, dict]:
    """``(pruned model, spec, size report)``; an exported file is already pruned."""
    from .prune import count_flops, count_params, prune, prune_report
    a = meta["arch"]
    if "pruned" in meta:
        shape = (a["in_channels"], a["input_size"], a["input_size"])
        p, f = count_params(model), count_flops(model, shape)
        return model, meta["pruned"], {"params": p, "params_pruned": p, "flops": f,
                                       "flops_pruned": f, "params_paper_pruned": None}
    pruned, spec = prune(model, a, align)
    return pruned, spec, prune_report(model, pruned, a, quantized_layers(meta))


def _figures(model: nn.Module, report: dict, stem: Path) -> list[str]:
    from .figures import plot_channels, plot_layer_sparsity
    if not report["per_layer"]:
        return []
    paths = [plot_layer_sparsity(report, f"{stem}.sparsity.png")]
    layers = dict(model.named_modules())
    name = max(report["per_layer"], key=lambda n: (report["per_layer"][n]["zero_in_slices"],
                                                   report["per_layer"][n]["weight_sparsity"]))
    paths.append(plot_channels(layers[name].weight, f"{stem}.channels.png", name))
    return [str(p) for p in paths]


def analyse(target: str | Path, figures: bool = True) -> dict:
    """Sparsity report, pruning sizes, figures; writes ``<stem>.sparsity.json`` (+ PNGs)."""
    from .sparsity import sparsity_report
    from ..checkpoint import check_output_file
    path, stem = resolve(target)
    check_output_file(f"{stem}.sparsity.json", "the sparsity report", inputs=(path,))
    model, meta = _load(path)
    report = sparsity_report(model, quantized_layers(meta))
    report["pruning"] = _dense_or_pruned(model, meta)[2]
    report["figures"], report["figure_note"] = [], None
    if figures:
        try:
            report["figures"] = _figures(model, report, stem)
        except RobustqError as e:  # the report stands without its pictures
            report["figure_note"] = str(e)
    from ..checkpoint import atomic_write
    atomic_write(f"{stem}.sparsity.json", (json.dumps(report, indent=1) + "\n").encode())
    report["json"] = f"{stem}.sparsity.json"
    return report


def _max_diff(a: nn.Module, b: nn.Module, shape: list[int], n: int = 16) -> float:
    """Largest ``|a(x) - b(x)| / (1 + |a(x)|)`` on random images, eval mode, noise off (fp32
    rounding grows with the logits' size; the check is the tests' atol = rtol = 1e-5)."""
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))
    with noise_state(a, False), noise_state(b, False), torch.no_grad():
        ya = a(x)
        return float(((ya - b(x)).abs() / (1 + ya.abs())).max())


def prune_to_file(target: str | Path, out: Optional[str | Path] = None, pack: bool = False,
                  align: int = 1) -> dict:
    """Prune and write the result as a ``.safetensors`` model file (fp32 unless ``pack``);
    ``align`` rounds channel counts up to its multiples (``prune.prune``)."""
    from .export import file_sizes, load_packed, write_packed
    if align < 1:
        raise RobustqError(f"--align must be a positive number of channels, got {align}")
    from ..checkpoint import check_output_file
    path, stem = resolve(target)
    out = Path(out) if out else Path(f"{stem}.{'packed' if pack else 'pruned'}.safetensors")
    check_output_file(out, "--out", inputs=(path,))  # before the work, never over a run's files
    model, meta = _load(path)
    pruned, spec, sizes = _dense_or_pruned(model, meta, align)
    header = write_packed(out, pruned, spec, meta, pack=pack)
    shape = header["input_shape"]
    reloaded, _ = load_packed(out)
    return {"out": str(out), **sizes, **file_sizes(out, model if "pruned" not in meta else pruned, pruned),
            "max_diff_vs_input": _max_diff(model, reloaded, shape),
            "max_diff_vs_pruned": _max_diff(pruned, reloaded, shape),
            "packed_tensors": len(header["packed"]),
            "bits": sorted({v["bits"] for v in header["packed"].values()})}


def export_to_file(target: str | Path, out: Optional[str | Path] = None, onnx: bool = False,
                   align: int = 1) -> dict:
    """``robustq export``: the pruned, packed file (and optionally ONNX, checked)."""
    if onnx:  # before any work
        from ..errors import require
        require("onnx", "ONNX export (--onnx)")
        require("onnxruntime", "checking the ONNX export (--onnx)")
    r = prune_to_file(target, out or f"{resolve(target)[1]}.safetensors", pack=True, align=align)
    if onnx:
        from .export import export_onnx, load_packed
        model, meta = load_packed(r["out"])
        onnx_path = Path(r["out"]).with_suffix(".onnx")
        r["onnx"] = str(onnx_path)
        r["onnx_max_diff"] = export_onnx(model, meta["input_shape"], onnx_path)
    return r


def format_sizes(r: dict) -> str:
    mb = lambda b: f"{b / 1e6:.3f} MB"
    lines = [f"wrote {r['out']}: {mb(r['file_bytes'])} on disk vs {mb(r['float32_bytes'])} as a "
             f"float32 model ({r['float32_bytes'] / max(r['file_bytes'], 1):.1f}x smaller; pruned "
             f"float32 {mb(r['pruned_float32_bytes'])})"]
    if r["packed_tensors"]:
        lines.append(f"{r['packed_tensors']} quantized weight tensors packed at {r['bits']} bits")
    lines.append(f"max |output difference| / (1 + |output|) (eval, noise off): vs the input model "
                 f"{r['max_diff_vs_input']:.2e}, vs the pruned model in memory {r['max_diff_vs_pruned']:.2e}")
    if "onnx" in r:
        lines.append(f"wrote {r['onnx']}: max |ONNX Runtime - PyTorch| = {r['onnx_max_diff']:.2e}")
    return "\n".join(lines)
