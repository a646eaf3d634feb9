"""Submitting a sweep to a cluster through submitit (the optional extra ``robustq[submitit]``).

``submit`` sends N jobs, one per shard K/N of the points, to Slurm (or, with ``cluster="local"``,
to local processes, which is how it is tested). Each job expands the sweep files itself and runs
its shard with the same claims as ``robustq sweep``, so jobs that are requeued, resubmitted or
run beside hand-started workers never run a point twice and pick up interrupted points where
they stopped. A job that hits its time limit or is preempted is requeued by submitit
(``Checkpointable``) and continues from the last finished epoch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DependencyError

try:
    from submitit.helpers import Checkpointable
except ImportError:   # the extra is optional: only submit() needs it
    Checkpointable = object


class ShardJob(Checkpointable):
    """One cluster job: shard ``k`` of ``n`` of the sweep, run by ``run_sweep``."""

    def __call__(self, sweeps: list[str], overrides: list[str], out: str, k: int, n: int,
                 opts: dict) -> dict:
        from . import load_sweeps, run_sweep, shard

        points = shard(load_sweeps(sweeps, overrides), k, n)
        return run_sweep(points, out, opts=opts)


def submit(sweeps: list[str], overrides: list[str], out: str | Path, *, jobs: int,
           cluster: Optional[str] = None, opts: Optional[dict] = None,
           parameters: Optional[dict] = None) -> list:
    """Submit ``jobs`` shard jobs; returns submitit's job objects (``.job_id``, ``.result()``).

    ``cluster``: None lets submitit choose (Slurm where there is one), ``"local"`` runs the jobs
    as local processes, ``"debug"`` in this process. ``parameters``: submitit's executor
    parameters (``timeout_min``, ``slurm_partition``, ``gpus_per_node``, ``cpus_per_task``...)."""
    try:
        import submitit
    except ImportError:
        raise DependencyError("submitting to a cluster needs submitit, which is not installed; "
                              "install it with pip install 'robustq[submitit]'") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=out / ".submitit" / "%j", cluster=cluster)
    executor.update_parameters(name="robustq-sweep", **(parameters or {}))
    n = jobs
    sweeps = [str(Path(s).resolve()) for s in sweeps]
    return executor.map_array(ShardJob(), [sweeps] * n, [list(overrides)] * n, [str(out.resolve())] * n,
                              list(range(1, n + 1)), [n] * n, [dict(opts or {})] * n)
