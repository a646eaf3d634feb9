"""Collecting runs: every run directory under the given folders, what it is, what it measured.

A run directory is a folder with a ``config.yaml``. What it *is* comes from that config (its
``descriptor``: dataset, model, quant, method, loss, seed), so runs made by ``robustq train`` by
hand count as much as sweep points; its protocol comes from ``sweep.json`` (``custom`` without
one). What it *measured* comes from its evaluation records, read tolerantly: every
``eval-<suite>-<time>.json``, ``results.json`` and ``results-<suite>.json`` that parses as a
record, grouped by its ``suite`` field (``paper`` when absent), the newest file per suite winning.

``tidy_rows`` flattens all of it into one row per run x suite x metric (the CSV).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..models import model_name
from .stats import mean_std

RECORD_GLOBS = ("eval-*.json", "results.json", "results-*.json")
MAX_DEPTH = 4


@dataclass
class Run:
    path: Path
    config: dict
    protocol: str
    records: dict = field(default_factory=dict)   # suite -> record
    failed: str = ""                             # the sweep's failure message, if any
    machine: dict = field(default_factory=dict)  # where a sweep ran it (sweep-done.json)

    @property
    def descriptor(self) -> dict:
        return descriptor(self.config)

    @property
    def pending(self) -> bool:
        """A sweep point without its done marker: still running, interrupted, or failed."""
        return self.protocol != "custom" and not self.machine


def loss_label(loss: dict) -> str:
    """``natural``, ``at`` (eq. (8) with alpha 0, beta 1 is the same objective),
    ``tradeoff a=1 b=8`` (eq. (8)) or ``trades b=6`` (eq. (7))."""
    name = loss.get("name", "tradeoff")
    a, b = float(loss.get("alpha", 1.0)), float(loss.get("beta", 8.0))
    if name == "at" or (name == "tradeoff" and a == 0 and b == 1):
        return "at"
    if name == "tradeoff":
        return f"tradeoff a={a:g} b={b:g}"
    if name == "trades":
        return f"trades b={b:g}"
    return name


def descriptor(cfg: dict) -> dict:
    """What a run is, in the paper's terms, from its resolved config."""
    from ..quant.projections import canonical_name

    m, q = cfg.get("model", {}), cfg.get("quant", {})
    quant = canonical_name(q.get("scheme", "float"))
    return {"dataset": cfg.get("data", {}).get("name"),
            "model": model_name(m.get("depth", 20), m.get("ensemble", 1), m.get("noise", 0.1)),
            "quant": quant, "method": q.get("method"), "loss": loss_label(cfg.get("loss", {})),
            "seed": cfg.get("seed", 0)}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_records(run_dir: Path) -> dict:
    """suite -> the newest record of that suite in ``run_dir``."""
    found: dict[str, tuple[float, dict]] = {}
    for pattern in RECORD_GLOBS:
        for f in run_dir.glob(pattern):
            rec = _read_json(f)
            if not isinstance(rec, dict) or not isinstance(rec.get("natural_acc"), (int, float)):
                continue
            suite = str(rec.get("suite", "paper"))
            key = (f.stat().st_mtime, f.name.startswith("eval-"))
            if suite not in found or key > found[suite][0]:
                found[suite] = (key, rec)
    return {s: r for s, (_, r) in sorted(found.items())}


def _run_dirs(folder: Path, depth: int = 0):
    if (folder / "config.yaml").is_file():
        yield folder
        return
    if depth >= MAX_DEPTH:
        return
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from _run_dirs(child, depth + 1)


def find_runs(folders: list[str | Path]) -> list[Run]:
    """Every run directory at or below ``folders``; one sentence if there is none."""
    runs, missing = [], [str(f) for f in folders if not Path(f).is_dir()]
    if missing:
        raise ConfigError(f"{missing[0]} is not a folder; give run directories or folders that "
                          f"hold them (e.g. the --out of robustq sweep)")
    for folder in folders:
        for d in _run_dirs(Path(folder)):
            try:
                cfg = yaml.safe_load((d / "config.yaml").read_text())
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(cfg, dict):
                continue
            info = _read_json(d / "sweep.json") or {}
            failed = _read_json(d / "sweep-failed.json") or {}
            done = _read_json(d / "sweep-done.json")
            runs.append(Run(d, cfg, str(info.get("protocol", "custom")), load_records(d),
                            "" if done else str(failed.get("error", "")),
                            done if isinstance(done, dict) else {}))
    if not runs:
        raise ConfigError(f"no runs found under {', '.join(map(str, folders))} (a run directory "
                          f"holds a config.yaml and its evaluation records); pass the --out "
                          f"folder of a sweep or run directories")
    return runs


def check_one_protocol(runs: list[Run]) -> str:
    """The protocol all ``runs`` share; one sentence if they mix several."""
    protocols = sorted({r.protocol for r in runs})
    if len(protocols) > 1:
        example = {p: next(r.path for r in runs if r.protocol == p) for p in protocols}
        raise ConfigError(f"the runs mix protocols ({', '.join(f'{p}: e.g. {example[p]}' for p in protocols)}); "
                          f"report each protocol separately so that no table mixes budgets")
    return protocols[0]


def compute_seconds(run: Run) -> float:
    """Seconds a run recorded: its training epochs (``metrics.csv``) and its evaluations."""
    total = 0.0
    try:
        with open(run.path / "metrics.csv") as f:
            total += sum(float(r.get("seconds") or 0) for r in csv.DictReader(f))
    except (OSError, ValueError):
        pass
    return total + sum(float(r.get("eval_seconds") or 0) for r in run.records.values())


def sittings_from_log(path: Path) -> dict:
    """point -> (seconds from its last ``start`` to its ``done`` by the same worker, whether it
    was started more than once), from a sweep's ``sweep-log.jsonl`` (for points finished
    before the done marker kept the time)."""
    starts: dict = {}
    n_starts: dict = {}
    found: dict = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            e = json.loads(line)
            key = (e["point"], e.get("host"), e.get("pid"))
            if e["event"] == "start":
                starts[key] = float(e["time"])
                n_starts[e["point"]] = n_starts.get(e["point"], 0) + 1
            elif e["event"] == "done" and key in starts:
                found[e["point"]] = (float(e["time"]) - starts.pop(key), n_starts[e["point"]] > 1)
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _number(x) -> float | None:
    """A marker's number, or None where it is missing or not a number (a hand-edited file)."""
    try:
        return float(x) if x is not None else None
    except (TypeError, ValueError):
        return None


def run_cost(run: Run, logs: dict) -> tuple[str, float, bool]:
    """(kind, core-seconds, resumed) of one run, as ``core_hours`` counts it: kind ``timed``
    (a finished sweep point's last sitting), ``untimed`` (its recorded seconds only) or
    ``none`` (a sweep point not yet done, or a run with no record). ``logs`` caches the sweep
    logs read, folder -> ``sittings_from_log``."""
    if run.pending:
        return "none", 0.0, False   # its time is not known yet
    threads = int(_number(run.machine.get("threads")) or 1)
    sitting, again = _number(run.machine.get("sitting_seconds")), run.machine.get("resumed")
    if sitting is None and run.machine:
        folder = run.path.parent
        if folder not in logs:
            logs[folder] = sittings_from_log(folder / "sweep-log.jsonl")
        sitting, again = logs[folder].get(run.path.name, (None, False))
    if sitting is not None:
        return "timed", sitting * threads, bool(again)
    if run.records:
        return "untimed", compute_seconds(run) * threads, False
    return "none", 0.0, False


def core_hours(runs: list[Run]) -> dict:
    """The compute the runs took, in core-hours: for each point a sweep finished, its last
    sitting's wall time (sweep-done.json ``sitting_seconds``: start-up, training, validation,
    evaluations) or else its start-to-done time in the sweep log, times its torch threads; for
    runs with neither (made by hand, or by an older robustq without a log), the seconds they
    recorded (``compute_seconds``) times their threads (1 if unknown). Sweep points not yet
    done are left out; ``resumed`` counts points whose earlier sittings are not included."""
    logs: dict = {}
    costs = [run_cost(r, logs) for r in runs]
    return {"core_hours": sum(c for _, c, _ in costs) / 3600,
            "timed": sum(k == "timed" for k, _, _ in costs),
            "untimed": sum(k == "untimed" for k, _, _ in costs),
            "resumed": sum(again for _, _, again in costs)}


def cost_by_setting(runs: list[Run]) -> list[dict]:
    """One row per setting (the descriptor without the seed) of the runs with a known cost:
    how many, their core-minutes each (mean, sample std) and in all, largest total first."""
    groups: dict = {}
    logs: dict = {}
    for r in runs:
        kind, cost, _ = run_cost(r, logs)
        if kind == "none":
            continue
        d = r.descriptor
        key = (d["dataset"], d["model"], d["quant"], str(d["method"]), d["loss"])
        groups.setdefault(key, []).append((cost / 60, kind))
    rows = []
    for key, items in groups.items():
        m, sd, n = mean_std([c for c, _ in items])
        rows.append({"setting": key, "runs": n, "untimed": sum(k == "untimed" for _, k in items),
                     "minutes_mean": m, "minutes_std": sd, "core_hours": m * n / 60})
    return sorted(rows, key=lambda r: (-r["core_hours"], r["setting"]))


def check_unique(runs: list[Run]) -> None:
    """Two evaluated runs with the same settings and seed would be counted twice as one seed."""
    seen: dict = {}
    for r in runs:
        if not r.records:
            continue
        key = tuple(sorted(r.descriptor.items()))
        if key in seen:
            raise ConfigError(f"two runs have the same settings and seed {r.descriptor['seed']} "
                              f"({seen[key]} and {r.path}); keep one of them or report them "
                              f"separately")
        seen[key] = r.path


def metrics(record: dict) -> dict:
    """The flat metrics of one record: accuracies per attack, worst case, sparsity."""
    out = {"natural_acc": record.get("natural_acc")}
    out.update({k: v for k, v in (record.get("attacks") or {}).items() if isinstance(v, (int, float))})
    for k in ("robust_acc_worst", "natural_acc_noise_off", "weight_sparsity", "channel_sparsity"):
        if isinstance(record.get(k), (int, float)):
            out[k] = record[k]
    return {k: float(v) for k, v in out.items() if v is not None}


TIDY_FIELDS = ["run", "protocol", "dataset", "model", "quant", "method", "loss", "seed",
               "epochs", "suite", "n_eval", "metric", "value"]


def tidy_rows(runs: list[Run]) -> list[dict]:
    """One row per run x suite x metric (values are fractions in [0, 1])."""
    rows = []
    for r in runs:
        d = r.descriptor
        for suite, rec in r.records.items():
            for metric, value in metrics(rec).items():
                rows.append({"run": str(r.path), "protocol": r.protocol, **d,
                             "epochs": r.config.get("train", {}).get("epochs"), "suite": suite,
                             "n_eval": rec.get("n_eval"), "metric": metric, "value": value})
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TIDY_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
