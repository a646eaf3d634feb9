"""How many CPU threads a run computes with: the CPUs this process may really use.

PyTorch sizes its thread pool from the machine's cores. That is wrong in three common cases,
and each costs far more than one thread's worth of speed, because PyTorch's OpenMP workers
spin-wait for each other at every operator and a worker that is descheduled stalls them all:

* the process is pinned to fewer CPUs (``taskset``, a batch scheduler): ``os.sched_getaffinity``;
* a container or systemd unit caps its CPU time (cgroup v2 ``cpu.max``, v1
  ``cpu.cfs_quota_us / cpu.cfs_period_us``): 1.5 CPUs of quota runs 1 thread, not 64;
* other processes are already computing on those CPUs: their busy share, measured from
  ``/proc/stat`` over a short window at start, is left to them.

``choose_threads`` takes the smallest of these (at least 1) and divides it among the
processes a launcher started on this machine (``LOCAL_WORLD_SIZE``, set by ``torchrun``).
An explicit ``--threads N`` or ``OMP_NUM_THREADS`` always wins. The choice is made once, at
start: runs started together all see an idle machine, so a sweep should pass ``--threads``
(cores divided by the number of runs); see the README's "Several runs on one machine".
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    why: str            # one phrase for the run header

    def header(self) -> str:
        return f"threads: {self.threads} ({self.why})"


def affinity_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where affinity is not supported)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _quota(text: str) -> Optional[float]:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"max 100000"``: no limit)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = float(parts[0]), float(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: Path = CGROUP, self_cgroup: Path = Path("/proc/self/cgroup")
                     ) -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (v2 ``cpu.max`` on the way up from its
    own group, or v1 CFS quota), the tightest one found; None when there is none."""
    limits = []
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    own = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), "/")
    group = root / own.lstrip("/")
    for d in [group, *group.parents]:  # v2: a parent's limit binds its children too
        if d == root.parent:
            break
        try:
            limits.append(_quota((d / "cpu.max").read_text()))
        except (OSError, ValueError):
            pass
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            q = int((v1 / "cpu.cfs_quota_us").read_text())
            p = int((v1 / "cpu.cfs_period_us").read_text())
            limits.append(q / p if q > 0 and p > 0 else None)
        except (OSError, ValueError):
            pass
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def _cpu_times(stat_text: str, cpus: list[int]) -> tuple[float, float]:
    """(idle + iowait, total) jiffies summed over ``cpus`` from ``/proc/stat``."""
    idle = total = 0.0
    wanted = {f"cpu{c}" for c in cpus}
    for line in stat_text.splitlines():
        parts = line.split()
        if parts and parts[0] in wanted:
            values = [float(v) for v in parts[1:9]]
            idle += values[3] + values[4]
            total += sum(values)
    return idle, total


def busy_cpus(cpus: list[int], window: float = 0.2, stat: Path = Path("/proc/stat")) -> float:
    """How many of ``cpus`` other processes kept busy during ``window`` seconds (this
    process sleeps meanwhile, so all of it is theirs); 0 where /proc/stat is unreadable."""
    try:
        idle0, total0 = _cpu_times(stat.read_text(), cpus)
        time.sleep(window)
        idle1, total1 = _cpu_times(stat.read_text(), cpus)
    except (OSError, ValueError, IndexError):
        return 0.0
    total = total1 - total0
    return 0.0 if total <= 0 else len(cpus) * (1 - (idle1 - idle0) / total)


def auto_threads(cpus: list[int], quota: Optional[float], busy: float, local_procs: int = 1
                 ) -> ThreadChoice:
    """The thread count from the pieces measured by the functions above."""
    n, why = len(cpus), [f"{len(cpus)} CPUs usable"]
    if quota is not None and math.floor(quota) < n:
        n = max(1, math.floor(quota))
        why.append(f"cgroup quota {quota:g} CPUs")
    others = round(busy)
    if others >= 1:
        n = max(1, min(n, len(cpus) - others))
        why.append(f"~{others} busy with other processes")
    if local_procs > 1:
        n = max(1, n // local_procs)
        why.append(f"shared by {local_procs} local processes")
    return ThreadChoice(n, ", ".join(why) + "; --threads N to choose")


def choose_threads(requested: Optional[int] = None, window: float = 0.2) -> ThreadChoice:
    """``--threads`` if given, else ``OMP_NUM_THREADS`` if set, else ``auto_threads``."""
    if requested is not None:
        return ThreadChoice(requested, "--threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return ThreadChoice(int(env), "OMP_NUM_THREADS")
    cpus = affinity_cpus()
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return auto_threads(cpus, cgroup_cpu_limit(), busy_cpus(cpus, window),
                        int(local) if local.isdigit() else 1)


def apply_threads(choice: ThreadChoice) -> None:
    """Size PyTorch's intra-op pool (process-wide: called by the CLI, never at import)."""
    import torch
    torch.set_num_threads(choice.threads)
