"""The ``robustq sweep`` and ``robustq report`` verbs (argument parsing only; the work is in
``robustq.sweep`` and ``robustq.report``). ``cli.py`` adds them to its parser."""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, RobustqError


def _cmd_sweep(args) -> None:
    from .sweep import cpu_count, load_sweeps, parse_shard, run_sweep, shard, status

    k, n = parse_shard(args.shard)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    points = load_sweeps(args.sweeps, args.overrides)   # every point validated before any runs
    mine = shard(points, k, n)
    out = Path(args.out)
    print(f"{len(points)} points in {', '.join(args.sweeps)}" +
          (f"; shard {k}/{n} holds {len(mine)}" if n > 1 else "") + f"; output {out}")
    if args.dry_run:
        for p in mine:
            print(f"  {status(out, p) if out.is_dir() else 'new':8} {p.name}")
        return
    opts = {"device": args.device or "auto", "stale_after_s": args.stale_after}
    if args.stop_after is not None:
        if args.stop_after < 0:
            raise ConfigError(f"--stop-after must be >= 0 minutes, got {args.stop_after:g}")
        import time
        opts["start_before"] = time.time() + 60.0 * args.stop_after
    if args.submitit:
        return _submit(args, points, opts)
    import signal
    signal.signal(signal.SIGTERM, _interrupt)   # scancel / a job's time limit: release claims
    counts = run_sweep(mine, out, workers=args.workers,
                       threads=args.threads, opts=opts)
    print(f"sweep: {counts['done']} points run here, {counts['failed']} failed, "
          f"{counts['remaining']} of {len(mine)} not done (held by other workers, failed, or "
          f"interrupted{', or not started after --stop-after' if args.stop_after is not None else ''})"
          f"{'' if counts['remaining'] else '; all done'}; {cpu_count()} CPUs here")
    if counts["failed"]:
        raise RobustqError(f"{counts['failed']} points failed (see sweep-failed.json in their run "
                           f"directories); fix the cause and run the same command again")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _submit(args, points, opts) -> None:
    """``--submitit``: N shard jobs on the cluster (or local processes); --wait for them."""
    from .sweep import check_data, check_existing
    from .sweep.launch import submit

    if args.dry_run or args.shard:
        raise ConfigError("--submitit makes its own shards (--jobs N); drop --shard and --dry-run")
    if args.stop_after is not None:
        raise ConfigError("--stop-after is for a sweep run here; submitted jobs are bounded by "
                          "--timeout-min (and requeued when they hit it)")
    check_data(points)
    check_existing(Path(args.out), points)
    params = {k: v for k, v in (("timeout_min", args.timeout_min), ("slurm_partition", args.partition),
                                ("gpus_per_node", args.gpus), ("cpus_per_task", args.cpus)) if v}
    jobs = submit(args.sweeps, args.overrides, args.out, jobs=args.jobs,
                  cluster=None if args.submitit == "auto" else args.submitit, opts=opts,
                  parameters=params)
    print(f"submitted {len(jobs)} jobs: {', '.join(str(j.job_id) for j in jobs)} (logs in "
          f"{Path(args.out) / '.submitit'}); run the same command again to resubmit what is left")
    if args.wait:
        for j in jobs:
            print(f"job {j.job_id}: {j.result()}")


def _cmd_report(args) -> None:
    from .report import write_report

    written = write_report(args.dirs, args.out, plots=not args.no_plots)
    for f in written:
        print(f"wrote {f}")


def add_sweep_verbs(sub) -> None:
    """``robustq sweep`` and ``robustq report``."""
    s = sub.add_parser("sweep", help="run every point of sweep files (base config x axes x "
                                     "seeds), resumable, in parallel, each point once")
    s.add_argument("sweeps", nargs="+", metavar="SWEEP.yaml", help="sweep files (sweeps/)")
    s.add_argument("--out", required=True, help="output folder: one run directory per point")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes on this machine, the CPU threads split between them")
    s.add_argument("--threads", type=int, metavar="T", help="torch threads per worker "
                   "(default: this machine's CPUs / N)")
    s.add_argument("--shard", metavar="K/N", help="run only shard K of N (job arrays: Slurm "
                   "--array, Kubernetes indexed jobs)")
    s.add_argument("--dry-run", action="store_true", help="list the points and their state; "
                   "run nothing")
    s.add_argument("--stale-after", type=float, default=600.0, metavar="S",
                   help="seconds without heartbeat after which another host's claim is taken "
                        "over (default 600; a dead pid on this host is taken over at once)")
    s.add_argument("--stop-after", type=float, metavar="MIN",
                   help="start no new point after MIN minutes; the points running then finish "
                        "(a job's time limit, or a machine wanted back, without losing a point "
                        "half trained); run the same command again to go on")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every point (repeatable)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="where to compute (default: each config's device)")
    c = s.add_argument_group("cluster (needs robustq[submitit])")
    c.add_argument("--submitit", choices=["auto", "slurm", "local"], help="submit --jobs shard "
                   "jobs through submitit (auto: Slurm where available) instead of running here")
    c.add_argument("--jobs", type=int, default=1, metavar="N", help="number of shard jobs")
    c.add_argument("--timeout-min", type=int, help="time limit per job (requeued when it hits it)")
    c.add_argument("--partition", help="Slurm partition")
    c.add_argument("--gpus", type=int, help="GPUs per job")
    c.add_argument("--cpus", type=int, help="CPUs per job")
    c.add_argument("--wait", action="store_true", help="wait for the jobs and print their counts")
    s.set_defaults(func=_cmd_sweep)
    r = sub.add_parser("report", help="tables (CSV, Markdown, HTML), the paper's numbers beside "
                                      "ours, a verdict per claim, plots, from run directories")
    r.add_argument("dirs", nargs="+", metavar="DIR", help="run directories or folders of them")
    r.add_argument("--out", default="report.md", metavar="FILE",
                   help="Markdown report (default report.md); the CSV, HTML and PNGs go beside it")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.set_defaults(func=_cmd_report)
