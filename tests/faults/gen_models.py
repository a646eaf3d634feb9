"""Damaged and tampered model files (the "model files" row): the run's ``model.pt``, its
export and its pruned file, with random bit flips, zeroed bytes, truncations and appended
bytes (damage that may be harmless: then the verb's result must be the intact model's), and
with edits a hostile user would make (NaN weights, negative BN variances, weights off the
Q(w) grid, metadata of the wrong types, absurd architectures), each with the content hash
recomputed (so the checks behind it must catch the edit) and without (the hash must).
Each case runs one verb on the file: sparsity, prune, export or eval, in turn."""
from __future__ import annotations

import io
import json
import pickle
import random
from pathlib import Path
from typing import Callable

import torch

from .assets import assets, same_state, state_of
from .harness import Case

AREA = "model files (eval, sparsity, export, prune)"
VERBS = ("sparsity", "prune", "export", "sparsity", "prune", "export", "eval")


def verb_argv(verb: str, f: Path, work: Path) -> list[str]:
    return {"sparsity": ["sparsity", str(f), "--no-figures"],
            "prune": ["prune", str(f), "--out", str(work / "p.safetensors")],
            "export": ["export", str(f), "--out", str(work / "e.safetensors")],
            "eval": ["eval", str(f), "--results", str(work / "r.json"), "--quiet", "--device", "cpu",
                     "--set", "eval.n_eval=8", "--set", "eval.attacks=[fgsm]", "--set", "eval.batch_size=8"],
            }[verb]


def _source(kind: str) -> Path:
    a = assets()
    return {"model.pt": a.model, "export": a.export, "pruned": a.pruned}[kind]


def _same_as(kind: str) -> Callable[[Path], object]:
    def check(work: Path):
        name = _source(kind).name
        return None if same_state(state_of(work / name), state_of(_source(kind))) else \
            "the damaged file loaded as a different model"
    return check


def _bytes_case(kind: str, label: str, damage: Callable[[bytes], bytes], verb: str) -> Case:
    def prepare(work: Path) -> list[str]:
        src = _source(kind)
        (work / src.name).write_bytes(damage(src.read_bytes()))
        return verb_argv(verb, work / src.name, work)
    return Case(AREA, f"{kind} {label} ({verb})", prepare, "either", check=_same_as(kind))


def _flip(offset: int, bit: int) -> Callable[[bytes], bytes]:
    def f(b: bytes) -> bytes:
        o = offset % len(b)
        return b[:o] + bytes([b[o] ^ (1 << bit)]) + b[o + 1:]
    return f


def byte_cases(rng: random.Random) -> list[Case]:
    out, k = [], 0
    counts = {"model.pt": (300, 40, 40, 10), "export": (150, 20, 20, 5), "pruned": (70, 10, 10, 5)}
    for kind, (flips, zeros, cuts, tails) in counts.items():
        damages = [(f"bit flip {i}", _flip(rng.randrange(1 << 30), rng.randrange(8))) for i in range(flips)]
        for i in range(zeros):
            o, n = rng.randrange(1 << 30), rng.choice([4, 16, 64])
            damages.append((f"zeroed bytes {i}", lambda b, o=o, n=n: b[:o % len(b)] + bytes(n) + b[o % len(b) + n:]))
        for i in range(cuts):
            frac = rng.random()
            damages.append((f"truncated {i}", lambda b, frac=frac: b[:int(len(b) * frac)]))
        for i in range(tails):
            extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 100, 5000])))
            damages.append((f"appended bytes {i}", lambda b, e=extra: b + e))
        damages += [("empty", lambda b: b""), ("random bytes", lambda b: random.Random(1).randbytes(len(b)))]
        for label, d in damages:
            out.append(_bytes_case(kind, label, d, VERBS[k % len(VERBS)]))
            k += 1
    return out


# --- edits of model.pt (torch.save dicts) --------------------------------------------------

def _first(sd: dict, suffix: str) -> str:
    return next(k for k in sorted(sd) if k.endswith(suffix))


def _quantized(obj: dict) -> str:
    layer = next(k for k, v in sorted(obj["meta"]["bit_map"].items()) if v != "float")
    return f"{layer}.weight"


def _put(path: list, value) -> Callable[[dict], None]:
    def edit(obj: dict) -> None:
        node = obj
        for p in path[:-1]:
            node = node[p]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return edit


def _tensor_edit(pick: Callable[[dict], str], fn: Callable[[torch.Tensor, dict], None]):
    def edit(obj: dict) -> None:
        name = pick(obj)
        t = obj["state_dict"][name]
        fn(t, obj)
    return edit


def _off_grid(t: torch.Tensor, obj) -> None:
    t.view(-1)[0] = t.view(-1)[0] * 1.01 + 1e-4


def _half_step(t: torch.Tensor, obj) -> None:
    s = t.abs()[t != 0].min()
    t.view(-1)[0] = 0.5 * s


def _overflow(t: torch.Tensor, obj) -> None:
    s = t.abs()[t != 0].min()
    t.view(-1)[0] = 100 * s


PT_EDITS = {
    "nan first conv": _tensor_edit(lambda o: _first(o["state_dict"], "conv1.weight"), lambda t, o: t.view(-1).__setitem__(0, float("nan"))),
    "inf bn weight": _tensor_edit(lambda o: _first(o["state_dict"], "bn1.weight"), lambda t, o: t.view(-1).__setitem__(0, float("inf"))),
    "-inf linear bias": _tensor_edit(lambda o: _first(o["state_dict"], "linear.bias"), lambda t, o: t.view(-1).__setitem__(0, float("-inf"))),
    "nan running mean": _tensor_edit(lambda o: _first(o["state_dict"], "running_mean"), lambda t, o: t.view(-1).__setitem__(0, float("nan"))),
    "negative running var": _tensor_edit(lambda o: _first(o["state_dict"], "running_var"), lambda t, o: t.view(-1).__setitem__(0, -1.0)),
    "all running vars negative": lambda o: [v.neg_().sub_(1) for k, v in o["state_dict"].items() if k.endswith("running_var")],
    "off grid": _tensor_edit(_quantized, _off_grid),
    "half a grid step": _tensor_edit(_quantized, _half_step),
    "code beyond the bit width": _tensor_edit(_quantized, _overflow),
    "quantized layer scaled per channel": _tensor_edit(_quantized, lambda t, o: t[0].mul_(1.5)),
    "bit_map a list": _put(["meta", "bit_map"], ["a"]),
    "bit_map a string": _put(["meta", "bit_map"], "4bit"),
    "bit_map values ints": lambda o: o["meta"].__setitem__("bit_map", {k: 4 for k in o["meta"]["bit_map"]}),
    "bit_map unknown quantizer": lambda o: o["meta"].__setitem__("bit_map", {k: "17bit" for k in o["meta"]["bit_map"]}),
    "bit_map names a missing layer": lambda o: o["meta"]["bit_map"].__setitem__("members.9.conv", "4bit"),
    "quant an int": _put(["meta", "quant"], 5), "method null": _put(["meta", "method"], None),
    "dataset an int": _put(["meta", "dataset"], 7), "epoch negative": _put(["meta", "epoch"], -1),
    "epoch a string": _put(["meta", "epoch"], "3"), "epoch a float": _put(["meta", "epoch"], 2.5),
    "format_version a string": _put(["format_version"], "2"), "format_version a float": _put(["format_version"], 2.0),
    "format_version true": _put(["format_version"], True), "format_version negative": _put(["format_version"], -1),
    "format_version future": _put(["format_version"], 99), "format a checkpoint": _put(["format"], "robustq-checkpoint"),
    "format missing": _put(["format"], KeyError),
    "depth huge": _put(["meta", "arch", "depth"], 10 ** 6), "depth not 6n+2": _put(["meta", "arch", "depth"], 9),
    "depth zero": _put(["meta", "arch", "depth"], 0), "depth negative": _put(["meta", "arch", "depth"], -8),
    "depth a string": _put(["meta", "arch", "depth"], "8"), "depth a float": _put(["meta", "arch", "depth"], 8.0),
    "depth true": _put(["meta", "arch", "depth"], True), "depth 2000 x 64": lambda o: o["meta"]["arch"].update(depth=2000, ensemble=64),
    "ensemble zero": _put(["meta", "arch", "ensemble"], 0), "ensemble 100000": _put(["meta", "arch", "ensemble"], 100000),
    "ensemble 2": _put(["meta", "arch", "ensemble"], 2),
    "noise nan": _put(["meta", "arch", "noise"], float("nan")), "noise inf": _put(["meta", "arch", "noise"], float("inf")),
    "noise negative": _put(["meta", "arch", "noise"], -1.0), "noise a string": _put(["meta", "arch", "noise"], "0.1"),
    "in_channels zero": _put(["meta", "arch", "in_channels"], 0), "in_channels 3": _put(["meta", "arch", "in_channels"], 3),
    "in_channels huge": _put(["meta", "arch", "in_channels"], 10 ** 9), "classes zero": _put(["meta", "arch", "num_classes"], 0),
    "classes 11": _put(["meta", "arch", "num_classes"], 11), "input size zero": _put(["meta", "arch", "input_size"], 0),
    "arch field missing": _put(["meta", "arch", "noise"], KeyError), "arch extra field": _put(["meta", "arch", "width"], 4),
    "arch a list": _put(["meta", "arch"], [8, 1]), "meta null": _put(["meta"], None), "meta missing": _put(["meta"], KeyError),
    "state_dict missing key": lambda o: o["state_dict"].pop(_first(o["state_dict"], "linear.bias")),
    "state_dict extra key": lambda o: o["state_dict"].__setitem__("members.0.evil", torch.zeros(3)),
    "state_dict wrong shape": lambda o: o["state_dict"].__setitem__(_first(o["state_dict"], "linear.bias"), torch.zeros(3)),
    "state_dict a list value": lambda o: o["state_dict"].__setitem__(_first(o["state_dict"], "linear.bias"), [0.0] * 10),
    "state_dict int key": lambda o: o["state_dict"].__setitem__(5, torch.zeros(1)),
    "state_dict null": _put(["state_dict"], None),
    "weights as ints": lambda o: o["state_dict"].__setitem__(_first(o["state_dict"], "linear.weight"),
                                                              o["state_dict"][_first(o["state_dict"], "linear.weight")].long()),
}


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/robustq-fault-pwned",))


def _edit_pt(edit: Callable[[dict], None], rehash: bool) -> Callable[[Path], bytes]:
    from robustq.integrity import content_hash

    def make(src: Path) -> bytes:
        obj = torch.load(src, weights_only=True)
        edit(obj)
        if rehash and isinstance(obj, dict):
            obj["sha256"] = content_hash(obj)
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()
    return make


def _whole(obj) -> Callable[[Path], bytes]:
    def make(src: Path) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()
    return make


# --- edits of the safetensors files --------------------------------------------------------

def _edit_st(edit: Callable[[dict, dict], None], rehash: bool) -> Callable[[Path], bytes]:
    from safetensors import safe_open
    from safetensors.torch import save
    from robustq.integrity import content_hash

    def make(src: Path) -> bytes:
        with safe_open(str(src), "pt") as f:
            header = json.loads(f.metadata()["robustq"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        edit(header, tensors)
        if rehash and isinstance(header, dict):
            header["sha256"] = content_hash({"header": {k: v for k, v in header.items() if k != "sha256"},
                                             "tensors": tensors})
        return save(tensors, metadata={"robustq": json.dumps(header)})
    return make


def _h(key, value):
    def edit(h, t):
        node = h
        for p in key[:-1]:
            node = node[p]
        node[key[-1]] = value
    return edit


def _t(suffix, fn):
    def edit(h, t):
        name = next(k for k in sorted(t) if k.endswith(suffix))
        fn(t, name)
    return edit


ST_EDITS = {
    "bit_map a list": _h(["bit_map"], []), "quant an int": _h(["quant"], 3), "epoch a string": _h(["epoch"], "2"),
    "format_version a string": _h(["format_version"], "2"), "format_version future": _h(["format_version"], 9),
    "format other": _h(["format"], "other"), "depth huge": _h(["arch", "depth"], 10 ** 7),
    "ensemble 100000": _h(["arch", "ensemble"], 100000), "depth 2000 x 64": lambda h, t: h["arch"].update(depth=2000, ensemble=64),
    "noise a string": _h(["arch", "noise"], "x"), "classes zero": _h(["arch", "num_classes"], 0),
    "arch null": _h(["arch"], None), "pruned plan null": _h(["pruned"], None), "packed a list": _h(["packed"], []),
    "nan bn weight": _t("bn1.weight", lambda t, n: t[n].view(-1).__setitem__(0, float("nan"))),
    "negative running var": _t("running_var", lambda t, n: t[n].view(-1).__setitem__(0, -2.0)),
    "inf linear weight": _t("linear.weight", lambda t, n: t[n].view(-1).__setitem__(0, float("inf"))),
    "extra tensor": lambda h, t: t.__setitem__("evil", torch.zeros(2)),
    "missing tensor": _t("linear.bias", lambda t, n: t.pop(n)),
    "wrong shape": _t("linear.bias", lambda t, n: t.__setitem__(n, torch.zeros(3))),
}
ST_PACKED_EDITS = {
    "codes beyond the bit width": _t(".codes", lambda t, n: t[n].__setitem__(0, 0xFF)),
    "codes short": _t(".codes", lambda t, n: t.__setitem__(n, t[n][:-1])),
    "scale nan": _t(".scale", lambda t, n: t.__setitem__(n, torch.tensor([float("nan")]))),
    "scale negative": _t(".scale", lambda t, n: t.__setitem__(n, torch.tensor([-1.0]))),
    "scale a double": _t(".scale", lambda t, n: t.__setitem__(n, t[n].double())),
}


def edit_cases() -> list[Case]:
    out, k = [], 0
    makers = []
    for name, edit in PT_EDITS.items():
        for rehash in (True, False):
            makers.append(("model.pt", f"{name}{'' if rehash else ', hash not updated'}", _edit_pt(edit, rehash)))
    makers += [("model.pt", "a list", _whole([1, 2])), ("model.pt", "a pickled os.system", _whole(_Evil())),
               ("model.pt", "plain pickle", lambda src: pickle.dumps({"format": "robustq-model"}))]
    for kind, edits in (("export", {**ST_EDITS, **ST_PACKED_EDITS}), ("pruned", ST_EDITS)):
        for name, edit in edits.items():
            for rehash in (True, False):
                makers.append((kind, f"{name}{'' if rehash else ', hash not updated'}", _edit_st(edit, rehash)))
    for kind, label, make in makers:
        verb = VERBS[k % len(VERBS)]
        k += 1

        def prepare(work: Path, kind=kind, make=make, verb=verb) -> list[str]:
            src = _source(kind)
            (work / src.name).write_bytes(make(src))
            return verb_argv(verb, work / src.name, work)
        out.append(Case(AREA, f"{kind} {label} ({verb})", prepare, "error"))
    return out


def cases() -> list[Case]:
    return byte_cases(random.Random(15)) + edit_cases()
