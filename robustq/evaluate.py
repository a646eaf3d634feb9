"""Evaluation: run the configured suite on a model and write the results record.

Every protocol is a suite run by one engine (``robustness/``): the paper's (``paper``: the
configured attacks, by default its A1 FGSM, A2 IFGSM-20 and A3 ``cw_paper``, with one noise
sample, the block noise ON at test time as the reference code does), ``quick``, ``strong``,
``autoattack`` and ``blackbox``. Every attack runs in eval mode on the first ``n_eval`` test
images, on the model as loaded (robustq's own files hold their quantized weights baked in,
exactly Q(w)). Nothing here prunes or exports: the efficiency figures are added by the verb
that wants them (``jobs.py``).

The record (``results.json``, one flat JSON object) also carries RobustBench's model_info
fields (``name``, ``architecture``, ``clean_acc``, ``reported``, ``autoattack_acc``,
``threat_model``, ``eps``, ``number_forward_passes``, ``dataset``: accuracies there in percent,
as strings, as RobustBench writes them). Accuracies are rounded to the precision ``n_eval``
gives them (``decimals``), so two different counts of correct examples never round to the same
number and no digit is noise.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from . import __version__
from .build import Arch
from .checkpoint import atomic_write
from .config import RunConfig
from .data import ImageData
from .data.loader import to_pixels
from .eps import spelling
from .models import noise_state
from .robustness import SuiteOptions, evaluate_suite
from .distributed import SINGLE, Dist
from .runtime import autocast, resolve_precision


def suite_options(cfg: RunConfig, *, surrogate: Optional[nn.Module] = None,
                  curve_eps: Optional[list] = None, progress: bool = False,
                  dist=None, journal=None) -> SuiteOptions:
    """The engine's options from a config's ``eval`` section."""
    e = cfg.eval
    return SuiteOptions(eot_samples=e.eot_samples, draws=e.draws, seed=e.seed,
                        allow_single_sample=e.allow_single_sample, batch_size=e.batch_size,
                        surrogate=surrogate, curve_eps=curve_eps, attacks=list(e.attacks),
                        attack_args=e.attack_args, progress=progress, dist=dist, journal=journal)


def evaluate(model: nn.Module, meta: dict, cfg: RunConfig, test: ImageData, device: torch.device,
             log: Callable[[str], None] = print, *, surrogate: Optional[nn.Module] = None,
             curve_eps: Optional[list] = None, progress: bool = False,
             dist: Dist = SINGLE, journal=None) -> dict:
    """Run ``cfg.eval.suite`` on the first ``eval.n_eval`` images of ``test``; the record.

    ``surrogate`` feeds the transfer attacks; ``curve_eps`` adds a robustness curve. Under
    torchrun (``dist``) every suite's attack pass splits the test images across the ranks and
    gathers the per-example results into the one record (``suites.sharded_run_attacks``); the
    masking checks and the curve run whole on every rank. ``journal`` (a ``journal.Place``) keeps the
    progress there and continues an interrupted evaluation (``robustness/journal.py``)."""
    e = cfg.eval
    n = min(len(test), e.n_eval or len(test))
    precision = resolve_precision(e.precision, device)
    channels_last = cfg.train.channels_last and any(True for _ in model.parameters())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = test.subset(torch.arange(n))
    x, y = to_pixels(data.images, device, channels_last), data.labels.to(device)
    opts = suite_options(cfg, surrogate=surrogate, curve_eps=curve_eps, progress=progress,
                         dist=dist, journal=journal)
    with noise_state(model, e.noise), autocast(precision, device):
        suite = evaluate_suite(model, x, y, e.suite, e.eps, opts, log=log)
    record = model_keys(model, meta, cfg)
    record.update(suite)
    record.update({"noise_at_eval": suite["randomized"], "eval_seed": e.seed,
                   "eval_seconds": suite["suite_seconds"], "device": str(device),
                   "precision": precision, "processes": dist.world, "attacks_configured": list(e.attacks),
                   "attack_args": spelling(e.attack_args)})
    round_accuracies(record)
    record.update(robustbench_fields(record))
    return record


def model_keys(model: nn.Module, meta: dict, cfg: RunConfig) -> dict:
    """What the model is (data, architecture, quantization, versions): the part of the record
    that does not depend on the evaluation suite."""
    foreign = bool(meta.get("foreign"))
    if foreign:
        name, arch = meta["name"], meta["architecture"]
    else:
        name = meta.get("name") or cfg.name
        arch = f"{Arch(**meta['arch']).name}, {meta.get('quant', 'float')} weights " \
               f"({meta.get('method', cfg.quant.method)})"
    params = sum(p.numel() for p in model.parameters())
    return {
        "dataset": cfg.data.name,
        "model": name if foreign else Arch(**meta["arch"]).name,
        "name": name,
        "architecture": arch,
        "quant": None if foreign else meta.get("quant", "float"),
        "method": None if foreign else meta.get("method", cfg.quant.method),
        "loss": None if foreign else cfg.loss.name,
        "loss_params": {} if foreign or cfg.loss.name == "natural" else
        {"alpha": cfg.loss.alpha, "beta": cfg.loss.beta},
        "bit_map": meta.get("bit_map", {}),
        "params": params if params or not foreign else None,
        "seed": None if foreign else cfg.seed,
        "selected_epoch": meta.get("epoch"),
        "val": meta.get("val", {}),
        "foreign": foreign,
        "weights": meta.get("weights"),
        "version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def decimals(n: int) -> int:
    """Decimals an accuracy over ``n`` examples has: as many as ``k / n`` needs to be exact
    (3 for n = 40 or 500, 4 for 10,000), but no more than ``ceil(log10(n)) + 1`` (4 for 300):
    enough that every count of correct examples keeps its own value, no digits of noise."""
    m, twos, fives = max(n, 1), 0, 0
    while m % 2 == 0:
        m, twos = m // 2, twos + 1
    while m % 5 == 0:
        m, fives = m // 5, fives + 1
    cap = math.ceil(math.log10(max(n, 1))) + 1
    return min(max(twos, fives), cap) if m == 1 else cap


_ACC_KEYS = ("natural_acc", "natural_acc_std", "robust_acc_worst", "robust_acc_worst_std",
             "natural_acc_noise_off")


def round_accuracies(r: dict) -> None:
    """Every accuracy in the record rounded, in place, to ``decimals(n_eval)``."""
    d = decimals(r["n_eval"])
    rnd = lambda v: None if v is None else round(float(v), d)
    for part in (r, r.get("noise_off", {})):
        for k in _ACC_KEYS:
            if k in part:
                part[k] = rnd(part[k])
        for k in ("attacks", "attacks_std"):
            if k in part:
                part[k] = {a: rnd(v) for a, v in part[k].items()}
    if "curve" in r:
        c = r["curve"]
        c["acc"], c["std"] = [rnd(v) for v in c["acc"]], [rnd(v) for v in c["std"]]


def robustbench_fields(r: dict) -> dict:
    """RobustBench's model_info keys (``model_info/<dataset>/Linf/<name>.json``)."""
    pct = lambda v: f"{100 * v:.{max(decimals(r['n_eval']) - 2, 0)}f}"
    out = {"name": r["name"], "architecture": r["architecture"], "dataset": r["dataset"],
           "threat_model": "Linf", "eps": r["eps"], "clean_acc": pct(r["natural_acc"]),
           "reported": pct(r["robust_acc_worst"]), "number_forward_passes": int(r["draws"])}
    if "autoattack" in r["attacks"]:
        out["autoattack_acc"] = pct(r["attacks"]["autoattack"])
    return out


def record_path(latest: Path, suite: str) -> Path:
    """``eval-<suite>-<time>.json`` beside ``latest`` (prefixed by its stem unless it is
    ``results.json``)."""
    prefix = "" if latest.name == "results.json" else f"{latest.stem}."
    return latest.with_name(f"{prefix}eval-{suite}-{time.strftime('%Y%m%d-%H%M%S')}.json")


def write_results(results: dict, latest: str | Path) -> Path:
    """Write this evaluation's own record file (never over an earlier one: a suffix ``-1``,
    ``-2``, ... is added when one of the same second exists) and ``latest`` (the newest
    record, replaced atomically); returns the record's path."""
    latest = Path(latest)
    data = (json.dumps(results, indent=2) + "\n").encode()
    base = record_path(latest, results["suite"])
    tmp = latest.with_name(f".{base.name}.tmp{os.getpid()}")
    atomic_write(tmp, data)
    try:
        for i in range(1000):
            path = base if i == 0 else base.with_name(f"{base.stem}-{i}.json")
            try:
                _create(tmp, path, data)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free record name beside {base}")
    finally:
        tmp.unlink()
    atomic_write(latest, data)
    return path


def _create(tmp: Path, path: Path, data: bytes) -> None:
    """``path`` with ``data``, created only if absent (FileExistsError otherwise)."""
    try:
        os.link(tmp, path)   # atomic: the whole file appears at once, or not at all
    except FileExistsError:
        raise
    except OSError:          # a filesystem without hard links: exclusive create instead
        with open(path, "xb") as f:
            f.write(data)


def format_table(r: dict) -> str:
    """A small human table of one results record."""
    rows = [("natural", r["natural_acc"])] + list(r["attacks"].items())
    width = max(12, max(len(k) for k, _ in rows) + 2)
    what = f"{r['model']}  {r['quant']} ({r['method']})  loss {r['loss']}" if not r.get("foreign") \
        else f"{r['name']} ({r['architecture']})"
    noise = "" if r.get("foreign") else f", noise {'on' if r['noise_at_eval'] else 'off'}"
    lines = [f"{what}  on {r['dataset']}  (n_eval {r['n_eval']}, eps {r['eps']}{noise})"]
    std = {"natural": r.get("natural_acc_std", 0.0), "worst case": r.get("robust_acc_worst_std", 0.0),
           **r.get("attacks_std", {})}
    off = r.get("noise_off", {})
    off = {"natural": off.get("natural_acc"), "worst case": off.get("robust_acc_worst"),
           **off.get("attacks", {})}
    if not r.get("randomized"):
        how = "deterministic model"
    elif r["eot_samples"] == r["draws"] == 1:
        how = "randomized model, one noise sample per gradient and per prediction"
    else:
        how = (f"randomized, EOT {r['eot_samples']}, {r['draws']} draws"
               + (" (mean +- spread over draws)" if r["draws"] > 1 else ""))
    lines.append(f"  suite {r['suite']}: {how}")
    for k, v in rows + [("worst case", r["robust_acc_worst"])]:
        line = f"  {k:<{width}}{100 * v:6.2f} %"
        line += f" +- {100 * std[k]:.2f}" if std.get(k) else ""
        line += f"   noise off {100 * off[k]:6.2f} %" if off.get(k) is not None else ""
        lines.append(line)
    if off["natural"] is None and r.get("randomized") and r.get("natural_acc_noise_off") is not None:
        lines.append(f"  {'clean, noise off':<{width}}{100 * r['natural_acc_noise_off']:6.2f} %")
    lines.append("  worst case: per example, correct on the clean image and under every attack")
    for name, f in r.get("masking_checks", {}).items():
        mark = "info" if name == "randomized" else ("FLAG" if f["fired"] else " ok ")
        lines.append(f"  [{mark}] {name}: {f['explanation']}")
    if r.get("weight_sparsity") is not None:
        lines.append(f"  weight sparsity {100 * r['weight_sparsity']:.2f} %   channel sparsity "
                     f"{100 * r['channel_sparsity']:.2f} %   params {r['params']:,}")
    tr = r.get("training") or {}
    if tr.get("catastrophic_overfitting"):
        lines.append(f"  [FLAG] catastrophic overfitting in training at epoch(s) "
                     f"{', '.join(map(str, tr['co_epochs']))}; this is the model of epoch "
                     f"{tr.get('selected_epoch')}, from before it")
    return "\n".join(lines)
