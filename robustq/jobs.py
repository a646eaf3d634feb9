"""The ``run`` / ``train`` / ``eval`` verbs as library functions with typed arguments.

``cli.py`` parses the command line and calls these; so can a script or a sweep launcher.
``evaluate_target`` evaluates a run directory, a model file robustq wrote (``model.pt``, an
exported ``.safetensors``, an ``.onnx``) or any ``nn.Module`` from ``MODULE:FACTORY``, then
merges the efficiency figures (``efficiency.pipeline.efficiency_keys``) into the record and
writes it: its own ``eval-<suite>-<time>.json`` and the latest as ``results.json``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .checkpoint import atomic_write
from .distributed import SINGLE, Dist, agree, check_same_config, rank_device
from .errors import ConfigError


def _robustq_files(path: Path) -> list[str]:
    """The files in ``path`` that robustq writes (a run's own, models, exports, results)."""
    from .checkpoint import RUN_FILES
    return sorted(p.name for p in path.iterdir() if p.name in RUN_FILES or p.suffix in
                  (".pt", ".safetensors", ".onnx") or p.name.endswith(("results.json", ".sparsity.json")))


def prepare_run_dir(out: Optional[str | Path], name: str) -> Path:
    """A fresh, writable run directory; never one that holds robustq files (nothing is
    overwritten)."""
    from .checkpoint import check_writable

    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} is a file; give a folder for the run")
        found = _robustq_files(path) if path.is_dir() else []
        if found:
            raise ConfigError(f"{path} already holds a run ({', '.join(found[:3])}); pass --resume "
                              f"{path} to continue it or choose another --out")
        check_writable(path, "the run directory")
        return path
    check_writable("runs", "run directories")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = Path("runs") / (f"{name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            path.mkdir(parents=True, exist_ok=False)  # atomic: parallel sweeps never share one
            return path
        except FileExistsError:
            continue
    raise ConfigError("could not create a new run directory under runs/; pass --out DIR")


def train_and_evaluate(config: Optional[Path], overrides: Sequence[str] = (), *,
                       out: Optional[str] = None, resume: Optional[str] = None,
                       device: Optional[str] = None, evaluate_after: bool = True,
                       progress: bool = True, log: Callable[[str], None] = print,
                       state=None, dist: Dist = SINGLE) -> Path:
    """``robustq run`` / ``robustq train``: train into a new (or resumed) run directory, then
    evaluate it with its config's suite; returns the run directory. ``state`` (the CLI's
    ``interrupted.State``) records how far it got, for the Ctrl-C message. Under torchrun
    (``dist``) every rank checks its inputs (one rank's error stops all), rank 0 alone makes
    the run directory and writes, and the ranks train one DDP model."""
    from .engine import train

    cfg, dev, s, run_dir, fresh = agree(
        lambda: _prepare_training(config, overrides, resume, device, evaluate_after, dist), dist)
    check_same_config(cfg.to_yaml(), dist)
    fresh = agree(lambda: fresh, dist, main_only=True)   # rank 0's disk decides
    if state is not None:
        state.epochs = cfg.train.epochs
    if resume is None:
        created = out is None or not Path(out).exists()
        run_dir = agree(lambda: _new_run_dir(out, cfg), dist, main_only=True)
        if state is not None:
            state.created = created
    elif fresh:
        log(f"{run_dir} has no checkpoint yet (stopped during its first epoch); starting it "
            f"from the beginning")
    if state is not None:
        state.run_dir = run_dir
    log(f"run directory: {run_dir}")
    train(cfg, run_dir, dev, resume=not fresh, progress=progress, prepared=s, dist=dist)
    if state is not None:
        state.trained = True
    if evaluate_after:
        evaluate_target(run_dir, device=device, progress=progress, log=log, dist=dist, state=state)
    log(f"run directory: {run_dir}")
    return run_dir


def _new_run_dir(out, cfg) -> Path:
    run_dir = prepare_run_dir(out, cfg.name)
    atomic_write(run_dir / "config.yaml", cfg.to_yaml().encode())
    return run_dir


def _prepare_training(config, overrides, resume, device, evaluate_after, dist: Dist):
    """``(cfg, device, setup, run dir to resume or None, fresh)``, every input checked and the
    data read before anything is written."""
    from .checkpoint import check_writable
    from .config import load_config
    from .engine import check_world, setup
    from .runtime import resolve_device

    fresh, run_dir = resume is None, None
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} holds no config.yaml and no checkpoint.pt to resume "
                              f"from; give the run directory of an interrupted run")
        if overrides or config is not None:
            raise ConfigError("--resume continues a run with its saved config.yaml; drop the "
                              "CONFIG and --set arguments")
        cfg = load_config(run_dir / "config.yaml")
        # killed before its first checkpoint: nothing to continue, so the run starts afresh
        fresh = not (run_dir / "checkpoint.pt").exists()
        if dist.main:
            check_writable(run_dir, "the run's checkpoint")
    else:
        cfg = load_config(config, overrides)
    dev = rank_device(resolve_device(device or cfg.device), dist)
    if evaluate_after:
        _require_extras(cfg)   # the evaluation after training must not fail for a package
    s = setup(cfg)  # reads and verifies the data before anything is written
    check_world(len(s.train), cfg, dist, dev)
    return cfg, dev, s, run_dir, fresh


def _require_extras(cfg) -> None:
    """Fail before any work when the evaluation will need an extra that is not installed."""
    from .extras import require
    if cfg.eval.suite == "autoattack":
        require("autoattack", "eval --suite autoattack")


def _eval_updates(suite, eot, draws, allow_single_sample) -> dict:
    e = {"suite": suite, "eot_samples": eot, "draws": draws,
         "allow_single_sample": True if allow_single_sample else None}
    return {"eval": {k: v for k, v in e.items() if v is not None}}


def _load_target(target, model_spec, weights, dataset, overrides, updates, device_name,
                 dist: Dist = SINGLE):
    """``(model, meta, cfg, device, latest results path)`` for whatever is to be evaluated."""
    from .build import load_any_model, load_foreign
    from .config import load_config
    from .runtime import resolve_device

    if model_spec is not None:
        if target is not None:
            raise ConfigError("give either a run directory / model file or --model, not both")
        if dataset is None:
            raise ConfigError("--model needs --dataset NAME, the dataset the model classifies "
                              "(robustq data list)")
        cfg = load_config(None, overrides, base=_base(dataset), updates=updates)
        device = rank_device(resolve_device(device_name or cfg.device), dist)
        model, meta = load_foreign(model_spec, weights, dataset, device)
        return model, meta, cfg, device, Path(f"{model_spec.replace(':', '.')}.results.json")
    if target is None:
        raise ConfigError("give a run directory, a model file, or --model MODULE:FACTORY")
    target = Path(target)
    if dataset is not None:
        updates = {**updates, "data": {"name": dataset}}
    if target.is_dir():
        cfg = load_config(target / "config.yaml", overrides, updates=updates)
        device = rank_device(resolve_device(device_name or cfg.device), dist)
        model, meta = load_any_model(target / "model.pt", device)
        return model, {**meta, "name": target.resolve().name}, cfg, device, target / "results.json"
    device = rank_device(resolve_device(device_name or "auto"), dist)
    model, meta = load_any_model(target, device, dataset)
    base = _base(dataset or meta.get("dataset", "fashion-mnist-10k"), meta.get("quant", "float"),
                 meta.get("method", "none"))
    if target.suffix == ".onnx" and "suite" not in updates["eval"] and \
            not any(o.split("=", 1)[0].strip() == "eval.suite" for o in overrides):
        base["eval"] = {"suite": "blackbox"}   # the only suite that needs no gradients
    cfg = load_config(None, overrides, base=base, updates=updates)
    return model, {**meta, "name": meta.get("name", target.name)}, cfg, device, \
        target.with_name(target.stem + ".results.json")


def _base(dataset: str, quant: str = "float", method: str = "none") -> dict:
    return {"data": {"name": dataset}, "quant": {"scheme": quant, "method": method}}


def evaluate_target(target: Optional[str | Path] = None, *, model_spec: Optional[str] = None,
                    weights: Optional[str | Path] = None, dataset: Optional[str] = None,
                    overrides: Sequence[str] = (), suite: Optional[str] = None,
                    eot: Optional[int] = None, draws: Optional[int] = None,
                    allow_single_sample: bool = False, device: Optional[str] = None,
                    results: Optional[str | Path] = None, surrogate: Optional[str | Path] = None,
                    curve: Optional[list] = None, progress: bool = True,
                    log: Callable[[str], None] = print, dist: Dist = SINGLE, state=None) -> dict:
    """``robustq eval``: evaluate, merge the efficiency keys, write the records; the record.
    Under torchrun (``dist``) the test images are split across the ranks (one record, as a
    single process's) and rank 0 alone writes."""
    from .build import check_input, load_any_model
    from .data import load_dataset
    from .efficiency.pipeline import efficiency_keys
    from .errors import require
    from .evaluate import evaluate, suite_options
    from .robustness.run import check_ready, get_suite

    updates = _eval_updates(suite, eot, draws, allow_single_sample)
    model, meta, cfg, dev, out = agree(lambda: _load_target(
        target, model_spec, weights, dataset, overrides, updates, device, dist), dist)
    check_same_config(cfg.to_yaml(), dist)
    check_input(model, cfg.data.name, meta["name"])
    out = Path(results) if results else out
    # before any work: an evaluation must not die at its last step on an unwritable path
    from .checkpoint import check_output_file
    inputs = tuple(Path(p) for p in (target, surrogate, weights) if p is not None and Path(p).is_file())
    if target is not None and Path(target).is_dir():
        inputs += (Path(target) / "model.pt",)
    agree(lambda: check_output_file(out, "--results", inputs=inputs), dist, main_only=True)
    if curve:
        require("matplotlib", "the robustness curve PNG (--curve)")
    surrogate_model = load_any_model(surrogate, dev)[0] if surrogate else None
    check_ready(model, get_suite(cfg.eval.suite), cfg.eval.eps,   # before any work
                suite_options(cfg, surrogate=surrogate_model, curve_eps=curve))
    _, test, _ = load_dataset(cfg.data.name, cfg.data.root, check=cfg.data.verify)
    n = min(len(test), cfg.eval.n_eval or len(test))
    log(f"evaluating {meta['name']} on {cfg.data.name} ({n} test images; suite {cfg.eval.suite})")
    if not getattr(model, "differentiable", True):
        log("an ONNX model runs through onnxruntime, which gives no gradients: clean accuracy "
            "and black-box attacks only")
    from .robustness.journal import Place
    journal = Place(out, cfg.eval.suite)     # progress kept beside the results until they are written
    if state is not None:
        state.partial = journal
    from .resume import TermAsInterrupt
    with TermAsInterrupt():
        r = evaluate(model, meta, cfg, test, dev, log, surrogate=surrogate_model, curve_eps=curve,
                     progress=progress and dist.main, dist=dist, journal=journal)
    r.update(efficiency_keys(model, meta))
    if target is not None and Path(target).is_dir() and (Path(target) / "metrics.csv").is_file():
        from .engine import training_summary
        r["training"] = training_summary(Path(target))  # states catastrophic overfitting
    if dist.main:
        _write(r, out, log)
        journal.remove()
    return r


def _write(r: dict, out: Path, log: Callable[[str], None]) -> None:
    """The curve's PNG (if any), this evaluation's record and ``results.json``; the table."""
    from .evaluate import format_table, write_results
    log(format_table(r))   # shown first: a failed write loses nothing
    if "curve" in r:
        from .robustness import plot_curve
        png = plot_curve(r["curve"], out.with_suffix(".curve.png"),
                         f"{r['name']}: {r['curve']['attack']}")
        r["curve_png"] = str(png)
    record = write_results(r, out)
    if "curve" in r:
        log(f"robustness curve: {r['curve_png']}")
    log(f"results: {out} (this evaluation: {record.name})")
