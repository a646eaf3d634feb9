"""Corrupt checkpoints given to ``--resume`` (the "corrupt checkpoint" row): the run as it was
after epoch 1 of 2, with its ``checkpoint.pt`` missing keys, with impossible epochs, wrong
RNG state sizes, NaN learning rates or weights, a schedule out of step, bit flips and
truncations. A refusal must leave every file of the run as it was (nothing resumed); an
intact or harmlessly damaged checkpoint must resume to exactly the uninterrupted run."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Callable

import torch

from .assets import QUIET, assets
from .harness import Case, copy_tree

AREA = "corrupt checkpoint -> --resume"
TIMING = ("img_per_s", "seconds")


def _del(key):
    return lambda ck: ck.pop(key)


def _set(path, value):
    def edit(ck):
        node = ck
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return edit


def _poke(t: torch.Tensor, value) -> None:
    t[(0,) * t.dim()] = value  # any memory format (checkpoints hold channels_last weights)


def _first_param(ck) -> torch.Tensor:
    return next(v for k, v in sorted(ck["model"].items()) if k.endswith("conv1.weight"))


EDITS: dict[str, Callable[[dict], None]] = {
    **{f"missing {k}": _del(k) for k in ("epoch", "model", "optimizer", "scheduler", "rng", "best",
                                          "metrics", "format")},
    **{f"epoch {v!r}": _set(["epoch"], v) for v in (-1, 0, 3, 100, "1", 1.5, True, None)},
    "torch rng cut": lambda ck: ck["rng"].__setitem__("torch", ck["rng"]["torch"][:100]),
    "data rng cut": lambda ck: ck["rng"].__setitem__("data", ck["rng"]["data"][:-1]),
    "data rng longer": lambda ck: ck["rng"].__setitem__("data", torch.cat([ck["rng"]["data"]] * 2)),
    "rng torch missing": lambda ck: ck["rng"].pop("torch"), "rng a list": _set(["rng"], [1, 2]),
    "rng as int64": lambda ck: ck["rng"].__setitem__("torch", ck["rng"]["torch"].long()),
    **{f"lr {v!r}": (lambda v: lambda ck: ck["optimizer"]["param_groups"][0].__setitem__("lr", v))(v)
       for v in (float("nan"), float("inf"), -1.0, 0.0, "0.1")},
    "momentum nan": lambda ck: ck["optimizer"]["param_groups"][0].__setitem__("momentum", float("nan")),
    "no param groups": lambda ck: ck["optimizer"].__setitem__("param_groups", []),
    "momentum buffer nan": lambda ck: _poke(next(iter(ck["optimizer"]["state"].values()))["momentum_buffer"], float("nan")),
    "optimizer null": _set(["optimizer"], None),
    "optimizer of another model": lambda ck: (ck["optimizer"]["state"].pop(next(iter(ck["optimizer"]["state"]))),
                                              ck["optimizer"]["param_groups"][0]["params"].pop()),
    "momentum buffer missing": lambda ck: ck["optimizer"]["state"].pop(next(iter(ck["optimizer"]["state"]))),
    "schedule ahead": lambda ck: ck["scheduler"].__setitem__("last_epoch", 5),
    "schedule null": lambda ck: ck["scheduler"].__setitem__("last_epoch", None),
    "schedule lr nan": lambda ck: ck["scheduler"].__setitem__("_last_lr", [float("nan")]),
    "weight nan": lambda ck: _poke(_first_param(ck), float("nan")),
    "weight inf": lambda ck: _poke(_first_param(ck), float("inf")),
    "running var negative": lambda ck: next(v for k, v in ck["model"].items() if k.endswith("running_var")).fill_(-1),
    "weight missing": lambda ck: ck["model"].pop(next(iter(sorted(ck["model"])))),
    "weight wrong shape": lambda ck: ck["model"].__setitem__(next(iter(sorted(ck["model"]))), torch.zeros(2)),
    "weight extra": lambda ck: ck["model"].__setitem__("evil", torch.zeros(2)),
    "model null": _set(["model"], None),
    "metrics empty": _set(["metrics"], []), "metrics too long": lambda ck: ck["metrics"].append(dict(ck["metrics"][0])),
    "metrics a string": _set(["metrics"], "x"), "best epoch in the future": _set(["best", "epoch"], 7),
    "best null": _set(["best"], None), "format a model": _set(["format"], "robustq-model"),
    "format_version future": _set(["format_version"], 3), "format_version a string": _set(["format_version"], "2"),
}


def _resume_argv(work: Path) -> list[str]:
    return ["train", "--resume", str(work / "run1"), "--no-eval", *QUIET]


def _edited(edit, rehash: bool) -> Callable[[Path], list[str]]:
    from robustq.integrity import content_hash

    def prepare(work: Path) -> list[str]:
        copy_tree(assets().run1, work / "run1")
        p = work / "run1" / "checkpoint.pt"
        ck = torch.load(p, weights_only=True)
        edit(ck)
        if rehash:
            ck["sha256"] = content_hash(ck)
        buf = io.BytesIO()
        torch.save(ck, buf)
        p.write_bytes(buf.getvalue())
        return _resume_argv(work)
    return prepare


def _bytes(damage: Callable[[bytes], bytes]) -> Callable[[Path], list[str]]:
    def prepare(work: Path) -> list[str]:
        copy_tree(assets().run1, work / "run1")
        p = work / "run1" / "checkpoint.pt"
        p.write_bytes(damage(p.read_bytes()))
        return _resume_argv(work)
    return prepare


def exact_resume(run: Path, reference: Path) -> str | None:
    """None if ``run`` ended exactly as the uninterrupted ``reference`` (weights, optimizer,
    RNG, selected model and metrics; timings aside), else what differs."""
    import csv

    from robustq.checkpoint import CHECKPOINT_FORMAT, MODEL_FORMAT, load
    a, b = load(run / "checkpoint.pt", CHECKPOINT_FORMAT), load(reference / "checkpoint.pt", CHECKPOINT_FORMAT)
    if a["epoch"] != b["epoch"]:
        return f"ended after epoch {a['epoch']}, not {b['epoch']}"
    for part in ("model", "rng"):
        if a[part].keys() != b[part].keys() or not all(torch.equal(a[part][k], b[part][k]) for k in a[part]):
            return f"its {part} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    if sa.keys() != sb.keys() or not all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa):
        return "its optimizer state differs"
    ma, mb = load(run / "model.pt", MODEL_FORMAT), load(reference / "model.pt", MODEL_FORMAT)
    if not all(torch.equal(ma["state_dict"][k], mb["state_dict"][k]) for k in mb["state_dict"]):
        return "its model.pt differs"
    rows = lambda d: [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(open(d / "metrics.csv"))]
    if rows(run) != rows(reference):
        return "its metrics differ"
    if list(run.glob(".*.tmp*")) or list(run.glob(".robustq-probe-*")):
        return "stale .tmp files remain"
    return None


def _exact(work: Path):
    return exact_resume(work / "run1", assets().run)


def cases() -> list[Case]:
    out = []
    for name, edit in EDITS.items():
        out.append(Case(AREA, name, _edited(edit, True)))
        out.append(Case(AREA, f"{name}, hash not updated", _edited(edit, False)))
    rng = random.Random(1)
    for i in range(15):
        o, bit = rng.randrange(1 << 30), rng.randrange(8)
        flip = lambda b, o=o, bit=bit: b[:o % len(b)] + bytes([b[o % len(b)] ^ (1 << bit)]) + b[o % len(b) + 1:]
        out.append(Case(AREA, f"bit flip {i}", _bytes(flip), "either", check=_exact))
    for i, frac in enumerate((0.0, 0.1, 0.5, 0.9, 0.999)):
        out.append(Case(AREA, f"truncated to {frac:.1%}", _bytes(lambda b, f=frac: b[:int(len(b) * f)])))
    out.append(Case(AREA, "intact", _bytes(lambda b: b), "success", check=_exact))
    out.append(Case(AREA, "stale .tmp files beside it", _stale_tmp, "success", check=_exact))
    return out


def _stale_tmp(work: Path) -> list[str]:
    copy_tree(assets().run1, work / "run1")
    for name in ("checkpoint.pt", "model.pt", "metrics.csv"):
        (work / "run1" / f".{name}.tmp4242").write_bytes(b"half written")
    return _resume_argv(work)
