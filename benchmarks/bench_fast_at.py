"""Time to robustness: PGD-10 adversarial training against the fast single-step methods.

    python benchmarks/bench_fast_at.py --budget-min 60            # hours; resumable
    python benchmarks/bench_fast_at.py --budget-min 60 --out runs/fast-at   # same folder: resumes

The same model (4-bit Binary-Relax En1ResNet20, block noise 0.1, trade-off loss eq. (8) with
alpha 1, beta 8, one-cycle LR peaking at 0.1, eps 8/255) is trained on CIFAR-10

* by PGD-10 (step 2/255) for B minutes,
* by each fast method (FGSM-RS, N-FGSM, free AT with m = 8) for B/5 minutes,
* by the best fast method (highest validation PGD accuracy of its selected model: chosen on
  held-out training images, never the test set) for B minutes too.

A budget becomes a number of optimizer steps once, before any training: each method's steps
per second are measured on real batches (after a warm-up; the median of ``--calib-rounds``
interleaved rounds, since one slow moment of a shared machine once cut a method's measured
rate by a third) and the run is given ``budget * rate`` steps, spread evenly over the fewest
epochs that hold them (``train.max_batches`` caps each epoch at its share: a shuffled subset of
the batches). The plan is written to ``plan.json`` and reused, and every training is a robustq
run directory that resumes exactly, so the benchmark can be killed at any time
and started again with the same ``--out``. Training and evaluation wall time are measured,
not estimated, and shown.

Every model is then evaluated on the same first ``--n-eval`` test images (default 1,000):
PGD-20 (step eps/4, CE, one random start) with EOT over the block noise (``--eot``
gradient samples, accuracy over ``--draws`` noise draws; robustq's quick suite with 20 steps,
so the same engine and worst-case rules as ``robustq eval``), and the strong suite's worst case
(``robustq eval --suite strong``, on ``--strong-n`` images, default the same 1,000; it is
the costly part: hours per model on a CPU). Results go to ``<out>/<entry>/bench.json``.

The table: method, budget, the training time it took (measured: the epochs' seconds in
``metrics.csv``, validation excluded), images/s, epochs reached, clean, PGD-20, strong worst
case, and whether the catastrophic-overfitting guard fired.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from robustq.checkpoint import CHECKPOINT_FORMAT, atomic_write, load
from robustq.config import RunConfig, load_config
from robustq.data import Batches
from robustq.errors import ConfigError
from robustq.engine import TrainStep, batches_per_epoch, setup, train, training_summary
from robustq.build import load_any_model
from robustq.robustness import SuiteOptions, evaluate_suite
from robustq.runtime import keep_heap_pages

FAST = ("fgsm_rs", "n_fgsm", "free")
BASE = ["name=fast-at", "model.depth=20", "model.ensemble=1", "model.noise=0.1",
        "quant.scheme=4bit", "quant.method=br", "loss.name=tradeoff", "loss.alpha=1",
        "loss.beta=8", "adv.eps=8/255", "adv.step=2/255", "adv.steps=10", "train.lr=0.1",
        "train.schedule=onecycle", "train.peak=0.4", "train.co_guard=warn",
        "eval.eps=8/255"]


def base_overrides(args) -> list[str]:
    o = [*BASE, f"data.name={args.dataset}", f"data.val_size={args.val_size}",
         f"model.depth={args.depth}", f"train.batch_size={args.batch}",
         f"train.val_attack_steps={args.val_steps}"]
    if args.train_size:
        o.append(f"data.train_size={args.train_size}")
    return o


def method_cfg(args, method: str, epochs: int = 1, max_batches=None) -> RunConfig:
    o = base_overrides(args) + [f"adv.attack={method}", f"train.epochs={epochs}"]
    if max_batches is not None:
        o.append(f"train.max_batches={max_batches}")
    return load_config(None, o)


def steps_per_second(args, method: str) -> float:
    """Optimizer steps per second of ``method`` on real training batches, after warm-up."""
    cfg = method_cfg(args, method)
    s = setup(cfg)
    model = s.model.to(memory_format=torch.channels_last)
    step = TrainStep(cfg, model, torch.device("cpu"), "fp32", steps_per_epoch=10 ** 6)
    it = iter(Batches(s.train, cfg.train.batch_size, shuffle=True, pad=s.spec.pad, flip=s.spec.flip,
                      augment_data=True, generator=torch.Generator().manual_seed(1),
                      channels_last=True))
    model.train()
    step(model, *next(it))                      # warm-up
    started, calls = time.perf_counter(), 0
    while calls < args.calib_steps:
        step(model, *next(it))
        calls += 1
    return calls * step.replay / (time.perf_counter() - started)


def spread(steps: int, per_epoch_batches: int, replay: int = 1) -> tuple:
    """``(epochs, minibatches per epoch, train.max_batches or None)`` for ``steps`` optimizer
    steps when a full epoch draws ``per_epoch_batches`` minibatches, each replayed ``replay``
    times (free AT; its ``train.max_batches`` counts minibatches before the division by m)."""
    calls = max(1, steps // replay)
    epochs = -(-calls // per_epoch_batches)
    per_epoch = calls // epochs
    return epochs, per_epoch, None if per_epoch >= per_epoch_batches else per_epoch * replay


def plan_entry(args, method: str, minutes: float, rate: float) -> dict:
    """``minutes * rate`` optimizer steps, spread evenly over the fewest epochs that hold them:
    every epoch but a whole one is capped by ``train.max_batches`` (a shuffled subset of the
    batches each epoch), so no method loses the rest of its budget to rounding down to whole
    epochs."""
    cfg = method_cfg(args, method)
    s = setup(cfg)
    per_epoch_batches = batches_per_epoch(-(-len(s.train) // cfg.train.batch_size), cfg)
    replay = cfg.adv.replay if method == "free" else 1
    steps = max(1, int(minutes * 60 * rate))
    epochs, per_epoch, max_batches = spread(steps, per_epoch_batches, replay)
    return {"method": method, "budget_min": minutes, "steps_per_s": rate,
            "epochs": epochs, "max_batches": max_batches, "calls_per_epoch": per_epoch,
            "batch": cfg.train.batch_size, "n_train": len(s.train), "replay": replay}


def run_dir(out: Path, e: dict) -> Path:
    return out / f"{e['method']}-{e['budget_min']:g}min"


def train_entry(args, out: Path, e: dict) -> None:
    d = run_dir(out, e)
    cfg = method_cfg(args, e["method"], e["epochs"], e["max_batches"])
    ck = d / "checkpoint.pt"
    if ck.exists():
        state = load(ck, CHECKPOINT_FORMAT)
        if state["epoch"] >= cfg.train.epochs or state.get("stopped"):
            return
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / "config.yaml", cfg.to_yaml().encode())
    print(f"training {d.name}: {e['epochs']} epoch(s)"
          + (f" of {e['calls_per_epoch']} batches" if e["max_batches"] else ""), flush=True)
    train(cfg, d, torch.device("cpu"), resume=ck.exists(), progress=args.progress)


def pgd20(args, model, x, y) -> dict:
    """PGD-20 (step 2/255, one random start, CE) with EOT through robustq's evaluation engine:
    the quick suite with 20 steps, so an example wrong on its clean image counts as wrong."""
    opts = SuiteOptions(eot_samples=args.eot, draws=args.draws, noise_off=False,
                        allow_single_sample=min(args.eot, args.draws) == 1,   # asked for
                        attack_args={"pgd": {"steps": 20, "alpha": "2/255"}})
    return evaluate_suite(model, x, y, "quick", "8/255", opts, log=lambda *_: None)


def evaluate_entry(args, out: Path, e: dict) -> dict:
    d = run_dir(out, e)
    rec_path = d / "bench.json"
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    metrics = [r for r in _csv(d / "metrics.csv")]
    rec.update(method=e["method"], budget_min=e["budget_min"],
               train_seconds=sum(float(r["seconds"]) for r in metrics),
               img_per_s=e["steps_per_s"] * e["batch"],
               epochs_reached=len(metrics) * min(1.0, e["calls_per_epoch"] * e["replay"] * e["batch"]
                                                 / e["n_train"]),   # passes over the data
               **{k: v for k, v in training_summary(d).items()})
    if "pgd20" not in rec:
        cfg = load_config(d / "config.yaml")
        model, _ = load_any_model(d / "model.pt", "cpu")
        test = setup(cfg).test
        n = min(args.n_eval, len(test))
        x = test.images[:n].float().div_(255).contiguous(memory_format=torch.channels_last)
        y = test.labels[:n]
        started = time.perf_counter()
        r = pgd20(args, model.eval(), x, y)
        rec["clean"], rec["pgd20"], rec["n_eval"] = r["natural_acc"], r["attacks"]["pgd_ce"], n
        rec["fgsm"] = r["attacks"]["fgsm"]
        rec["pgd20_seconds"] = round(time.perf_counter() - started, 1)
        atomic_write(rec_path, (json.dumps(rec, indent=2) + "\n").encode())
    if "strong_worst" not in rec and args.strong_n > 0:
        results = d / "strong.results.json"
        done = subprocess.run([sys.executable, "-m", "robustq.cli", "eval", str(d), "--suite", "strong",
                               "--results", str(results), "--set", f"eval.n_eval={args.strong_n}",
                               "--set", "eval.eps=8/255",
                               *sum((["--set", s] for s in args.strong_set), [])])
        if done.returncode:
            sys.exit(f"bench_fast_at: the strong-suite evaluation of {d.name} stopped with exit code "
                     f"{done.returncode} (its message is above); run the same command to continue it")
        strong = json.loads(results.read_text())
        rec["strong_worst"], rec["strong_n"] = strong["robust_acc_worst"], strong["n_eval"]
        rec["strong_eot"], rec["strong_draws"] = strong["eot_samples"], strong["draws"]
        rec["strong_seconds"] = strong["suite_seconds"]   # with the sittings a resume continued
        atomic_write(rec_path, (json.dumps(rec, indent=2) + "\n").encode())
    return rec


def _csv(path: Path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _row(r: dict) -> tuple:
    """A record's table cells: method, budget, trained minutes, img/s, epochs, clean, PGD-20,
    strong worst case (None until measured), catastrophic overfitting."""
    return (r["method"], r["budget_min"], r["train_seconds"] / 60, r["img_per_s"], r["epochs_reached"],
            r.get("clean"), r.get("pgd20"), r.get("strong_worst"),
            "yes" if r["catastrophic_overfitting"] else "no")


def pct(v) -> str:
    return f"{100 * v:6.2f}" if isinstance(v, float) else f"{'-':>6}"


def table(recs: list[dict]) -> str:
    lines = ["method     budget  trained   img/s  epochs   clean  PGD-20  strong worst  CO",
             "---------  ------  -------  ------  ------  ------  ------  ------------  ---"]
    for r in recs:
        m, b, t, ips, ep, clean, pgd, strong, co = _row(r)
        lines.append(f"{m:<9}  {b:4g} m  {t:5.1f} m  {ips:6.1f}  {ep:6.2f}  {pct(clean)}  {pct(pgd)}  "
                     f"{pct(strong):>12}  {co}")
    return "\n".join(lines)


def table_md(recs: list[dict]) -> str:
    """The same table in Markdown, with the evaluation settings it rests on under it."""
    rows = ["| method | budget | trained | img/s | epochs | clean | PGD-20 | strong worst case | CO |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    cell = lambda v: f"{100 * v:.1f} %" if isinstance(v, float) else "–"
    for r in recs:
        m, b, t, ips, ep, clean, pgd, strong, co = _row(r)
        rows.append(f"| {m} | {b:g} min | {t:.1f} min | {ips:.1f} | {ep:.2f} | {cell(clean)} | "
                    f"{cell(pgd)} | {cell(strong)} | {co} |")
    notes = sorted({f"PGD-20 on {r['n_eval']} test images" for r in recs if "n_eval" in r}
                   | {f"strong suite on {r['strong_n']} test images, EOT {r['strong_eot']}, "
                      f"{r['strong_draws']} draws" for r in recs if "strong_eot" in r})
    return "\n".join(rows) + ("\n\n" + "; ".join(notes) + "." if notes else "")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-min", type=float, default=60.0, help="B: PGD-10's budget in minutes")
    p.add_argument("--out", default="runs/bench_fast_at")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--val-steps", type=int, default=10)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--methods", default=",".join(FAST))
    p.add_argument("--calib-steps", type=int, default=5, help="timed steps per calibration round")
    p.add_argument("--calib-rounds", type=int, default=3, help="interleaved rounds; the median rate is used")
    p.add_argument("--n-eval", type=int, default=1000)
    p.add_argument("--eot", type=int, default=4, help="EOT gradient samples for PGD-20")
    p.add_argument("--draws", type=int, default=4, help="noise draws for the accuracy")
    p.add_argument("--strong-n", type=int, default=1000, help="images for the strong suite (0: skip)")
    p.add_argument("--strong-set", action="append", default=[], help="extra --set for the strong eval")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("calib_steps", "calib_rounds", "eot", "draws", "n_eval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.budget_min <= 0:
        p.error(f"--budget-min must be > 0, got {args.budget_min:g}")
    try:   # a bad --strong-set would otherwise surface hours later, after the trainings
        load_config(None, base_overrides(args) + args.strong_set)
    except ConfigError as e:
        p.error(f"--strong-set: {e}")
    keep_heap_pages()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    plan_path = out / "plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
    else:
        b, methods = args.budget_min, ["pgd", *args.methods.split(",")]
        samples = {m: [] for m in methods}
        for _ in range(args.calib_rounds):      # interleaved: a slow moment hits every method
            for m in methods:
                samples[m].append(steps_per_second(args, m))
        rates = {m: statistics.median(v) for m, v in samples.items()}
        print("steps/s (median of " + str(args.calib_rounds) + " rounds): " +
              ", ".join(f"{m} {r:.3f}" for m, r in rates.items()), flush=True)
        plan = {"budget_min": b, "entries": [plan_entry(args, m, b if m == "pgd" else b / 5, rates[m])
                                             for m in methods], "rates": rates,
                "rate_samples": samples, "best": None}
        atomic_write(plan_path, (json.dumps(plan, indent=2) + "\n").encode())
    for e in plan["entries"]:
        train_entry(args, out, e)
    if plan["best"] is None:   # the best fast method by validation PGD accuracy, then B minutes
        fast = [e for e in plan["entries"] if e["method"] != "pgd"]
        val = lambda e: training_summary_val(run_dir(out, e))
        best = max(fast, key=val)
        plan["best"] = plan_entry(args, best["method"], plan["budget_min"], plan["rates"][best["method"]])
        atomic_write(plan_path, (json.dumps(plan, indent=2) + "\n").encode())
    train_entry(args, out, plan["best"])
    recs = [evaluate_entry(args, out, e) for e in [*plan["entries"], plan["best"]]]
    print(table(recs))
    atomic_write(out / "table.txt", (table(recs) + "\n").encode())
    atomic_write(out / "table.md", (table_md(recs) + "\n").encode())


def training_summary_val(d: Path) -> float:
    """Validation PGD accuracy of the model a run kept (its selected or last good epoch)."""
    rows = _csv(d / "metrics.csv")
    chosen = [r for r in rows if r["selected"] == "1"] or [r for r in rows if r["co"] != "1"] or rows
    return float(chosen[-1]["val_robust_acc"])


if __name__ == "__main__":
    main()
