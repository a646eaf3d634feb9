"""Generated bad configs, ``--set`` overrides and command lines (the "config / --set / CLI"
row). Every config key gets the wrong-type and non-finite values of its type, given through
``--set`` and through a config file in turn; then the semantic limits of each key, malformed
and hostile YAML files, malformed overrides and command lines, and a set of valid edge
values that must train correctly."""
from __future__ import annotations

import dataclasses
import random
import typing
from pathlib import Path

import torch
import yaml

from .assets import QUIET, TINY, assets
from .harness import Case

AREA = "config / --set / CLI"
BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\ntrain: {epochs: *g}\n")


def leaf_keys() -> list[tuple[str, typing.Any]]:
    """Every config key with its type (``section.key``)."""
    from robustq.config import RunConfig

    out = []
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = typing.get_type_hints(tp)
            out += [(f"{f.name}.{g.name}", sub[g.name]) for g in dataclasses.fields(tp)]
        else:
            out.append((f.name, tp))
    return out


def _base(tp) -> tuple[set, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union or type(None) in args:
        return {a for a in args if a is not type(None)}, type(None) in args
    return {tp}, False


def wrong_values(tp) -> list[tuple[str, object]]:
    """Values that are wrong for any key of type ``tp``: (label, value)."""
    types, optional = _base(tp)
    numeric = types & {int, float}
    vals = [("mapping", {"x": 1}), ("deep list", [[[[[1]]]]]), ("big string", "x" * 100_000),
            ("nul string", "a\0b"), ("huge int", 2 ** 64), ("minus huge int", -2 ** 64)]
    if str not in types:
        vals += [("word", "abc"), ("empty string", "")]
    if numeric or bool in types:
        vals += [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]
    if numeric:
        vals += [("bool", True), ("list", [1, 2])]
    if bool in types:
        vals += [("int for bool", 2), ("float for bool", 0.5)]
    if types & {str}:
        vals += [("int for string", 5), ("float for string", 1.5), ("list for string", ["a"])]
    if not optional:
        vals.append(("null", None))
    if typing.get_origin(tp) is list:
        vals = [v for v in vals if v[0] != "list"] + [("nan item", [float("nan")]),
                                                     ("mapping item", [{"a": 1}])]
    if tp is dict:  # eval.attack_args: a mapping is its type; its values are checked elsewhere
        vals = [v for v in vals if v[0] not in ("mapping",)]
    return vals


SEMANTIC = {
    "device": ["gpu", "cuda:x", "cpu0", "", "tpu"],
    "name": ["a/b", "../x", "", ".hidden", "a b", "x" * 101, "a\\b", "-x"],
    "seed": [-1, 2 ** 31, 2 ** 63 - 1, 2 ** 62],
    "data.name": ["imagenet", "", "../cifar10", "FASHION"],
    "data.root": ["/nonexistent/robustq", "\0"],
    "data.val_size": [-0.1, 1.5, -1, 10000, 20000],
    "data.train_size": [0, -5],
    "data.verify": [True],
    "model.depth": [7, 9, 0, -4, 2, 2006, 100000],
    "model.ensemble": [0, -1, 65, 100000],
    "model.noise": [-0.1, 101, 1e300],
    "quant.scheme": ["-1bit", "9bit", "0bit", "float32", "", "4bit!", "../4bit", "10bit"],
    "quant.method": ["xx", "BR", ""],
    "quant.policy": ["some", ""],
    "quant.lambda0": [0, -1],
    "quant.rho": [0.5, 0, -2],
    "quant.cutoff": [-1, 3, 100],
    "loss.name": ["mse", ""],
    "loss.alpha": [-1],
    "loss.beta": [-1, -1e-9],
    "adv.eps": [-0.1, 2, "8/0", "8/", "abc", "1/255/3", "nan", "inf", "-8/255", "0x10"],
    "adv.step": [0, -1, "0/255", 1.5],
    "adv.steps": [0, -1],
    "adv.bn_mode": ["test", ""],
    "adv.attack": ["fgsm2", "", "PGD"],
    "adv.replay": [0, -1],
    "adv.noise_k": [-1],
    "adv.fast_step": [-0.1, "1/0", 2],
    "train.schedule": ["cosine", ""],
    "train.peak": [0, 1, -0.5],
    "train.co_guard": ["maybe", ""],
    "train.co_drop": [-0.1, 2],
    "train.co_gap": [-0.1, 2],
    "train.epochs": [0, -1],
    "train.batch_size": [0, -32],
    "train.lr": [0, -0.1],
    "train.momentum": [1, -0.1, 1.5],
    "train.weight_decay": [-1],
    "train.milestones": [[0.5, 0.2], [1.5], [0], [-0.1], [1]],
    "train.lr_gamma": [0, 1.5, -0.1],
    "train.precision": ["fp16", ""],
    "train.val_attack_steps": [0],
    "train.max_batches": [0, -1],
    "eval.attacks": [["nope"], ["fgsm", 3], "fgsm"],
    "eval.eps": [-1, 2, "9/0"],
    "eval.n_eval": [0, -1],
    "eval.batch_size": [0],
    "eval.precision": ["fp8"],
    "eval.seed": [-1, 2 ** 31, 2 ** 63 - 1],
    "eval.suite": ["x", ""],
    "eval.eot_samples": [0, -1],
    "eval.draws": [0],
    "eval.attack_args": [{"nope": {}}, {"fgsm": 5}],
}
# edge values that are valid: they must train (2 tiny epochs) and give a complete run
VALID = [("seed", 2 ** 31 - 1), ("eval.seed", 2 ** 31 - 1), ("adv.eps", "8/255"),
         ("quant.scheme", "4-bit"), ("quant.scheme", "binary"), ("quant.scheme", "ternary"),
         ("name", "my-run.v2"), ("train.lr", "1e-3"), ("model.noise", 0), ("data.augment", False),
         ("loss.name", "trades"), ("data.val_size", 16), ("quant.cutoff", 0), ("adv.step", "2/255"),
         ("train.milestones", [0.5]), ("adv.attack", "fgsm_rs"), ("train.schedule", "onecycle")]


def _yaml_value(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=10 ** 9).strip().removesuffix("...").strip()


def _override_case(key: str, label: str, value, via_file: bool, expect: str = "error") -> Case:
    def prepare(work: Path) -> list[str]:
        base = ["train", str(assets().config), "--out", str(work / "out"), "--no-eval", *QUIET]
        if not via_file:
            return base + ["--set", f"{key}={_yaml_value(value)}"]
        section, _, leaf = key.rpartition(".")
        cfg = {**TINY}
        if section:
            cfg[section] = {**cfg.get(section, {}), leaf: value}
        else:
            cfg[leaf] = value
        (work / "c.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=False))
        base[1] = str(work / "c.yaml")
        return base

    how = "file" if via_file else "--set"
    return Case(AREA, f"{key}={label} ({how})", prepare, expect,
                check=_complete_run if expect == "success" else None)


def _complete_run(work: Path):
    from robustq.checkpoint import CHECKPOINT_FORMAT, load
    ck = load(work / "out" / "checkpoint.pt", CHECKPOINT_FORMAT)
    if ck["epoch"] != 2 or len(ck["metrics"]) != 2 or not (work / "out" / "model.pt").is_file():
        return "the run is incomplete"
    if not all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point()):
        return "the weights are not finite"
    return None


def _file_case(name: str, content, expect: str = "error") -> Case:
    def prepare(work: Path) -> list[str]:
        p = work / "c.yaml"
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["train", str(p), "--out", str(work / "out"), "--no-eval", *QUIET]
    return Case(AREA, f"file: {name}", prepare, expect)


def _argv_case(name: str, argv, expect: str = "error") -> Case:
    def prepare(work: Path) -> list[str]:
        return [a.replace("{work}", str(work)).replace("{run}", str(assets().run))
                .replace("{cfg}", str(assets().config)) for a in argv]
    return Case(AREA, f"argv: {name}", prepare, expect)


def file_contents() -> list[tuple[str, object]]:
    rng = random.Random(0)
    out = [("empty", ""), ("comments only", "# nothing\n# here\n"), ("whitespace", "  \n\n"),
           ("document marker", "---\n"), ("null", "null\n"), ("list", "[1, 2]\n"), ("number", "5\n"),
           ("string", "'hello'\n"), ("utf-16", "train: {epochs: 1}\n".encode("utf-16")),
           ("utf-16-be", b"\xfe\xff" + "train: {}\n".encode("utf-16-be")),
           ("latin-1", "name: caf\xe9\n".encode("latin-1")), ("nul bytes", b"train:\0 {}\n"),
           ("duplicate section", "train: {epochs: 1}\ntrain: {lr: 0.1}\n"),
           ("duplicate key", "train:\n  epochs: 1\n  epochs: 2\n"),
           ("duplicate top key", "seed: 1\nseed: 2\n"),
           ("alias bomb", BOMB), ("recursive alias", "train: &a {epochs: *a}\n"),
           ("recursive list", "eval: {attacks: &a [*a]}\n"),
           ("deep nesting", "train: " + "[" * 200 + "]" * 200 + "\n"),
           ("very deep nesting", "x: " + "[" * 50000 + "]" * 50000 + "\n"),
           ("python object", "!!python/object/apply:os.system ['touch pwned']\n"),
           ("python name", "train: !!python/name:os.system\n"),
           ("python module", "train: !!python/module:os\n"),
           ("binary tag", "name: !!binary aGVsbG8=\n"), ("set tag", "train: !!set {a, b}\n"),
           ("timestamp", "name: 2001-12-14\n"), ("tabs", "train:\n\tepochs: 1\n"),
           ("unterminated quote", "name: 'abc\n"), ("unbalanced", "train: {epochs: 1\n"),
           ("non-string key", "1: 2\n"), ("list key", "? [a]\n: 1\n"), ("nul key", "\"a\\0\": 1\n"),
           ("section is a list", "train: [1, 2]\n"), ("section is null", "train:\n"),
           ("section is a number", "model: 8\n"), ("unknown section", "trian: {epochs: 1}\n"),
           ("unknown key", "train: {epoks: 1}\n"), ("unknown key deep", "train: {epochs: {a: 1}}\n"),
           ("huge file", "# " + "x" * 2_000_000 + "\n"), ("long key", "k" * 100_000 + ": 1\n"),
           ("merge key bomb", "a: &a {x: 1}\ntrain:\n  <<: *a\n"),
           ("quickstart with a typo", "name: q\ntrain: {epochs: 1, batchsize: 4}\n")]
    out += [(f"random bytes {i}", bytes(rng.randrange(256) for _ in range(200))) for i in range(8)]
    out += [(f"random text {i}", "".join(rng.choice("ab:{}[]-&*!|>'\"\n #") for _ in range(60)))
            for i in range(12)]
    return out


ARGVS = [("no verb args", ["train"]), ("unknown verb", ["trian"]), ("bad device", ["train", "{cfg}", "--device", "tpu"]),
         ("config missing", ["train", "{work}/none.yaml", "--out", "{work}/o"]),
         ("config is a folder", ["train", "{work}", "--out", "{work}/o"]),
         ("config is /dev/null", ["train", "/dev/null", "--out", "{work}/o"]),
         ("config is a device", ["train", "/dev/zero", "--out", "{work}/o"]),
         ("config name too long", ["train", "{work}/" + "c" * 300 + ".yaml"]),
         ("resume and config", ["train", "{cfg}", "--resume", "{run}"]),
         ("resume nothing", ["train", "--resume", "{work}/none"]),
         ("resume a file", ["train", "--resume", "{cfg}"]),
         ("set without =", ["train", "{cfg}", "--set", "train.epochs"]),
         ("set empty key", ["train", "{cfg}", "--set", "=5"]),
         ("set dotted wrong", ["train", "{cfg}", "--set", "a..b=1"]),
         ("set into a value", ["train", "{cfg}", "--set", "train.epochs.x=1"]),
         ("set a section", ["train", "{cfg}", "--set", "train=5"]),
         ("set nul key", ["train", "{cfg}", "--set", "tra\0in.epochs=1"]),
         ("set long key", ["train", "{cfg}", "--set", "k" * 10000 + "=1"]),
         ("set bomb", ["train", "{cfg}", "--set", "train.epochs=" + BOMB.replace("\n", "; ")]),
         ("set yaml bomb flow", ["train", "{cfg}", "--set", "eval.attack_args=" + "{a: " * 5000 + "1" + "}" * 5000]),
         ("set python tag", ["train", "{cfg}", "--set", "name=!!python/object/apply:os.system [ls]"]),
         ("eval eot negative", ["eval", "{run}", "--eot", "-1", "--results", "{work}/r.json"]),
         ("eval draws zero", ["eval", "{run}", "--draws", "0", "--results", "{work}/r.json"]),
         ("eval eot word", ["eval", "{run}", "--eot", "many"]),
         ("eval curve garbage", ["eval", "{run}", "--curve", "abc", "--results", "{work}/r.json"]),
         ("eval curve too big", ["eval", "{run}", "--curve", "2", "--results", "{work}/r.json"]),
         ("eval curve division", ["eval", "{run}", "--curve", "1/0", "--results", "{work}/r.json"]),
         ("eval suite unknown", ["eval", "{run}", "--suite", "best"]),
         ("eval missing target", ["eval", "{work}/none"]),
         ("eval bad set", ["eval", "{run}", "--set", "eval.n_eval=0", "--results", "{work}/r.json"]),
         ("eval set train key", ["eval", "{run}", "--set", "train.lr=nan", "--results", "{work}/r.json"]),
         ("prune align zero", ["prune", "{run}", "--align", "0", "--out", "{work}/p.safetensors"]),
         ("export align negative", ["export", "{run}", "--align", "-8", "--out", "{work}/p.safetensors"]),
         ("export align word", ["export", "{run}", "--align", "x"]),
         ("sparsity missing", ["sparsity", "{work}/none.pt"]),
         ("data fetch unknown", ["data", "fetch", "imagenet-22k"]),
         ("data fetch bundled", ["data", "fetch", "fashion-mnist-10k", "--root", "{work}/d"]),
         ("run with config", ["run", "{cfg}"]), ("version typo", ["--versoin"])]


def cases() -> list[Case]:
    out, i = [], 0
    for key, tp in leaf_keys():
        for label, value in wrong_values(tp):
            out.append(_override_case(key, label, value, via_file=bool(i % 2)))
            i += 1
        for value in SEMANTIC.get(key, []):
            for via_file in (False, True):
                out.append(_override_case(key, repr(value)[:40], value, via_file))
    out += [_file_case(n, c) for n, c in file_contents()]
    out += [_argv_case(n, a) for n, a in ARGVS]
    out += [_override_case(k, repr(v), v, via_file=bool(j % 2), expect="success")
            for j, (k, v) in enumerate(VALID)]
    return out
