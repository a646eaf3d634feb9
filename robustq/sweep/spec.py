"""Sweep files: a base config, overrides, axes and seeds, expanded into named points.

A sweep file is YAML::

    name: t1                      # default: the file's stem
    protocol: reduced             # a tag stored in every run; `robustq report` never mixes two
    base: paper-cifar10           # a bundled config name or a path (relative to this file)
    set: {train.epochs: 12}       # dotted keys applied to every point
    rows:                         # explicit points (any dotted keys), crossed with grid and zip
      - {quant.method: br}
      - {quant.method: bc}
    grid: {model.ensemble: [1, 2]}        # cartesian product
    zip: {loss.alpha: [0, 1], loss.beta: [1, 8]}   # equal-length lists taken together
    seeds: [0, 1, 2]
    evaluate:                     # suites run after training, each with its eval.* overrides
      paper: {eval.n_eval: 1000}
      strong: {eval.n_eval: 200}

Points = rows x grid x zip x seeds (a missing part counts as one empty point). A point is named
from its own values (``loss.alpha``, ``loss.beta``, ``seed`` ... sorted by key, not the shared
``set``), e.g. ``alpha-1_beta-8_seed-0``, so the same row written in two sweep files gets the same
name: run together into one ``--out``, they are trained once. Every point's config is built and
validated here, before anything runs.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig, load_config, set_override
from ..errors import ConfigError

TOP_KEYS = ("name", "protocol", "base", "set", "rows", "grid", "zip", "seeds", "evaluate")


@dataclass
class Point:
    """One run of a sweep: its name, the values that define it, its config and evaluations."""
    name: str
    values: dict                      # the point's own dotted keys (and seed)
    config: RunConfig
    evaluate: dict = field(default_factory=dict)   # suite -> {dotted eval key: value}
    sweep: str = ""
    protocol: str = "custom"
    source: str = ""

    def info(self) -> dict:
        """What ``sweep.json`` in the run directory records about the point."""
        return {"sweep": self.sweep, "protocol": self.protocol, "point": self.name,
                "values": self.values, "evaluate": self.evaluate, "source": self.source}

    def eval_overrides(self, suite: str) -> list[str]:
        return [f"eval.suite={suite}"] + [f"{k}={json.dumps(v)}"
                                          for k, v in self.evaluate.get(suite, {}).items()]


def _fail(path: Path, message: str) -> None:
    raise ConfigError(f"sweep file {path}: {message}")


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist; pass the path of a sweep YAML "
                          f"such as sweeps/reduced/t1.yaml") from None
    except yaml.YAMLError:
        raise ConfigError(f"sweep file {path} is not valid YAML; fix its syntax") from None
    if not isinstance(data, dict):
        _fail(path, "must be a mapping with keys such as base, grid, seeds")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        _fail(path, f"unknown key {unknown[0]!r}; the keys are {', '.join(TOP_KEYS)}")
    return data


def _base_path(path: Path, base: Any) -> Path | None:
    """``base``: a bundled config name (``paper-cifar10``) or a YAML path next to the sweep."""
    if base is None:
        return None
    if not isinstance(base, str):
        _fail(path, f"base must be a config name or path, got {base!r}")
    bundled = Path(str(resources.files("robustq") / "configs" / f"{base}.yaml"))
    for cand in (path.parent / base, Path(base), bundled):
        if cand.is_file():
            return cand
    _fail(path, f"base {base!r} is neither a bundled config (quickstart, paper-cifar10, ...) "
                f"nor a file next to the sweep")


def _mapping(path: Path, data: dict, key: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        _fail(path, f"{key} must map dotted config keys (train.epochs) to values")
    return value


def _axes(path: Path, data: dict) -> list[dict]:
    """rows x grid x zip as a list of {dotted key: value}, with no key set twice."""
    rows = data.get("rows") or [{}]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        _fail(path, "rows must be a list of mappings of dotted config keys to values")
    grid, zipped = _mapping(path, data, "grid"), _mapping(path, data, "zip")
    for part, axes in (("grid", grid), ("zip", zipped)):
        for k, v in axes.items():
            if not isinstance(v, list) or not v:
                _fail(path, f"{part}.{k} must be a non-empty list of values")
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        _fail(path, f"the zip lists must have one length, got {sorted(lengths)}")
    grid_items = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    zip_items = [dict(zip(zipped, combo)) for combo in zip(*zipped.values())] or [{}]
    points = []
    for row, g, z in itertools.product(rows, grid_items, zip_items):
        seen = [set(row), set(g), set(z)]
        for a, b in itertools.combinations(range(3), 2):
            both = seen[a] & seen[b]
            if both:
                _fail(path, f"key {sorted(both)[0]!r} is set by more than one of rows, grid, zip")
        points.append({**row, **g, **z})
    return points


def _fmt(value: Any) -> str:
    """A value as it appears in a run name: 1.0 -> 1, 8/255 -> 8d255, [1, 2] -> 1+2."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "+".join(_fmt(v) for v in value)
    elif isinstance(value, dict):
        text = "+".join(f"{k}{_fmt(v)}" for k, v in value.items())
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text.replace("/", "d"))


def point_name(values: dict) -> str:
    """``alpha-1_beta-8_seed-0``: each key by its last part, or its last two parts where the
    last part alone is ambiguous (``loss.name`` and ``data.name`` both end in ``name``)."""
    keys = sorted(values)
    last = [k.split(".")[-1] for k in keys]
    parts = []
    for k, short in zip(keys, last):
        label = short if last.count(short) == 1 and short != "name" else k.replace(".", "-")
        parts.append(f"{label}-{_fmt(values[k])}")
    return "_".join(parts) or "point"


def _evaluate(path: Path, data: dict) -> dict:
    from ..robustness.suites import SUITES

    ev = data.get("evaluate", {"paper": {}})
    if not isinstance(ev, dict):
        _fail(path, "evaluate must map suite names (paper, strong) to eval.* overrides")
    for suite, over in ev.items():
        if suite not in SUITES:
            _fail(path, f"evaluate: {suite!r} is not a suite; choose from {', '.join(SUITES.names())}")
        over = over or {}
        ev[suite] = over
        bad = [k for k in (over if isinstance(over, dict) else [None]) if not str(k).startswith("eval.")]
        if bad:
            _fail(path, f"evaluate.{suite} must map eval.* keys to values, got {bad[0]!r}")
    return ev


def _build(path: Path, base: Path | None, values: dict, shared: dict) -> RunConfig:
    data = load_config(base).to_dict() if base else RunConfig().to_dict()
    for key, value in {**shared, **values}.items():
        set_override(data, f"{key}={json.dumps(value)}")
    return load_config(None, base=data)


def overrides_dict(overrides) -> list[tuple[str, Any]]:
    """``key=value`` strings as (key, parsed value) pairs."""
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        pairs.append((k.strip(), yaml.safe_load(v) if v.strip() else None))
    return pairs


def load_sweep(path: str | Path, overrides: list[str] = ()) -> list[Point]:
    """Expand one sweep file into its points, every config built and validated.

    ``overrides`` (``key=value``) apply to every point after the file's own ``set``, and
    ``eval.*`` ones to every evaluation too (a tiny trial of a big sweep is the same command)."""
    path = Path(path)
    data = _read(path)
    base = _base_path(path, data.get("base"))
    shared = dict(_mapping(path, data, "set"))
    shared.update(overrides_dict(overrides))
    seeds = data.get("seeds", [None])
    if not isinstance(seeds, list) or not seeds or not all(s is None or isinstance(s, int) for s in seeds):
        _fail(path, "seeds must be a non-empty list of integers")
    evaluate, name = _evaluate(path, data), str(data.get("name") or path.stem)
    for suite in evaluate:   # --set eval.* wins over the file's evaluation settings too
        evaluate[suite].update({k: v for k, v in overrides_dict(overrides) if k.startswith("eval.")})
    protocol = str(data.get("protocol") or "custom")
    points = []
    for values in _axes(path, data):
        for seed in seeds:
            v = dict(values) if seed is None else {**values, "seed": seed}
            pname = point_name(v)
            try:
                cfg = _build(path, base, v, shared)
                for suite in evaluate:  # the evaluation settings must be valid too
                    load_config(None, Point(pname, v, cfg, evaluate).eval_overrides(suite),
                                base=cfg.to_dict())
            except ConfigError as e:
                raise ConfigError(f"sweep file {path}, point {pname}: {e}") from None
            points.append(Point(pname, v, cfg, evaluate, name, protocol, str(path)))
    return points


def load_sweeps(paths: list[str | Path], overrides: list[str] = ()) -> list[Point]:
    """The points of several sweep files in the order the files give them (file by file, each
    in its own order), so a protocol's tables finish one after another; a point that two files
    define identically is kept once, at its first place; two different points with one name
    are refused."""
    by_name: dict[str, Point] = {}
    for path in paths:
        for p in load_sweep(path, overrides):
            old = by_name.get(p.name)
            if old is None:
                by_name[p.name] = p
            elif old.config.to_dict() != p.config.to_dict() or old.evaluate != p.evaluate:
                raise ConfigError(f"point {p.name} is defined differently by {old.source} and "
                                  f"{p.source}; give one of them other values or run them into "
                                  f"separate --out folders")
            elif old.protocol != p.protocol:
                raise ConfigError(f"point {p.name} has protocol {old.protocol} in {old.source} "
                                  f"and {p.protocol} in {p.source}; one sweep run holds one protocol")
    protocols = {p.protocol for p in by_name.values()}
    if len(protocols) > 1:
        raise ConfigError(f"the sweep files mix protocols ({', '.join(sorted(protocols))}); run "
                          f"each protocol into its own --out folder")
    return list(by_name.values())


def parse_shard(text: str | None) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) -> (K, N); None -> (1, 1)."""
    if text is None:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/8 for the second of 8 "
                          f"jobs), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard(points: list[Point], k: int, n: int) -> list[Point]:
    """Shard K of N: every N-th point of the name-sorted list, starting at the K-th, run in
    the order of ``points``. The N shards are disjoint and together hold every point (on every
    machine, whatever order the files were given in: names are sorted)."""
    mine = {p.name for p in sorted(points, key=lambda p: p.name)[k - 1::n]}
    return [p for p in points if p.name in mine]
