"""Exact resume from anywhere in an epoch: the training state, mid-epoch checkpoints, stops.

A checkpoint is either at an epoch boundary (``batch == 0``) or mid-epoch: ``batch`` minibatches
of epoch ``epoch + 1`` done. Resuming is exact (bit-identical to never stopping) because the
checkpoint holds everything the rest of the run depends on:

* the weights, BN statistics, optimizer and LR-schedule state (the schedule counts optimizer
  steps, so its position inside the epoch is exact);
* the epoch's data permutation (``partial.order``) and the data/augmentation generator state
  after the last batch done, so the remaining batches and their crops/flips are the same;
* the global torch RNG (block noise, attack random starts) and free AT's perturbation;
* the epoch's partial metric sums (loss, correct counts, images) and its first step's LR;
* under torchrun, all of the above that is per rank, for every rank (``ranks``).

``train.checkpoint_minutes`` (default 10) writes a mid-epoch checkpoint when that long has
passed since the last one; Ctrl-C or SIGTERM (what a cluster sends before preemption) makes
the engine finish the current minibatch, write one, and stop with ``Interrupted`` naming the
exact resume command. A second Ctrl-C stops at once (the last checkpoint stays intact: files
are written atomically).
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from . import __version__
from .attacks.free import FreeReplay
from .checkpoint import CHECKPOINT_FORMAT, FORMAT_VERSION, save
from .distributed import Dist, gather, launch_hint, optional, rank_seed
from .errors import RobustqError
from .runtime import rng_state, set_rng_state

monotonic = time.monotonic  # the clock of the time-based checkpoint (tests replace it)


class Interrupted(RobustqError):
    """Training stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrainState:
    """Where training stands: ``epoch`` epochs done, ``batch`` batches of the next one."""
    epoch: int = 0
    batch: int = 0
    order: Optional[torch.Tensor] = None     # the current epoch's permutation (mid-epoch)
    stats: Optional[torch.Tensor] = None     # this rank's partial sums (mid-epoch)
    lr: Optional[float] = None               # the rate of the epoch's first step
    seconds: float = 0.0                     # training seconds of the epoch so far
    rows: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "key": None})
    stopped: Optional[str] = None


class CheckpointClock:
    """Says when ``minutes`` have passed since the last checkpoint (never if ``minutes <= 0``)."""

    def __init__(self, minutes: float) -> None:
        self.every, self.last = 60.0 * minutes, monotonic()

    def due(self) -> bool:
        return self.every > 0 and monotonic() - self.last >= self.every

    def reset(self) -> None:
        self.last = monotonic()


class StopRequests:
    """While active, SIGINT and SIGTERM only record that a stop was asked for (``signum``);
    the engine stops at the next minibatch boundary. A second signal raises
    KeyboardInterrupt at once. Outside the main thread signals cannot be caught: a no-op."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def interrupted(self, run_dir: Path, where: str, d: Dist) -> Interrupted:
        name = "Ctrl-C" if self.signum in (None, signal.SIGINT) else signal.Signals(self.signum).name
        return Interrupted(f"interrupted by {name} {where}; the training state is saved in "
                           f"{Path(run_dir).resolve() / 'checkpoint.pt'}: continue with "
                           f"{launch_hint(d)} train --resume {Path(run_dir).resolve()}",
                           128 + (self.signum or signal.SIGINT))


class TermAsInterrupt:
    """While active, SIGTERM (a cluster's preemption, ``kill``) raises KeyboardInterrupt like
    Ctrl-C, so an evaluation stops through the same path: its journal is intact and the CLI
    says where it is kept. A no-op outside the main thread."""

    def __init__(self) -> None:
        self._old = None

    @staticmethod
    def _handle(signum, frame) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> "TermAsInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class Saver:
    """Writes checkpoints of one run (all ranks call ``save``; only rank 0 writes)."""

    def __init__(self, run_dir: Path, cfg, model, step, aug_gen: torch.Generator,
                 order_gen: torch.Generator, device: torch.device, d: Dist) -> None:
        self.path, self.cfg, self.model, self.step = Path(run_dir) / "checkpoint.pt", cfg, model, step
        self.aug_gen, self.order_gen, self.device, self.d = aug_gen, order_gen, device, d

    def _rank_state(self, st: TrainState) -> dict:
        return {"rng": {**rng_state(self.device), "data": self.aug_gen.get_state()},
                "free_delta": optional(getattr(self.step.attack, "delta", None)),
                "stats": optional(st.stats) if st.batch else None}

    def save(self, st: TrainState) -> None:
        ranks = gather(self._rank_state(st), self.d)   # a collective: every rank calls it
        if not self.d.main:
            return
        partial = None if st.batch == 0 else {"order": st.order, "stats": ranks[0]["stats"],
                                              "lr": st.lr, "seconds": st.seconds}
        save({"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
              "epoch": st.epoch, "batch": st.batch, "partial": partial,
              "model": self.model.state_dict(), "optimizer": self.step.opt.state_dict(),
              "scheduler": self.step.sched.state_dict(), "rng": ranks[0]["rng"],
              "free_delta": ranks[0]["free_delta"], "best": st.best, "metrics": st.rows,
              "config": self.cfg.to_dict(), "stopped": st.stopped, "world_size": self.d.world,
              "order_rng": self.order_gen.get_state(), "ranks": ranks if self.d.active else None},
             self.path)

    def restore(self, ck: dict, log) -> TrainState:
        """Load ``ck`` into the model, optimizer, schedule and streams; the state to go on from."""
        self.model.load_state_dict(ck["model"])
        self.step.opt.load_state_dict(ck["optimizer"])
        self.step.sched.load_state_dict(ck["scheduler"])
        self.order_gen.set_state(ck.get("order_rng", ck["rng"]["data"]))
        partial, saved_world = ck.get("partial"), int(ck.get("world_size", 1))
        if saved_world == self.d.world:
            mine = ck["ranks"][self.d.rank] if self.d.active else \
                {"rng": ck["rng"], "free_delta": ck.get("free_delta"),
                 "stats": partial["stats"] if partial else None}
            set_rng_state(mine["rng"], self.device)
            self.aug_gen.set_state(mine["rng"]["data"])
            delta, stats = mine["free_delta"], mine["stats"]
        else:
            delta, stats = self._fresh_streams(ck, saved_world, partial, log)
        if isinstance(self.step.attack, FreeReplay):  # free AT's perturbation carries over
            self.step.attack.delta = None if delta is None else delta.to(self.device)
        return TrainState(ck["epoch"], int(ck.get("batch", 0)),
                          partial["order"] if partial else None,
                          None if stats is None else stats.to(self.device),
                          partial["lr"] if partial else None,
                          partial["seconds"] if partial else 0.0,
                          ck["metrics"], ck["best"], ck.get("stopped"))

    def _fresh_streams(self, ck: dict, saved_world: int, partial, log):
        """Resuming with another world size: new per-rank streams, the data order changes."""
        message = (f"this run was checkpointed with {saved_world} process(es) and resumes with "
                   f"{self.d.world}: the data order and random streams change from here on, so "
                   f"the result will differ from an uninterrupted run")
        log(f"warning: {message}")
        torch.manual_seed(rank_seed(self.cfg.seed, self.d, ck["epoch"], int(ck.get("batch", 0))))
        if self.aug_gen is not self.order_gen:
            self.aug_gen.manual_seed(rank_seed(self.cfg.seed, self.d, ck["epoch"], 1))
        stats = None
        if partial:  # all saved partial sums go to rank 0, so the epoch's totals stay right
            saved = [r["stats"] for r in ck["ranks"]] if ck.get("ranks") else [partial["stats"]]
            stats = torch.stack(saved).sum(0) if self.d.main else torch.zeros_like(saved[0])
        return None, stats
