"""Running a sweep: claim a point, train it (or resume it exactly), evaluate it, mark it done.

Everything a point has done lives in its run directory ``OUT/<point>/``, so any worker on any
machine can pick up where another one stopped:

* ``config.yaml``, ``metrics.csv``, ``checkpoint.pt``, ``model.pt``: the engine's run files;
  a checkpoint without ``sweep-trained`` means an interrupted training, continued by
  ``engine.train(..., resume=True)`` from its last finished epoch (exactly: same weights);
* ``sweep.json``: the sweep, protocol, point values and evaluation settings;
* ``eval-<suite>-<time>.json`` per evaluation (and ``results.json``, the latest);
* ``sweep-done.json`` once every evaluation is written: the point is skipped from then on;
* ``sweep-failed.json`` if the point raised; it is retried by the next invocation.

``OUT/sweep-log.jsonl`` gets one line per start, finish and failure (host, pid, time).
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import yaml

from ..checkpoint import atomic_write
from ..errors import ConfigError, RobustqError
from ..resume import Interrupted
from .claims import HEARTBEAT_S, STALE_AFTER_S, holder, try_claim
from .spec import Point

DONE, TRAINED, FAILED, INFO = "sweep-done.json", "sweep-trained", "sweep-failed.json", "sweep.json"


class ClaimLost(RobustqError):
    """Another worker took this point over (this one was thought dead)."""


def evaluate_point(run_dir: Path, suite: str, overrides: list[str], device_name: str = "auto") -> dict:
    """Evaluate ``run_dir/model.pt`` with suite ``suite`` through the one evaluation engine
    (``jobs.evaluate_target``): it writes ``eval-<suite>-<time>.json`` and ``results.json``
    (the latest record). The one place a sweep calls evaluation."""
    from ..jobs import evaluate_target

    return evaluate_target(run_dir, overrides=list(overrides), suite=suite,
                           device=None if device_name == "auto" else device_name,
                           progress=False, log=lambda *_: None)


def has_record(run_dir: Path, suite: str) -> bool:
    return any(run_dir.glob(f"eval-{suite}-*.json"))


def status(out: Path, p: Point, stale_after_s: float = STALE_AFTER_S) -> str:
    """done | failed | running | partial | new."""
    d = out / p.name
    if (d / DONE).exists():
        return "done"
    if holder(d, stale_after_s) is not None:
        return "running"
    if (d / FAILED).exists():
        return "failed"
    return "partial" if (d / "checkpoint.pt").exists() else "new"


def check_data(points: list[Point]) -> None:
    """Every dataset the points train on is where their configs say (one sentence otherwise),
    so that a sweep does not fail point after point for want of files."""
    from ..data import get_spec
    from ..data.datasets import find_root

    for name, root in sorted({(p.config.data.name, p.config.data.root) for p in points}, key=str):
        find_root(get_spec(name), root)


def machine() -> dict:
    """Where a point ran: host, CPU model, CPU count, torch threads (for the compute total)."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": socket.gethostname(), "cpu": model, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def check_existing(out: Path, points: list[Point]) -> None:
    """Refuse an ``--out`` whose run directories hold other configs than the points now ask for
    (a changed sweep file would otherwise mix two settings under one name)."""
    for p in points:
        f = out / p.name / "config.yaml"
        if not f.exists():
            continue
        try:
            old = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            old = None
        new = p.config.to_dict()
        if old != new:
            diff = _first_difference(old if isinstance(old, dict) else {}, new)
            raise ConfigError(f"{out / p.name} holds a run with another config ({diff}); "
                              f"restore the sweep's settings or choose another --out")


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            found = _first_difference(x, y, f"{prefix}{k}.")
            if found:
                return found
        elif x != y:
            return f"{prefix}{k}: {x!r} there, {y!r} now"
    return ""


def _log(out: Path, event: str, point: str, **extra) -> None:
    line = json.dumps({"time": time.time(), "event": event, "point": point,
                       "host": socket.gethostname(), "pid": os.getpid(), **extra}) + "\n"
    fd = os.open(out / "sweep-log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())   # one write of one short line: appends do not interleave
    finally:
        os.close(fd)


def run_point(p: Point, out: Path, *, device_name: str = "auto", log=print,
              on_epoch_end: Optional[Callable[[int], None]] = None) -> None:
    """Train (or resume) and evaluate one claimed point, then mark it done."""
    from ..engine import setup, train
    from ..runtime import resolve_device

    d = out / p.name
    d.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    resumed = (d / "checkpoint.pt").exists() or (d / TRAINED).exists()
    atomic_write(d / INFO, (json.dumps(p.info(), indent=2) + "\n").encode())
    if not (d / TRAINED).exists():
        cfg = p.config
        device = resolve_device(device_name if device_name != "auto" else cfg.device)
        resume = (d / "checkpoint.pt").exists()
        prepared = setup(cfg)
        if not resume:
            atomic_write(d / "config.yaml", cfg.to_yaml().encode())
        train(cfg, d, device, resume=resume, log=log, progress=False, prepared=prepared,
              on_epoch_end=on_epoch_end)
        atomic_write(d / TRAINED, b"")
    for suite in p.evaluate:
        if not has_record(d, suite):
            log(f"{p.name}: evaluating ({suite})")
            evaluate_point(d, suite, p.eval_overrides(suite), device_name)
    # the wall time of this sitting (start-up, training, validation, evaluations): the report's
    # compute total; a resumed point's earlier sittings are not in it, hence "resumed"
    atomic_write(d / DONE, (json.dumps({"finished": time.time(), "sitting_seconds":
                                        round(time.monotonic() - start, 1), "resumed": resumed,
                                        **machine()}) + "\n").encode())
    try:
        (d / FAILED).unlink()
    except FileNotFoundError:
        pass


def _attempt(p: Point, out: Path, opts: dict, log) -> str:
    """Claim and run one point: 'done' | 'skipped' (finished or held elsewhere) | 'failed'."""
    d = out / p.name
    if (d / DONE).exists():
        return "skipped"
    claim = try_claim(d, stale_after_s=opts.get("stale_after_s", STALE_AFTER_S),
                      heartbeat_s=opts.get("heartbeat_s", HEARTBEAT_S))
    if claim is None:
        return "skipped"
    try:
        if (d / DONE).exists():   # finished by the previous holder just before we claimed
            return "skipped"
        _log(out, "start", p.name, gen=claim.gen)
        hook = opts.get("on_epoch_end")

        def epoch_end(epoch: int) -> None:
            if claim.lost:
                raise ClaimLost(f"{p.name} was taken over by another worker")
            if hook is not None:
                hook(epoch)

        log(f"{p.name}: running ({status_text(d)})")
        run_point(p, out, device_name=opts.get("device", "auto"), log=log, on_epoch_end=epoch_end)
        _log(out, "done", p.name)
        log(f"{p.name}: done")
        return "done"
    except Interrupted:   # SIGTERM/Ctrl-C inside training: its checkpoint is written; stop the sweep
        raise KeyboardInterrupt from None
    except ClaimLost as e:
        log(f"robustq: note: {e}")
        return "skipped"
    except Exception as e:   # one point's failure must not stop the others
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        atomic_write(d / FAILED, (json.dumps({"error": message, "type": type(e).__name__,
                                              "traceback": traceback.format_exc()}, indent=2)
                                  + "\n").encode())
        _log(out, "failed", p.name, error=message)
        log(f"{p.name}: FAILED: {message} (details in {d / FAILED})")
        return "failed"
    finally:
        claim.release()


def status_text(d: Path) -> str:
    if (d / TRAINED).exists():
        return "trained, evaluating"
    return "resuming" if (d / "checkpoint.pt").exists() else "new"


def work(points: list[Point], out: Path, opts: Optional[dict] = None, log=print) -> dict:
    """One worker: passes over the points, running every one it can claim, until a pass finds
    nothing left to do, or until ``opts["start_before"]`` (a ``time.time()``) has passed: the
    point it is running then finishes, no other starts. Returns counts of done / failed /
    skipped points."""
    opts = opts or {}
    counts = {"done": 0, "failed": 0, "skipped": 0}
    tried_failed: set[str] = set()
    deadline = opts.get("start_before")   # --stop-after: a time.time() past which no point starts
    while True:
        progressed = False
        for p in points:
            if p.name in tried_failed:
                continue
            if deadline is not None and time.time() >= deadline:
                log("--stop-after reached: starting no new point")
                return counts
            result = _attempt(p, out, opts, log)
            if result == "failed":
                tried_failed.add(p.name)
                counts["failed"] += 1
            elif result == "done":
                counts["done"] += 1
            progressed |= result != "skipped"
        if not progressed:
            return counts
