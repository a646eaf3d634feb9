"""The ``robustq`` command. Argument parsing lives here only; the verbs call library functions.

    robustq run                      the main job: train + evaluate the quickstart config
    robustq train CONFIG [--set k=v ...] [--out DIR] [--resume]
    robustq eval RUN_DIR|MODEL_FILE [--suite paper|quick|strong|autoattack] [--curve] [--set eval.k=v ...]
    robustq sparsity|prune|export RUN_DIR|MODEL_FILE   (efficiency.py)

``python -m robustq`` is the same command; ``torchrun --nproc_per_node N -m robustq train|eval
...`` runs train and eval on N processes (``distributed.py``): every rank checks its inputs,
an error on any rank stops all of them with one sentence printed by rank 0, and only rank 0
writes files or prints.
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Optional

from . import __version__
from . import distributed
from .distributed import SINGLE, Dist, agree
from .errors import ConfigError, RobustqError


def _quickstart_path() -> Path:
    return Path(str(resources.files("robustq") / "configs" / "quickstart.yaml"))


def _prepare_run_dir(out: Optional[str], name: str) -> Path:
    """A fresh run directory; never one that already holds a run (nothing is overwritten)."""
    if out is not None:
        path = Path(out)
        if path.exists() and any((path / f).exists() for f in ("config.yaml", "checkpoint.pt")):
            raise ConfigError(f"{path} already holds a run; pass --resume to continue it or "
                              f"choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = Path("runs") / (f"{name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            path.mkdir(parents=True, exist_ok=False)  # atomic: parallel sweeps never share one
            return path
        except FileExistsError:
            continue
    raise ConfigError("could not create a new run directory under runs/; pass --out DIR")


def _say(d: Dist):
    """``print`` on rank 0, silence on the other ranks."""
    return print if d.main else (lambda *a, **k: None)


def _train_and_eval(config: Optional[Path], overrides: list[str], out: Optional[str],
                    resume: Optional[str], device_name: Optional[str], evaluate_after: bool,
                    quiet: bool, d: Dist = SINGLE) -> None:
    from .config import load_config
    from .engine import check_world, setup, train
    from .runtime import resolve_device
    from .checkpoint import atomic_write

    def prepare():
        if resume is not None:
            run_dir = Path(resume)
            if not (run_dir / "checkpoint.pt").exists():
                raise ConfigError(f"{run_dir} holds no checkpoint.pt to resume from; give the run "
                                  f"directory of an interrupted run")
            if overrides or config is not None:
                raise ConfigError("--resume continues a run with its saved config.yaml; drop the "
                                  "CONFIG and --set arguments")
            cfg = load_config(run_dir / "config.yaml")
        else:
            cfg = load_config(config, overrides)
        device = distributed.rank_device(resolve_device(device_name or cfg.device), d)
        s = setup(cfg)  # reads and verifies the data before anything is written
        check_world(len(s.train), cfg, d, device)
        return cfg, device, s

    cfg, device, s = agree(prepare, d)   # any rank's error stops every rank, nothing written
    distributed.check_same_config(cfg.to_yaml(), d)

    def make_dir() -> Path:
        run_dir = _prepare_run_dir(out, cfg.name)
        atomic_write(run_dir / "config.yaml", cfg.to_yaml().encode())
        return run_dir

    run_dir = Path(resume) if resume is not None else agree(make_dir, d, main_only=True)
    _say(d)(f"run directory: {run_dir}")
    train(cfg, run_dir, device, resume=resume is not None, progress=not quiet, prepared=s, dist=d)
    if evaluate_after:
        _evaluate_run(run_dir, [], device_name, d=d)
    _say(d)(f"run directory: {run_dir}")


def _evaluate_run(target: Path, overrides: list[str], device_name: Optional[str],
                  results_path: Optional[str] = None, surrogate: Optional[str] = None,
                  curve: Optional[str] = None, d: Dist = SINGLE) -> dict:
    from .evaluate import evaluate, format_table, write_results

    target, say = Path(target), _say(d)
    cfg, model, meta, test, device, out, surrogate_model, curve_eps = agree(
        lambda: _load_for_eval(target, overrides, device_name, results_path, surrogate, curve, d), d)
    distributed.check_same_config(cfg.to_yaml(), d)
    model_path = target / "model.pt" if target.is_dir() else target
    what = f"attacks {', '.join(cfg.eval.attacks)}" if cfg.eval.suite == "paper" else f"suite {cfg.eval.suite}"
    say(f"evaluating {model_path} on {cfg.data.name} ({min(len(test), cfg.eval.n_eval or len(test))} "
        f"test images; {what}" + (f"; {d.world} processes" if d.active else "") + ")", flush=True)
    results = evaluate(model, meta, cfg, test, device, log=say, surrogate=surrogate_model,
                       curve_eps=curve_eps, dist=d)
    if target.is_dir() and (target / "metrics.csv").is_file():
        from .engine import training_summary
        results["training"] = training_summary(target)  # states catastrophic overfitting
    if not d.main:
        return results
    _keep_other_suite(out, results.get("suite", "paper"))
    write_results(results, out)
    print(format_table(results))
    if curve_eps:
        from .robustness import plot_curve
        png = plot_curve(results["curve"], out.with_suffix(".curve.png"),
                         f"{results['model']} {results['quant']}: {results['curve']['attack']}")
        print(f"robustness curve: {png}")
    print(f"results: {out}")
    return results


def _load_for_eval(target: Path, overrides: list[str], device_name: Optional[str],
                   results_path: Optional[str], surrogate: Optional[str], curve: Optional[str],
                   d: Dist) -> tuple:
    """Everything an evaluation needs, read and checked before any work starts."""
    from .config import load_config
    from .data import load_dataset
    from .evaluate import load_any_model
    from .runtime import resolve_device

    if target.is_dir():
        model_path, cfg = target / "model.pt", load_config(target / "config.yaml", overrides)
        out = Path(results_path) if results_path else target / "results.json"
    else:
        model_path, cfg = target, None
        out = Path(results_path) if results_path else target.with_name(target.stem + ".results.json")
    device = distributed.rank_device(resolve_device(device_name or (cfg.device if cfg else "auto")), d)
    model, meta = load_any_model(model_path, device)
    if cfg is None:
        cfg = load_config(None, [f"data.name={meta.get('dataset', 'fashion-mnist-10k')}",
                                 f"quant.scheme={meta.get('quant', 'float')}",
                                 f"quant.method={meta.get('method', 'none')}", *overrides])
    _, test, _ = load_dataset(cfg.data.name, cfg.data.root)
    surrogate_model = load_any_model(surrogate, device)[0] if surrogate else None
    return cfg, model, meta, test, device, out, surrogate_model, _curve_eps(curve)


def _curve_eps(curve: Optional[str]) -> Optional[list[str]]:
    """``--curve`` alone: the default eps grid; ``--curve 0,2/255,8/255``: those values."""
    if curve is None:
        return None
    from .attacks import parse_eps
    from .robustness import DEFAULT_EPS

    values = list(DEFAULT_EPS) if curve == "default" else [v.strip() for v in curve.split(",") if v.strip()]
    try:
        bad = [v for v in values if not 0 <= parse_eps(v) <= 1]
    except (ValueError, ZeroDivisionError):
        bad = values
    if bad or not values:
        raise ConfigError(f"--curve takes comma-separated eps values in [0, 1] such as "
                          f"0,2/255,8/255, got {curve!r}")
    return values


def _keep_other_suite(out: Path, suite: str) -> None:
    """Before ``out`` is overwritten by another suite's record, keep the old one beside it as
    ``<stem>-<its suite>.json`` so that no evaluation is lost."""
    import json

    try:
        old = json.loads(out.read_text())
    except (OSError, ValueError):
        return
    old_suite = old.get("suite", "paper") if isinstance(old, dict) else "paper"
    if old_suite != suite:
        kept = out.with_name(f"{out.stem}-{old_suite}.json")
        out.replace(kept)
        print(f"kept the previous {old_suite} results as {kept}")


def _cmd_run(args) -> None:
    config = None if args.resume else _quickstart_path()
    _train_and_eval(config, args.overrides, args.out, args.resume, args.device,
                    not args.no_eval, args.quiet, args.dist)


def _cmd_train(args) -> None:
    if args.config is None and args.resume is None:
        raise ConfigError("train needs a CONFIG file (e.g. configs/quickstart.yaml) or "
                          "--resume RUN_DIR")
    _train_and_eval(Path(args.config) if args.config else None, args.overrides, args.out,
                    args.resume, args.device, not args.no_eval, args.quiet, args.dist)


def _cmd_eval(args) -> None:
    overrides = list(args.overrides)
    if args.suite is not None:
        overrides.append(f"eval.suite={args.suite}")
    if args.eot is not None:
        overrides.append(f"eval.eot_samples={args.eot}")
    if args.draws is not None:
        overrides.append(f"eval.draws={args.draws}")
    if args.allow_single_sample:
        overrides.append("eval.allow_single_sample=true")
    _evaluate_run(Path(args.target), overrides, args.device, args.results, args.surrogate,
                  args.curve, d=args.dist)


def _cmd_sparsity(args) -> None:
    from .efficiency.pipeline import analyse
    from .efficiency.prune import format_prune_report
    from .efficiency.sparsity import format_sparsity

    r = analyse(args.target, figures=not args.no_figures)
    print(format_sparsity(r))
    print(format_prune_report(r["pruning"]) if r["pruning"]["params_paper_pruned"] is not None
          else f"already pruned: {r['pruning']['params']:,} parameters")
    for f in r["figures"] + [r["json"]]:
        print(f"wrote {f}")
    if r["figure_note"]:
        print(f"robustq: note: {r['figure_note']}")


def _cmd_prune(args) -> None:
    from .efficiency.pipeline import format_sizes, prune_to_file
    from .efficiency.prune import format_prune_report

    r = prune_to_file(args.target, args.out, align=args.align)
    print(format_prune_report(r) if r["params_paper_pruned"] is not None else "already pruned")
    print(format_sizes(r))


def _cmd_export(args) -> None:
    from .efficiency.pipeline import export_to_file, format_sizes
    from .efficiency.prune import format_prune_report

    r = export_to_file(args.target, args.out, onnx=args.onnx, align=args.align)
    print(format_prune_report(r) if r["params_paper_pruned"] is not None else "already pruned")
    print(format_sizes(r))


_ALIGN_HELP = ("keep channel counts at multiples of N (default 1: remove every dead channel; "
               "8 can run faster in ONNX Runtime, see docs/efficiency.md)")


def _efficiency_verbs(sub) -> None:
    s = sub.add_parser("sparsity", help="sparsity report of a run or model file: per layer, what "
                                        "pruning removes, sizes; writes JSON and PNG figures")
    s.add_argument("target", help="run directory or model file")
    s.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    s.set_defaults(func=_cmd_sparsity)
    pr = sub.add_parser("prune", help="physically prune dead channels (same outputs); writes a "
                                      "smaller float32 .safetensors model")
    pr.add_argument("target", help="run directory or model file")
    pr.add_argument("--out", help="output file (default: <model>.pruned.safetensors)")
    pr.add_argument("--align", type=int, default=1, metavar="N", help=_ALIGN_HELP)
    pr.set_defaults(func=_cmd_prune)
    ex = sub.add_parser("export", help="prune and write one safetensors file with packed low-bit "
                                       "weights (loads with robustq.load); --onnx also writes ONNX")
    ex.add_argument("target", help="run directory or model file")
    ex.add_argument("--out", help="output file (default: <model>.safetensors)")
    ex.add_argument("--onnx", action="store_true", help="also write <out>.onnx and check it "
                                                        "against onnxruntime (needs robustq[onnx])")
    ex.add_argument("--align", type=int, default=1, metavar="N", help=_ALIGN_HELP)
    ex.set_defaults(func=_cmd_export)


def _cmd_data_list(args) -> None:
    from .data.inventory import format_survey, survey

    print(format_survey(survey(verify=args.verify)))


def _cmd_data_fetch(args) -> None:
    from .data import get_spec, load_dataset
    from .data.fetch import fetch

    spec = get_spec(args.name)
    dest = fetch(spec, args.root, mirror=args.mirror, timeout=args.timeout,
                 log=lambda msg: print(msg, flush=True))
    train, test, _ = load_dataset(spec.name, dest)  # content check: shapes, counts, labels
    print(f"{spec.name}: {len(train)} train + {len(test)} test images verified in {dest}")


def _add_data_verb(sub) -> None:
    """``robustq data list`` / ``robustq data fetch NAME``."""
    d = sub.add_parser("data", help="list the datasets and where they are; fetch one")
    d.set_defaults(func=lambda args: d.print_help())
    dsub = d.add_subparsers(dest="data_action", metavar="ACTION")
    ls = dsub.add_parser("list", help="each dataset, where it was found, its counts, or how "
                                      "to get it")
    ls.add_argument("--verify", action="store_true", help="also read and check every dataset "
                                                          "found (slow for the large ones)")
    ls.set_defaults(func=_cmd_data_list)
    f = dsub.add_parser("fetch", help="download a dataset from its home page, check the "
                                      "published MD5s, unpack it")
    f.add_argument("name", help="dataset name (robustq data list)")
    f.add_argument("--root", help="folder to put it in (default: $ROBUSTQ_DATA/NAME or "
                                  "~/.local/share/robustq/NAME)")
    f.add_argument("--mirror", metavar="URL", help="base URL to download the official files "
                                                   "from instead of the home page")
    f.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for a connection or for data (default 30)")
    f.set_defaults(func=_cmd_data_fetch)


def _common(sp, with_run_dir: bool = True) -> None:
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                    help="where to compute (default: the config's device, auto)")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    if with_run_dir:
        sp.add_argument("--out", help="run directory (default: runs/<name>-<time>)")
        sp.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
        sp.add_argument("--no-eval", action="store_true", help="train only")


def build_parser() -> argparse.ArgumentParser:
    """One subparser per verb; each sets ``func``, the handler that ``main`` calls."""
    p = argparse.ArgumentParser(prog="robustq", description="Adversarially robust, low-bit, "
                                "pruned image classifiers (Binary-Relax EnResNets).")
    p.add_argument("--version", action="version", version=f"robustq {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    r = sub.add_parser("run", help="the main job: robust 4-bit En1ResNet20 on the bundled data, "
                                   "trained, attacked and summarised (minutes on a laptop)")
    _common(r)
    r.set_defaults(func=_cmd_run)
    t = sub.add_parser("train", help="train (and evaluate) the experiment in a YAML config")
    t.add_argument("config", nargs="?", help="YAML config, e.g. configs/quickstart.yaml")
    _common(t)
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("eval", help="evaluate a run directory or a model file; writes results.json")
    e.add_argument("target", help="run directory or model file")
    e.add_argument("--results", help="where to write the results JSON")
    e.add_argument("--suite", choices=["paper", "quick", "strong", "autoattack"],
                   help="paper (default: the paper's A1-A3, one noise sample), quick, strong "
                        "(worst case of PGD-CE/CW and C&W-L2 with EOT, masking checks) or "
                        "autoattack (needs robustq[autoattack]); see docs/robustness.md")
    e.add_argument("--eot", type=int, metavar="N", help="EOT gradient samples for a randomized "
                   "model (default: the suite's, 10 for strong, 20 for autoattack)")
    e.add_argument("--draws", type=int, metavar="K", help="forward draws averaged for a "
                   "randomized model's accuracy (default: the suite's)")
    e.add_argument("--allow-single-sample", action="store_true",
                   help="accept one noise sample per gradient/prediction on a randomized model")
    e.add_argument("--curve", nargs="?", const="default", metavar="EPS,...",
                   help="also measure accuracy vs eps (PGD-CE-20) and draw it as a PNG "
                        "(default grid 0..16/255)")
    e.add_argument("--surrogate", metavar="MODEL_FILE",
                   help="surrogate model for the transfer check (default: the model, noise off)")
    _common(e, with_run_dir=False)
    e.set_defaults(func=_cmd_eval)
    _efficiency_verbs(sub)
    _add_data_verb(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    from .resume import Interrupted
    from .runtime import keep_heap_pages
    keep_heap_pages()  # a process-wide allocator setting: here, never at import
    args.dist = d = distributed.init()   # torchrun's process group, or the single process
    try:
        args.func(args)
    except Interrupted as e:
        if d.main:
            print(f"\nrobustq: {e}", file=sys.stderr)
        return e.exit_code
    except RobustqError as e:
        if d.main:
            print(f"robustq: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nrobustq: interrupted; the last finished epoch is saved: continue with "
              "robustq train --resume RUN_DIR", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
