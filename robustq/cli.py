"""The ``robustq`` command. Argument parsing lives here only; the verbs call library functions.

    robustq run                      the main job: train + evaluate the quickstart config
    robustq train CONFIG|NAME [--set k=v ...] [--out DIR] [--resume RUN_DIR] [--threads N]
    robustq eval RUN_DIR|MODEL_FILE [--suite paper|quick|strong|autoattack|blackbox] [--curve] [--set eval.k=v ...]
    robustq eval --model MODULE:FACTORY [--weights FILE] --dataset NAME [--suite ...]
    robustq sparsity|prune|export RUN_DIR|MODEL_FILE   (efficiency/pipeline.py)
    robustq config list|show NAME|keys                 bundled configs, every config key
    robustq sweep SWEEP.yaml... --out DIR [--workers N] [--shard K/N] [--dry-run]
    robustq report DIR... [--out FILE]
    robustq data list|fetch NAME

Each verb calls one library function (``jobs.py``, ``efficiency/pipeline.py``, ``data``) with
typed arguments. ``python -m robustq`` is the same command; ``torchrun --nproc_per_node N -m
robustq train|eval ...`` runs train and eval on N processes (``distributed.py``): an error on
any rank stops all of them with one sentence printed by rank 0, and only rank 0 writes or prints.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Optional

from . import __version__
from .cli_sweep import add_sweep_verbs
from .errors import ConfigError, RobustqError, sentence
from .interrupted import State
from . import distributed


def _quickstart_path() -> Path:
    from .config_catalog import bundled_configs
    return bundled_configs()["quickstart"]


def _use_threads(requested: Optional[int], say=print) -> None:
    """Size the thread pool from the CPUs this process may use and say so in the header."""
    from .threads import apply_threads, choose_threads
    choice = choose_threads(requested)
    apply_threads(choice)
    say(choice.header(), flush=True)


def _curve_eps(curve: Optional[str]) -> Optional[list]:
    """``--curve`` alone: the default eps grid; ``--curve-eps 0,2/255,8/255``: those values."""
    if curve is None:
        return None
    from .eps import Eps
    from .robustness import DEFAULT_EPS

    texts = [v.strip() for v in curve.split(",") if v.strip()]
    try:
        values = list(DEFAULT_EPS) if curve == "default" else [Eps(v) for v in texts]
    except ValueError:
        values = []
    if not values or not all(0 <= v <= 1 for v in values):
        raise ConfigError(f"--curve takes comma-separated eps values in [0, 1] such as "
                          f"0,2/255,8/255, got {curve!r}")
    return values


def _cmd_run(args) -> None:
    from .jobs import train_and_evaluate
    args.state.no_eval = args.no_eval
    _use_threads(args.threads, distributed.say(args.dist))  # before any parallel work of ours, so its load is the others'
    train_and_evaluate(None if args.resume else _quickstart_path(), args.overrides, out=args.out,
                       resume=args.resume, device=args.device, evaluate_after=not args.no_eval,
                       progress=not args.quiet, state=args.state, dist=args.dist,
                       log=distributed.say(args.dist))


def _cmd_train(args) -> None:
    from .config_catalog import bundled_configs, resolve_config
    from .jobs import train_and_evaluate

    if args.config is None and args.resume is None:
        raise ConfigError(f"train needs a CONFIG file or the name of a bundled config "
                          f"({', '.join(bundled_configs())}), or --resume RUN_DIR")
    if args.config is not None and args.resume is not None:
        raise ConfigError("--resume continues a run with its saved config.yaml; drop the "
                          "CONFIG argument")
    config = resolve_config(args.config) if args.config else None
    args.state.no_eval = args.no_eval
    _use_threads(args.threads, distributed.say(args.dist))
    train_and_evaluate(config, args.overrides, out=args.out, resume=args.resume,
                       device=args.device, evaluate_after=not args.no_eval,
                       progress=not args.quiet, state=args.state, dist=args.dist,
                       log=distributed.say(args.dist))


def _cmd_config(args) -> None:
    from .config_catalog import bundled_configs, config_keys, describe, format_keys, resolve_config

    if args.config_action == "list":
        configs = bundled_configs()
        width = max(map(len, configs))
        for name, path in configs.items():
            print(f"{name.ljust(width)}  {describe(path)}")
        print(f"(in {next(iter(configs.values())).parent}; use one with: robustq train NAME)")
    elif args.config_action == "show":
        print(resolve_config(args.name).read_text(), end="")
    else:
        print(format_keys(config_keys()))


def _cmd_eval(args) -> None:
    from .jobs import evaluate_target
    say = (lambda *a, **k: None) if args.quiet else distributed.say(args.dist)
    _use_threads(args.threads, say)
    curve = _curve_eps(args.curve_eps or ("default" if args.curve else None))
    evaluate_target(args.target, model_spec=args.model, weights=args.weights, dataset=args.dataset,
                    overrides=args.overrides, suite=args.suite, eot=args.eot, draws=args.draws,
                    allow_single_sample=args.allow_single_sample, device=args.device,
                    results=args.results, surrogate=args.surrogate, curve=curve,
                    progress=not args.quiet, log=distributed.say(args.dist), dist=args.dist,
                    state=args.state)


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

    if args.onnx:  # before anything is written, not after the .safetensors
        from .extras import require
        require("onnx", "export --onnx")
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
    ls.add_argument("--verify", action="store_true", help="also read and check every dataset and "
                                                          "the published MD5s of its files (slow for the large ones)")
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


def _device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _common(sp, with_run_dir: bool = True, example: str = "train.epochs=10",
            quiet: str = "no progress bars") -> None:
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a config value, e.g. --set {example} (repeatable; "
                         f"robustq config keys lists them)")
    sp.add_argument("--device", type=_device, default=None, metavar="auto|cpu|cuda|cuda:N",
                    help="where to compute (default: the config's device, auto)")
    sp.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                    help="CPU threads (default: the CPUs this process may use, less those "
                         "busy with other processes; see the README on sharing a machine)")
    sp.add_argument("--quiet", action="store_true", help=quiet)
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
    t.add_argument("config", nargs="?", help="YAML config file, or the name of a bundled one "
                   "(robustq config list), e.g. quickstart")
    _common(t)
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("eval", help="evaluate a run directory, a model file or your own "
                                    "nn.Module (--model); writes results.json")
    e.add_argument("target", nargs="?", help="run directory or model file (model.pt, an "
                                             "exported .safetensors or .onnx)")
    e.add_argument("--model", metavar="MODULE:FACTORY", help="evaluate the nn.Module that "
                   "FACTORY() in your module returns (inputs in [0, 1]), e.g. mypkg.nets:resnet18")
    e.add_argument("--weights", metavar="FILE", help="its weights: a .safetensors file or a "
                   "state_dict saved with torch.save (loaded without unpickling code)")
    e.add_argument("--dataset", metavar="NAME", help="the dataset it classifies (robustq data list)")
    e.add_argument("--results", help="where to write the latest results JSON")
    e.add_argument("--suite", choices=["paper", "quick", "strong", "autoattack", "blackbox"],
                   help="paper (default: eval.attacks, the paper's A1-A3, one noise sample), quick, "
                        "strong (+ PGD-CE/CW and C&W-L2 with EOT, masking checks), autoattack "
                        "(needs robustq[autoattack]) or blackbox (no gradients: the one for ONNX); "
                        "see docs/robustness.md")
    e.add_argument("--eot", type=int, metavar="N", help="EOT gradient samples for a randomized "
                   "model (default: the suite's, 10 for strong, 20 for autoattack)")
    e.add_argument("--draws", type=int, metavar="K", help="forward draws averaged for a "
                   "randomized model's accuracy (default: the suite's)")
    e.add_argument("--allow-single-sample", action="store_true",
                   help="accept one noise sample per gradient/prediction on a randomized model")
    e.add_argument("--curve", action="store_true",
                   help="also measure accuracy vs eps (PGD-CE-20) and draw it as a PNG "
                        "(default grid 0..16/255; needs robustq[plot])")
    e.add_argument("--curve-eps", metavar="EPS,...", help="the curve at these eps values "
                   "instead, e.g. 0,2/255,8/255 (implies --curve)")
    e.add_argument("--surrogate", metavar="MODEL_FILE",
                   help="surrogate model for the transfer attacks (default: the model, noise off)")
    _common(e, with_run_dir=False, example="eval.n_eval=1000",
            quiet="no progress lines (the results table and paths are still printed)")
    e.set_defaults(func=_cmd_eval)
    _efficiency_verbs(sub)
    _add_config_verb(sub)
    add_sweep_verbs(sub)
    _add_data_verb(sub)
    return p


def _add_config_verb(sub) -> None:
    """``robustq config list`` / ``show NAME`` / ``keys``."""
    c = sub.add_parser("config", help="the bundled configs, and every config key with its "
                                      "default, type and meaning")
    c.set_defaults(func=lambda args: c.print_help())
    csub = c.add_subparsers(dest="config_action", metavar="ACTION")
    csub.add_parser("list", help="the configs shipped with robustq (robustq train NAME)"
                    ).set_defaults(func=_cmd_config)
    sh = csub.add_parser("show", help="print a bundled config (or a config file)")
    sh.add_argument("name", help="bundled config name, e.g. quickstart")
    sh.set_defaults(func=_cmd_config)
    csub.add_parser("keys", help="every key --set and the YAML files accept: type, default, "
                                 "help").set_defaults(func=_cmd_config)


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    from .interrupted import note
    from .runtime import keep_heap_pages
    keep_heap_pages()  # a process-wide allocator setting: here, never at import
    args.state = State(args.verb, list(sys.argv[1:] if argv is None else argv))
    from .resume import Interrupted
    args.dist = d = distributed.init()   # torchrun's process group, or the single process
    finished = False
    try:
        args.func(args)
        finished = True
    except Interrupted as e:   # Ctrl-C/SIGTERM during training: a checkpoint was written
        if d.main:
            print(f"\nrobustq: {e}", file=sys.stderr)
        return e.exit_code
    except (RobustqError, OSError, UnicodeError, RecursionError, MemoryError) as e:
        if d.main:
            print(f"robustq: error: {sentence(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.verb == "sweep":
            print("\nrobustq: interrupted; finished points and the last checkpoints are kept: run "
                  "the same robustq sweep command to continue", file=sys.stderr)
        else:
            print(f"\nrobustq: interrupted; {note(args.state)}", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
