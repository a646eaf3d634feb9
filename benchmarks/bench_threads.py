"""Training speed by thread count, on an idle machine and beside one other busy process.

    python benchmarks/bench_threads.py                       # PGD-10 AT, batch 128, 32x32
    python benchmarks/bench_threads.py --batch 8 --size 16 --steps 1 --rounds 1   # a smoke run

What it answers: does robustq's thread choice (``robustq.threads.choose_threads``: the CPUs
this process may use, less those other processes keep busy) train faster than PyTorch's
default pool (one thread per core) when the machine is shared? For each scenario, and for
each thread count in {PyTorch's default, robustq's choice, 1}, interleaved round by round,
it times ``engine.TrainStep`` (the code ``robustq train`` runs) on an En1ResNet20, BR 4-bit,
block noise 0.1, with PGD-10 adversarial training (``--natural``: plain training), and reports
the median images/second over the rounds.

* ``idle``: nothing else started by the benchmark (the machine's load average is printed:
  on a shared machine "idle" is only as idle as the others let it be);
* ``busy``: one single-threaded busy loop (a Python ``while True: pass``, the shape of a
  sweep worker running with one thread) runs for the whole scenario. robustq's choice is
  measured anew while it runs, as ``robustq train`` would at start.

Run it on an otherwise idle machine; the numbers in the README come from the command
written next to them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from robustq.build import Arch, build_model
from robustq.config import load_config
from robustq.engine import TrainStep
from robustq.runtime import keep_heap_pages, resolve_precision
from robustq.threads import affinity_cpus, choose_threads

SPIN = "while True: pass"


def make_step(args) -> tuple:
    """A TrainStep on En1ResNet20 with one fixed random batch (CPU, channels_last)."""
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    loss = ["loss.name=natural"] if args.natural else ["loss.name=at", "loss.alpha=0", "loss.beta=1"]
    cfg = load_config(None, loss)
    model, _ = build_model(Arch(20, 1, 0.1, 3, 10, args.size), "4bit", "paper")
    model = model.to(memory_format=torch.channels_last).train()
    step = TrainStep(cfg, model, cpu, resolve_precision("auto", cpu))
    x = torch.rand(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    return lambda: step(model, x, y)[0], args.batch


def rate(step, batch: int, threads: int, n: int) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for _ in range(n):
        loss = step()
    float(loss)
    return n * batch / (time.perf_counter() - t0)


def scenario(name: str, step, batch: int, default: int, args) -> list[tuple]:
    choice = choose_threads(None)          # measured now, as `robustq train` does at start
    print(f"{name}: load average {os.getloadavg()[0]:.2f}; robustq chose {choice.header()}",
          flush=True)
    counts = {"PyTorch default": default, "robustq's choice": choice.threads, "fixed": 1}
    for threads in dict.fromkeys(counts.values()):  # warm-up, each pool size once
        rate(step, batch, threads, args.warmup)
    rates: dict[str, list[float]] = {k: [] for k in counts}
    for _ in range(args.rounds):
        for label, threads in counts.items():
            rates[label].append(rate(step, batch, threads, args.steps))
    return [(name, label, counts[label], statistics.median(r), r) for label, r in rates.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description="training img/s by thread count, idle vs shared")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--natural", action="store_true", help="natural training instead of PGD-10")
    ap.add_argument("--only", choices=["idle", "busy"], help="run one scenario")
    args = ap.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)   # robustq's choice, not an inherited override
    keep_heap_pages()
    default = torch.get_num_threads()
    step, batch = make_step(args)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"{cpu}; {len(affinity_cpus())} usable CPUs; torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.2f} at start; {'natural' if args.natural else 'PGD-10 AT'}, "
          f"batch {batch}, {args.size}x{args.size}; median of {args.rounds} rounds x {args.steps} steps")
    rows = []
    if args.only in (None, "idle"):
        rows += scenario("no other process started", step, batch, default, args)
    if args.only in (None, "busy"):
        spin = subprocess.Popen([sys.executable, "-c", SPIN])
        try:
            time.sleep(0.5)
            rows += scenario("+ 1 single-threaded busy process", step, batch, default, args)
        finally:
            spin.kill()
            spin.wait()
    print("| scenario | threads | training img/s (median) | per round |\n| --- | --- | --- | --- |")
    for name, label, threads, med, r in rows:
        print(f"| {name} | {threads} ({label}) | {med:.1f} | {', '.join(f'{v:.1f}' for v in r)} |")


if __name__ == "__main__":
    main()
