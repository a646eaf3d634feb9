"""Evaluation: clean and robust accuracy, sparsity, and the flat ``results.json`` record.

The paper's protocol (A1 FGSM, A2 IFGSM-20, A3 its "C&W", ``cw_paper``) keeps the block
noise ON at test time with one noise sample per gradient, as the reference code does; we
also report the clean accuracy with the noise off. Every attack runs on the model with its
quantized weights baked in (exactly Q(w)), in eval mode, on the first ``n_eval`` test images.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from . import __version__
from .attacks import Attack, make_attack
from .checkpoint import MODEL_FORMAT, atomic_write, load
from .build import Arch, build_network
from .config import RunConfig
from .data import Batches, ImageData
from .data.loader import to_pixels
from .distributed import SINGLE, Dist, rank_seed, sharded_masks
from .errors import CheckpointError
from .models import has_noise, noise_state
from .runtime import autocast, resolve_precision
from .efficiency.prune import efficiency_record
from .efficiency.sparsity import sparsity_report


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1) == y


def robust_accuracy(model: nn.Module, data: ImageData, attacks: dict[str, Optional[Attack]], *,
                    batch_size: int = 250, device: torch.device = torch.device("cpu"),
                    precision: str = "fp32", channels_last: bool = False) -> dict[str, torch.Tensor]:
    """Per-example correctness masks: ``{"natural": ..., attack name: ...}`` (bool, CPU).

    ``attacks`` maps names to attacks; ``None`` means clean inputs."""
    model.eval()
    masks: dict[str, list[torch.Tensor]] = {name: [] for name in attacks}
    for x, y in Batches(data, batch_size, device=device, channels_last=channels_last):
        with autocast(precision, device):
            for name, attack in attacks.items():
                x_in = x if attack is None else attack(model, x, y)
                masks[name].append(_correct(model, x_in, y).cpu())
    return {k: torch.cat(v) for k, v in masks.items()}


def quantized_layers(meta: dict) -> list[str]:
    """The layers a model file's bit map marks as quantized."""
    return [k for k, v in meta.get("bit_map", {}).items() if v != "float"]


def paper_attacks(names: list[str], eps, attack_args: Optional[dict] = None) -> dict[str, Attack]:
    """The configured attacks with the paper's defaults (eps as given)."""
    attack_args = attack_args or {}
    return {n: make_attack(n, eps=eps, **attack_args.get(n, {})) for n in names}


def load_any_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load any model file robustq writes, by kind; returns ``(model in eval mode, meta)``.

    ``meta`` holds at least ``arch`` (Arch fields), ``quant``, ``method``, ``bit_map`` and
    ``dataset``. ``.safetensors`` files are pruned, packed exports (``export.py``)."""
    if Path(path).suffix == ".safetensors":
        from .efficiency.export import load_packed
        return load_packed(path, device)
    return load_model_file(path, device)


def load_model_file(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a saved model (``model.pt``) from its metadata; weights exactly as saved."""
    obj = load(path, MODEL_FORMAT)
    meta = obj.get("meta", {})
    try:
        arch = Arch(**meta["arch"])
        model = build_network(arch)
        model.load_state_dict(obj["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not describe a network robustq can rebuild "
                              f"({str(e).splitlines()[0][:120]}); it is corrupt or from "
                              f"another tool") from None
    return model.to(device).eval(), meta


def evaluate(model: nn.Module, meta: dict, cfg: RunConfig, test: ImageData, device: torch.device,
             log=print, *, surrogate: Optional[nn.Module] = None,
             curve_eps: Optional[list] = None, dist: Dist = SINGLE) -> dict:
    """Run the configured evaluation on ``model`` and return the results record.

    ``cfg.eval.suite`` picks it: ``paper`` (the default: A1-A3 with one noise sample, as the
    paper) or a robustness suite (``quick``, ``strong``, ``autoattack``; see
    ``robustq.robustness``). ``surrogate`` feeds the transfer check; ``curve_eps`` adds a
    robustness curve (and runs the paper's attacks through the suite machinery). Under
    torchrun (``dist``) the paper suite's test images are split across the ranks and the
    per-example results gathered into the one record (``distributed.sharded_masks``); the
    other suites run whole on every rank (no speed-up yet, the same record)."""
    e = cfg.eval
    n = min(len(test), e.n_eval or len(test))
    data = test.subset(torch.arange(n))
    precision = resolve_precision(e.precision, device)
    channels_last = cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if e.suite != "paper" or curve_eps:
        return _evaluate_suite(model, meta, cfg, data, device, precision, channels_last, log,
                               surrogate, curve_eps)
    attacks: dict[str, Optional[Attack]] = {"natural": None}
    attacks.update(paper_attacks(e.attacks, e.eps, e.attack_args))
    started = time.perf_counter()
    def correct(which: dict):
        return sharded_masks(lambda lo, hi: robust_accuracy(
            model, data.subset(torch.arange(lo, hi)), which, batch_size=e.batch_size, device=device,
            precision=precision, channels_last=channels_last), n, dist)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(rank_seed(e.seed, dist))   # each rank's own noise/start stream
        with noise_state(model, e.noise):
            masks = correct(attacks)
            noise_at_eval = has_noise(model)
        with noise_state(model, False):
            clean_off = correct({"natural": None})
    seconds = time.perf_counter() - started
    acc = {k: float(v.float().mean()) for k, v in masks.items()}
    worst = torch.stack([masks[k] for k in e.attacks]).all(0) if e.attacks else masks["natural"]
    record = _model_keys(model, meta, cfg)
    record.update({
        "suite": "paper",
        "natural_acc": acc["natural"],
        "attacks": {k: acc[k] for k in e.attacks},
        "robust_acc_worst": float(worst.float().mean()),
        "natural_acc_noise_off": float(clean_off["natural"].float().mean()),
        "noise_at_eval": noise_at_eval,
        "eps": e.eps,
        "attack_settings": {k: repr(a) for k, a in attacks.items() if a is not None},
        "eval_seed": e.seed,
        "n_eval": n,
        "eval_seconds": round(seconds, 2),
        "device": str(device),
        "precision": precision,
        "processes": dist.world,
    })
    return record


def _model_keys(model: nn.Module, meta: dict, cfg: RunConfig) -> dict:
    """What the model is (data, architecture, quantization, sparsity, versions): the part of
    the results record that does not depend on the evaluation suite."""
    quantized = quantized_layers(meta)
    sp = sparsity_report(model, quantized)
    return {
        "dataset": cfg.data.name,
        "model": Arch(**meta["arch"]).name,
        "quant": meta.get("quant", "float"),
        "method": cfg.quant.method,
        "loss": cfg.loss.name,
        "loss_params": {"alpha": cfg.loss.alpha, "beta": cfg.loss.beta} if cfg.loss.name != "natural" else {},
        "weight_sparsity": sp["weight_sparsity"],
        "channel_sparsity": sp["channel_sparsity"],
        "filter_sparsity": sp["filter_sparsity"],
        "sparsity_counts": sp["counts"],
        **efficiency_record(model, meta, quantized),
        "per_layer": sp["per_layer"],
        "bit_map": meta.get("bit_map", {}),
        "params": sum(p.numel() for p in model.parameters()),
        "seed": cfg.seed,
        "selected_epoch": meta.get("epoch"),
        "val": meta.get("val", {}),
        "version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _evaluate_suite(model: nn.Module, meta: dict, cfg: RunConfig, data: ImageData,
                    device: torch.device, precision: str, channels_last: bool, log,
                    surrogate: Optional[nn.Module], curve_eps: Optional[list]) -> dict:
    """A robustness suite (``eval.suite``: quick, strong, autoattack) -> the results record."""
    from .robustness import SuiteOptions, evaluate_suite

    e = cfg.eval
    x = to_pixels(data.images, device, channels_last)
    y = data.labels.to(device)
    opts = SuiteOptions(eot_samples=e.eot_samples, draws=e.draws, seed=e.seed,
                        allow_single_sample=e.allow_single_sample, batch_size=e.batch_size,
                        surrogate=surrogate, curve_eps=curve_eps)
    with noise_state(model, e.noise), autocast(precision, device):
        suite = evaluate_suite(model, x, y, e.suite, e.eps, opts, log=log)
    off = suite.get("noise_off", {}).get("natural_acc", suite["natural_acc"])
    record = _model_keys(model, meta, cfg)
    record.update(suite)
    record.update({"natural_acc_noise_off": off, "noise_at_eval": suite["randomized"],
                   "eval_seed": e.seed, "eval_seconds": suite["suite_seconds"],
                   "device": str(device), "precision": precision})
    return record


def write_results(results: dict, path: str | Path) -> None:
    atomic_write(path, (json.dumps(results, indent=2) + "\n").encode())


def format_table(r: dict) -> str:
    """A small human table of one results record."""
    rows = [("natural", r["natural_acc"])] + list(r["attacks"].items())
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{r['model']}  {r['quant']} ({r['method']})  loss {r['loss']}  on {r['dataset']}  "
             f"(n_eval {r['n_eval']}, eps {r['eps']}, noise {'on' if r['noise_at_eval'] else 'off'})"]
    std = {"natural": r.get("natural_acc_std", 0.0), "worst case": r.get("robust_acc_worst_std", 0.0),
           **r.get("attacks_std", {})}
    off = r.get("noise_off", {})
    off = {"natural": off.get("natural_acc"), "worst case": off.get("robust_acc_worst"),
           **off.get("attacks", {})}
    if r.get("suite", "paper") != "paper":
        width = max(width, 12)
        lines.append(f"  suite {r['suite']}: " + (f"randomized, EOT {r['eot_samples']}, {r['draws']} draws "
                     f"(mean +- spread over draws)" if r.get("randomized") else "deterministic model"))
    for k, v in rows + [("worst case", r["robust_acc_worst"])]:
        line = f"  {k:<{width}}{100 * v:6.2f} %"
        line += f" +- {100 * std[k]:.2f}" if std.get(k) else ""
        line += f"   noise off {100 * off[k]:6.2f} %" if off.get(k) is not None else ""
        lines.append(line)
    if off["natural"] is None:
        lines.append(f"  {'clean, noise off':<{width}}{100 * r['natural_acc_noise_off']:6.2f} %")
    for name, f in r.get("masking_checks", {}).items():
        mark = "info" if name == "randomized" else ("FLAG" if f["fired"] else " ok ")
        lines.append(f"  [{mark}] {name}: {f['explanation']}")
    lines.append(f"  weight sparsity {100 * r['weight_sparsity']:.2f} %   channel sparsity "
                 f"{100 * r['channel_sparsity']:.2f} %   params {r['params']:,}")
    tr = r.get("training") or {}
    if tr.get("catastrophic_overfitting"):
        lines.append(f"  [FLAG] catastrophic overfitting in training at epoch(s) "
                     f"{', '.join(map(str, tr['co_epochs']))}; this is the model of epoch "
                     f"{tr.get('selected_epoch')}, from before it")
    return "\n".join(lines)
