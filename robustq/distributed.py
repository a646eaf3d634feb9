"""Running under ``torchrun``: one process per rank, PyTorch's DistributedDataParallel.

Nothing here is home-made distribution: ``torchrun`` starts the processes and runs the
rendezvous (one node or several), ``torch.distributed`` moves the tensors (gloo on CPUs, NCCL
on GPUs), DDP all-reduces the gradients. This module holds the few things robustq adds:

* ``Dist``: who this process is (rank, world size, local rank), read from the environment
  torchrun sets; without torchrun it is the single process (rank 0 of 1) and every helper
  below is a no-op, so single-process runs are unchanged.
* per-rank random streams: rank ``r`` of a ``W > 1`` run seeds its block noise, attack random
  starts and augmentation from ``(seed, r)`` (``rank_seed``), so a run is reproducible for a
  given world size; the data ORDER comes from ``seed`` alone and is split by rank.
* collectives the engine and the CLI need: sums of metrics, "did any rank ask to stop",
  gathering per-rank checkpoint state, and ``agree``: an error on any rank becomes the same
  one-sentence error on every rank (so no rank waits forever on a collective).
* ``sharded_masks``: split examples across ranks, compute per-example correctness, gather it
  back in order. The only place evaluation is split (one record, as a single process's).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError, RobustqError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``Dist()`` is the single process."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def from_env() -> Dist:
    """The job torchrun started this process in (its RANK, WORLD_SIZE, LOCAL_RANK, ...)."""
    env = os.environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return SINGLE
    return Dist(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))


def init() -> Dist:
    """Join torchrun's process group (once; a no-op without torchrun or with one process).

    One group serves both devices: gloo for CPU tensors and, where every local rank has a
    GPU, NCCL for CUDA tensors (``backend="cpu:gloo,cuda:nccl"``). The rank's GPU is selected
    at once, because object collectives (``gather``) then run on it, and two ranks must never
    share one."""
    d = from_env()
    if d.active and not dist.is_initialized():
        gpus = torch.cuda.is_available() and d.local_world <= torch.cuda.device_count()
        if gpus:
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group("cpu:gloo,cuda:nccl" if gpus else "gloo")
    return d


def shutdown(finished: bool = False) -> None:
    """Leave the process group. ``finished``: this rank's command returned normally, and so
    did every other rank's (the engine's collectives keep them in step), so all ranks first
    meet at a barrier: no rank tears its gloo connections down, or exits, while another still
    writes its files or finishes a collective. Without it rank 1, which writes nothing,
    tears down and exits while rank 0 still saves the model; the one CI failure of the
    two-rank tests was rank 1 aborting in C++ at such a time ("terminate called without an
    active exception", exit -6) while rank 0 was still alive. On an error path the ranks may
    not be in step, so there is no barrier."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def rank_device(device: torch.device, d: Dist) -> torch.device:
    """Under torchrun each rank takes the GPU of its LOCAL rank (``cuda`` -> ``cuda:r``)."""
    if device.type != "cuda" or not d.active:
        return device
    if d.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"torchrun started {d.local_world} processes on this node but it has "
                          f"{torch.cuda.device_count()} CUDA GPUs; use --nproc_per_node "
                          f"{torch.cuda.device_count()} or fewer")
    device = torch.device("cuda", d.local_rank)
    torch.cuda.set_device(device)
    return device


def rank_seed(seed: int, d: Dist, *salt: int) -> int:
    """The seed of rank ``d.rank``'s own random streams: ``seed`` itself for a single process
    (unchanged results), else a SeedSequence hash of ``(seed, rank, *salt)``."""
    if not d.active and not salt:
        return seed
    return int(np.random.SeedSequence([seed, d.rank, *salt]).generate_state(1)[0])


# --- collectives (no-ops for a single process) -------------------------------------------------

def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum ``t`` over ranks, in place."""
    if d.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sync_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Give every rank rank 0's buffers (BN running statistics). DDP broadcasts them at the
    start of each training forward, so after an epoch's last step (and the attack passes,
    which update them in train mode) each rank holds its own; validation and the saved model
    must all see rank 0's."""
    if d.active:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def any_rank(flags: list[bool], d: Dist) -> list[bool]:
    """Element-wise OR of per-rank flags: one small all-reduce of a CPU tensor (gloo, also in
    a GPU job), so asking after every minibatch never waits for the GPU's queue."""
    if not d.active:
        return flags
    t = torch.tensor([float(f) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather(obj: Any, d: Dist) -> list:
    """Every rank's ``obj``, in rank order, on every rank (picklable objects, CPU tensors)."""
    if not d.active:
        return [obj]
    out: list = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def agree(fn: Callable[[], Any], d: Dist, main_only: bool = False) -> Any:
    """Run ``fn`` on every rank (each gets its own result) or on rank 0 only (every rank
    gets rank 0's result: a path it chose, a file only it read).

    A RobustqError on any rank is raised on EVERY rank (the lowest failing rank's sentence),
    so one bad rank makes the whole job stop cleanly instead of leaving the others waiting."""
    result, error = None, None
    if d.main or not main_only:
        try:
            result = fn()
        except RobustqError as e:
            error = e
    if not d.active:
        if error is not None:
            raise error
        return result
    outcomes = gather((None if error is None else str(error),
                       result if d.main and main_only else None), d)
    failed = [o[0] for o in outcomes if o[0] is not None]
    if failed:
        if error is not None:
            raise error
        raise ConfigError(failed[0])
    return outcomes[0][1] if main_only else result


def check_same_config(text: str, d: Dist) -> None:
    """Every rank must run the same resolved config (one sentence on every rank if not)."""
    if not d.active:
        return
    digests = gather(hashlib.sha256(text.encode()).hexdigest(), d)
    differ = [r for r, h in enumerate(digests) if h != digests[0]]
    if differ:
        raise ConfigError(f"ranks {', '.join(map(str, differ))} resolved a different config "
                          f"than rank 0 (different files or --set values per node); start "
                          f"every rank with the same CONFIG and --set arguments")


def say(d: Dist) -> Callable[..., None]:
    """``print`` on rank 0, silence on the other ranks."""
    return print if d.main else (lambda *a, **k: None)


# --- splitting examples across ranks -----------------------------------------------------------

def shard_range(n: int, d: Dist) -> tuple[int, int]:
    """Rank ``d.rank``'s contiguous slice ``[lo, hi)`` of ``n`` examples (sizes differ by <= 1)."""
    return n * d.rank // d.world, n * (d.rank + 1) // d.world


def sharded_masks(fn: Callable[[int, int], dict], n: int, d: Dist) -> dict:
    """Per-example correctness over ``n`` examples, computed split across ranks.

    ``fn(lo, hi)`` returns ``{name: bool tensor}`` for examples ``lo..hi-1`` (the example axis
    last); the slices of all ranks are gathered and concatenated in order, so every rank gets
    the masks a single process would have computed (identical for a deterministic model)."""
    if not d.active:
        return fn(0, n)
    lo, hi = shard_range(n, d)
    parts = gather({k: v.cpu() for k, v in fn(lo, hi).items()}, d)
    return {k: torch.cat([p[k] for p in parts], dim=-1) for k in parts[0]}


def launch_hint(d: Dist) -> str:
    """The launcher prefix that restarts this job's shape: ``robustq`` or ``torchrun ...``."""
    if not d.active:
        return "robustq"
    nodes = max(1, d.world // max(1, d.local_world))
    extra = f" --nnodes {nodes} (and your rendezvous options)" if nodes > 1 else ""
    return f"torchrun --nproc_per_node {d.local_world}{extra} -m robustq"


def optional(value: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A tensor moved to the CPU for gathering/saving (None stays None)."""
    return None if value is None else value.detach().cpu()


def wrap_ddp(model: torch.nn.Module, device: torch.device, d: Dist) -> Optional[torch.nn.Module]:
    """DDP's wrapper for the training forwards (None for a single process). Buffers (BN
    running statistics) are broadcast from rank 0 at every forward, DDP's default, so every
    rank holds the same state after each step."""
    if not d.active:
        return None
    import warnings
    from torch.nn.parallel import DistributedDataParallel
    # channels_last weights with one input channel have ambiguous strides: DDP warns that
    # their gradients' layout differs from its bucket's (a copy, correct results)
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
