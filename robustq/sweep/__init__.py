"""Sweeps: many runs from one file, spread over processes and machines, each point once.

``load_sweeps`` expands sweep files into validated points (``spec.py``); ``run_sweep`` runs
them with ``workers`` processes on this machine (threads split between them) on the points of
one shard, each point claimed atomically in the output folder (``claims.py``) and trained,
resumed and evaluated in its own run directory (``runner.py``). Several machines (Slurm job
arrays, Kubernetes indexed jobs) run the same command with ``--shard K/N``, or all with the
same shard sharing the folder: the claims keep them apart either way.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Optional

from .runner import check_data, check_existing, evaluate_point, run_point, status, work
from .spec import Point, load_sweep, load_sweeps, parse_shard, point_name, shard

__all__ = ["Point", "load_sweep", "load_sweeps", "parse_shard", "point_name", "shard",
           "run_sweep", "status", "evaluate_point", "run_point", "check_existing", "check_data",
           "cpu_count"]


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask where there is one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _worker(points: list[Point], out: str, opts: dict, threads: int, quiet: bool) -> dict:
    import torch

    torch.set_num_threads(threads)   # each worker gets its share of the cores
    log = (lambda *_: None) if quiet else (lambda msg: print(f"[pid {os.getpid()}] {msg}", flush=True))
    return work(points, Path(out), opts, log)


def _worker_entry(args, queue) -> None:
    queue.put(_worker(*args))


def _collect(procs, queue) -> list[dict]:
    """Each worker's counts; a worker that died (killed, out of memory) just reports none."""
    import queue as queue_mod

    results: list[dict] = []
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=1.0))
        except queue_mod.Empty:
            if not any(proc.is_alive() for proc in procs):
                break
    for proc in procs:
        proc.join()
    return results


def _stop(procs) -> None:
    """The sweep was interrupted (Ctrl-C, or SIGTERM sent to this process alone, as by a job
    scheduler or ``kill``): pass SIGTERM on to every live worker, which checkpoints its point at
    the next batch and releases its claim, and wait for them, so that none keeps training
    unseen after the sweep says it stopped."""
    import signal

    for proc in procs:
        if proc.is_alive():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in procs:
        proc.join(timeout=300)
        if proc.is_alive():   # stuck past any checkpoint: do not leave it running
            proc.kill()
            proc.join()


def run_sweep(points: list[Point], out: str | Path, *, workers: int = 1,
              threads: Optional[int] = None, opts: Optional[dict] = None, log=print) -> dict:
    """Run ``points`` into ``out``; returns ``{"done": n, "failed": n, "remaining": n}``.

    ``workers`` > 1 starts that many processes, each with ``threads`` torch threads (default:
    this machine's CPUs divided between them); ``workers`` == 1 works in this process."""
    out = Path(out)
    check_data(points)
    check_existing(out, points)
    out.mkdir(parents=True, exist_ok=True)
    opts = dict(opts or {})
    if workers <= 1:
        if threads:
            import torch
            torch.set_num_threads(threads)
        counts = work(points, out, opts, log)
    else:
        threads = threads or max(1, cpu_count() // workers)
        log(f"{workers} workers, {threads} thread{'s' if threads > 1 else ''} each")
        ctx = mp.get_context("spawn")   # fresh interpreters: no forked torch thread pools
        queue = ctx.Queue()
        procs = [ctx.Process(target=_worker_entry, args=((points, str(out), opts, threads, False), queue))
                 for _ in range(workers)]
        for proc in procs:
            proc.start()
        try:
            results = _collect(procs, queue)
        except KeyboardInterrupt:
            _stop(procs)
            raise
        counts = {k: sum(r[k] for r in results) for k in ("done", "failed")}
    remaining = sum(status(out, p) != "done" for p in points)
    return {"done": counts["done"], "failed": counts["failed"], "remaining": remaining}
