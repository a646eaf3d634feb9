"""Experiment configuration: dataclasses, one YAML file per experiment, ``--set`` overrides.

A config is a nested mapping whose sections mirror ``RunConfig``. Loading checks every key
(unknown keys fail with a suggestion), every type, and every range, and raises one
``ConfigError`` sentence that names the key and the fix. Epsilons and step sizes are parsed
here, once, into ``Eps`` values: floats everywhere in the code that keep the user's spelling
(``8/255`` or ``0.031``) for the config file and the results record.

Schedules are written for any length: ``train.milestones`` are fractions of ``train.epochs``
(the paper's 80/120/160 of 200 are 0.4/0.6/0.8), and the Binary-Relax cut-off and growth rate
default to the paper's, scaled to the number of epochs (``quant/relax.py``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .eps import Eps, spelling
from .errors import ConfigError
from .integrity import short
from .yamlio import parse_value, read_yaml


@dataclass
class DataConfig:
    name: str = "fashion-mnist-10k"     # robustq data list, or folder:PATH / npz:PATH (yours)
    root: Optional[str] = None           # folder with the official files; None: the usual places
    val_size: float = 0.1                # held-out validation: a fraction (< 1) or a count
    train_size: Optional[int] = None     # train on a stratified subset of this many images
    augment: bool = True                 # random crop (+ flip where the dataset allows it)
    verify: bool = False                 # check the published MD5s of the local files at load


@dataclass
class ModelConfig:
    depth: int = 20                      # ResNet depth 6n + 2 (8, 14, 20, 32, 44, 56, 110)
    ensemble: int = 1                    # En_n: number of members (mean of logits)
    noise: float = 0.1                   # block-noise coefficient c; 0 = plain ResNet


@dataclass
class QuantConfig:
    scheme: str = "4bit"                 # float | binary | ternary | ternary_twn | 2bit..8bit
    method: str = "br"                   # br | bc | none (float training)
    lambda0: float = 1.0                 # BR: initial lambda
    rho: Optional[float] = None          # BR: growth per epoch; None = scaled paper default
    cutoff: Optional[int] = None         # BR: first BC epoch M; None = round(0.6 * epochs)
    policy: str = "paper"                # paper | all_conv | all (which layers to quantize)


@dataclass
class LossConfig:
    name: str = "tradeoff"               # natural | at | trades | tradeoff
    alpha: float = 1.0                   # eq. (8) weight of the clean CE
    beta: float = 8.0                    # eq. (7)/(8) weight of the robust term


@dataclass
class AdvConfig:
    """The attack that makes x_adv during training (``at`` / ``tradeoff``; ``trades`` always
    uses TRADES' KL attack). ``docs/method.md`` "Fast training" says when to use which."""
    attack: str = "pgd"                  # pgd | fgsm_rs | n_fgsm | free
    eps: Eps = Eps(0.031)                # L-inf radius in pixels (0.031 or "8/255")
    step: Eps = Eps(0.007)               # PGD / TRADES step (also the validation PGD's)
    steps: int = 10                      # PGD / TRADES steps
    fast_step: Optional[Eps] = None      # fgsm_rs / n_fgsm / free step; null: the paper's
    noise_k: float = 2.0                 # n_fgsm: noise drawn from U[-k eps, k eps]
    replay: int = 8                      # free: minibatch replays m
    bn_mode: str = "train"               # train: as the reference; eval: BN frozen while attacking


@dataclass
class TrainConfig:
    epochs: int = 200                    # training epochs (schedules scale to this)
    batch_size: int = 128                # images per SGD step
    lr: float = 0.1                      # initial SGD learning rate
    momentum: float = 0.9                # SGD momentum
    weight_decay: float = 5e-4           # SGD L2 weight decay
    schedule: str = "multistep"          # multistep (the paper's) | onecycle (triangular)
    milestones: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8])  # LR drops, fractions of epochs
    lr_gamma: float = 0.1                # LR factor at each milestone
    peak: float = 0.4                    # onecycle: lr peaks at this fraction of the run
    precision: str = "auto"              # auto (bf16 where the hardware has it) | fp32 | bf16
    channels_last: bool = True           # NHWC memory format (faster convolutions)
    val_attack_steps: int = 10           # PGD steps for the validation robust accuracy
    co_guard: str = "warn"               # catastrophic overfitting: warn | stop | off
    co_drop: float = 0.2                 # guard: val PGD accuracy this far below its best
    co_gap: float = 0.3                  # guard: val FGSM accuracy this far above val PGD
    max_batches: Optional[int] = None    # cap batches per epoch (smoke tests)
    checkpoint_minutes: float = 10.0     # also checkpoint mid-epoch this often; 0: epoch ends only
    sync_bn: bool = False                # torchrun: BatchNorm statistics over all ranks' batches


@dataclass
class EvalConfig:
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "ifgsm", "cw_paper"])  # paper suite
    eps: Eps = Eps(0.031)                # L-inf radius of the evaluation attacks, in pixels
    n_eval: Optional[int] = None         # test images to evaluate; None = all
    batch_size: int = 250                # test images per attack batch
    noise: bool = True                   # the paper keeps the block noise on at test time
    precision: str = "fp32"              # attacks in fp32 by default (honest gradients)
    seed: int = 0                        # seed of the attacks' random starts and noise
    attack_args: dict = field(default_factory=dict)  # e.g. {pgd: {steps: 100}}, checked per attack
    suite: str = "paper"                 # paper | quick | strong | autoattack (docs/robustness.md)
    eot_samples: Optional[int] = None    # EOT gradient samples on a random model; None: suite's
    draws: Optional[int] = None          # forward draws for a random model's accuracy; None: suite's
    allow_single_sample: bool = False    # accept a one-sample evaluation of a random model


@dataclass
class RunConfig:
    name: str = "run"                    # names the run directory runs/<name>-<time>
    seed: int = 0                        # data split, initial weights, data order, noise
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    adv: AdvConfig = field(default_factory=AdvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Plain values (epsilons as the user wrote them), ready for YAML or JSON."""
        return spelling(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- loading and type checking -------------------------------------------------------------

def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a mapping", Eps: "a number or a fraction like 8/255"}
    if tp in names:
        return names[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return f"a list of {_type_name(args[0]).replace('an ', '').replace('a ', '')}s"
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
        raise ConfigError(f"config key '{key}' is {short(value, 40)}, outside the 64-bit range "
                          f"any setting can use")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for a in args:
            if a is type(None) and value is None:
                return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(value, a, key)
                except ConfigError:
                    pass
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is Eps:
        try:
            return Eps(value)
        except ValueError:
            pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value):
            return _coerce(float(value), tp, key)  # YAML 1.1 reads 1e-3 as a string
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {short(value)}")


def _from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        where = f"section '{prefix.rstrip('.')}'" if prefix else "the config file"
        raise ConfigError(f"{where} must be a mapping of keys to values, got {short(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{short(key, 40) if not isinstance(key, str) else key[:40]}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else \
                f"; valid keys here: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{full}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_dict(tp, value, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def set_override(data: dict, assignment: str) -> None:
    """Apply one ``section.key=value`` (value parsed as YAML) to a nested dict, in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {short(assignment)}")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"--set key {short(key)} is not a dotted config key like train.epochs")
    try:
        value = parse_value(raw, f"--set {key}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        if not isinstance(node.get(p, {}), dict):
            raise ConfigError(f"--set {key}: '{p}' is not a config section")
        node = node.setdefault(p, {})
    node[leaf] = value


def load_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = (),
                base: Optional[dict] = None, updates: Optional[dict] = None) -> RunConfig:
    """Read a YAML config (or start from ``base`` / the defaults), apply ``--set`` overrides,
    then ``updates`` (typed values from a program, e.g. ``{"eval": {"suite": "strong"}}``),
    check types and ranges, and return the ``RunConfig``."""
    data: dict = dict(base or {})
    if path is not None:
        data = _merge(data, read_yaml(Path(path)))
    for item in overrides:
        set_override(data, item)
    data = _merge(data, updates or {})
    cfg = _from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --- range checks --------------------------------------------------------------------------

MAX_SEED = 2**31 - 1   # validation seeds with seed * 1000 + epoch; numpy takes < 2**32


def _check_size(depth: int, ensemble: int, spec: Any) -> None:
    """The network fits the parameter budget every loader enforces (``integrity.py``)."""
    from .integrity import ARCH_LIMITS, MAX_LAYERS, MAX_PARAMS, estimate_params
    for key, v in (("depth", depth), ("ensemble", ensemble)):
        lo, hi = ARCH_LIMITS[key]
        _check(v <= hi, f"model.{key} must be at most {hi} (the largest network robustq's "
                        f"loaders read back), got {short(v, 40)}")
    params = estimate_params(depth, ensemble, spec.channels, spec.num_classes)
    _check(params <= MAX_PARAMS and depth * ensemble <= MAX_LAYERS,
           f"model.depth={depth} x model.ensemble={ensemble} is about {params:,} parameters in "
           f"{depth * ensemble:,} layers, beyond what robustq builds ({MAX_PARAMS:,} parameters, "
           f"{MAX_LAYERS:,} layers); choose a smaller network")

def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _eps(value: Eps, key: str, positive: bool = False) -> None:
    _check(math.isfinite(value), f"config key '{key}' must be a finite number, got {short(value, 40)}")
    _check(value > 0 if positive else value >= 0,
           f"config key '{key}' must be {'> 0' if positive else '>= 0'} (pixels in [0, 1]), got {value}")
    _check(value <= 1, f"config key '{key}' is {value}, more than the whole [0, 1] pixel range; "
                       f"write pixel units such as 0.031 or 8/255")


def validate(cfg: RunConfig) -> None:
    """Range and consistency checks; one ConfigError sentence per problem."""
    from .attacks import ATTACKS
    from .data.datasets import DATASETS
    from .losses import OBJECTIVES
    from .quant.projections import PROJECTIONS, canonical_name
    from .quant.layers import POLICIES

    d, m, q, lo, a, t, e = cfg.data, cfg.model, cfg.quant, cfg.loss, cfg.adv, cfg.train, cfg.eval
    _check(re.fullmatch(r"[\w][\w.+-]{0,99}", cfg.name) is not None,
           f"name {short(cfg.name, 60)} must be 1-100 letters, digits, '.', '_', '+' or '-' "
           f"starting with a letter or digit (it names the run directory)")
    for key, seed in (("seed", cfg.seed), ("eval.seed", e.seed)):
        _check(0 <= seed <= MAX_SEED, f"{key} must be in [0, {MAX_SEED}] (what every random "
                                      f"generator used takes), got {short(seed, 40)}")
    _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device) is not None,
           f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    _check(d.name in DATASETS or d.name.partition(":")[0] in ("folder", "npz"),
           f"data.name {d.name!r} is not a known dataset; choose one of "
           f"{', '.join(DATASETS.names())}, or folder:PATH / npz:PATH for your own")
    _check(d.val_size >= 0 and (d.val_size < 1 or float(d.val_size).is_integer()),
           f"data.val_size must be a fraction in [0, 1) or a whole count, got {d.val_size}")
    _check(d.train_size is None or d.train_size >= 1,
           f"data.train_size must be a positive count or null (all), got {d.train_size}")
    _check(m.depth >= 8 and (m.depth - 2) % 6 == 0,
           f"model.depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {m.depth}")
    _check(m.ensemble >= 1, f"model.ensemble must be >= 1, got {m.ensemble}")
    _check(0 <= m.noise <= 100, f"model.noise must be in [0, 100], got {m.noise}")
    # an own dataset is not read here: bound it as RGB with 100 classes
    from types import SimpleNamespace
    _check_size(m.depth, m.ensemble, DATASETS.get(d.name) if d.name in DATASETS
                else SimpleNamespace(channels=3, num_classes=100))
    _check(re.fullmatch(r"[A-Za-z0-9]+([ _-][A-Za-z0-9]+)*", q.scheme) is not None,
           f"quant.scheme {short(q.scheme, 40)} is not a scheme name; choose float, binary, "
           f"ternary, ternary_twn or 2bit..8bit")
    scheme = canonical_name(q.scheme)
    _check(scheme == "float" or scheme in PROJECTIONS,
           f"quant.scheme {q.scheme!r} is not supported; choose float or one of "
           f"{', '.join(PROJECTIONS.names())} (m-bit for m in 2..8)")
    _check(q.method in ("br", "bc", "none"), f"quant.method must be br, bc or none, got {q.method!r}")
    _check((scheme == "float") == (q.method == "none"),
           "quant.method none trains float weights and needs quant.scheme float (and a "
           "quantized scheme needs method br or bc)")
    _check(q.policy in POLICIES, f"quant.policy must be one of {', '.join(POLICIES)}, got {q.policy!r}")
    _check(q.lambda0 > 0, f"quant.lambda0 must be > 0, got {q.lambda0}")
    _check(q.rho is None or q.rho >= 1, f"quant.rho must be >= 1 (lambda grows), got {q.rho}")
    _check(q.cutoff is None or 0 <= q.cutoff <= t.epochs,
           f"quant.cutoff must be an epoch in [0, train.epochs={t.epochs}], got {q.cutoff}")
    _check(lo.name in OBJECTIVES, f"loss.name {lo.name!r} is not known; choose one of "
                                  f"{', '.join(OBJECTIVES.names())}")
    _check(lo.alpha >= 0 and lo.beta >= 0, f"loss.alpha and loss.beta must be >= 0, got "
                                           f"alpha={lo.alpha}, beta={lo.beta}")
    _check(lo.name != "tradeoff" or lo.alpha + lo.beta > 0,
           "loss.alpha and loss.beta are both 0, so the trade-off loss is zero; set beta=1 for "
           "adversarial training or alpha=1 for natural training")
    _eps(a.eps, "adv.eps")
    _eps(a.step, "adv.step", positive=True)
    _check(a.steps >= 1, f"adv.steps must be >= 1, got {a.steps}")
    _check(a.bn_mode in ("train", "eval"), f"adv.bn_mode must be train or eval, got {a.bn_mode!r}")
    from .attacks.training import check_training_attack
    problem = check_training_attack(cfg)
    _check(problem is None, problem or "")
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _check(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    _check(0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}")
    _check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _check(all(0 < x < 1 for x in t.milestones) and t.milestones == sorted(t.milestones),
           f"train.milestones are increasing fractions of the epochs in (0, 1), got {t.milestones}")
    _check(0 < t.lr_gamma <= 1, f"train.lr_gamma must be in (0, 1], got {t.lr_gamma}")
    _check(t.schedule in ("multistep", "onecycle"),
           f"train.schedule must be multistep or onecycle, got {t.schedule!r}")
    _check(0 < t.peak < 1, f"train.peak must be a fraction of the run in (0, 1), got {t.peak}")
    late = [f for f in t.milestones if round(f * t.epochs) >= t.epochs]
    _check(t.schedule != "multistep" or t.epochs < 3 or not late,
           f"train.milestones {late} fall on or after the last of train.epochs={t.epochs} "
           f"epochs, so those LR drops never happen; use smaller fractions or more epochs")
    _check(t.co_guard in ("warn", "stop", "off"),
           f"train.co_guard must be warn, stop or off, got {t.co_guard!r}")
    _check(0 < t.co_drop <= 1 and 0 < t.co_gap <= 1,
           f"train.co_drop and train.co_gap are accuracy differences in (0, 1], got "
           f"{t.co_drop} and {t.co_gap}")
    _check(t.precision in ("auto", "fp32", "bf16"), f"train.precision must be auto, fp32 or bf16, got {t.precision!r}")
    _check(t.val_attack_steps >= 1, f"train.val_attack_steps must be >= 1, got {t.val_attack_steps}")
    _check(t.max_batches is None or t.max_batches >= 1, f"train.max_batches must be >= 1, got {t.max_batches}")
    _check(t.checkpoint_minutes >= 0, f"train.checkpoint_minutes must be >= 0 (0: only at epoch "
                                      f"ends), got {t.checkpoint_minutes}")
    for name in e.attacks:
        _check(name in ATTACKS, f"eval.attacks: {name!r} is not a known attack; choose from "
                                f"{', '.join(ATTACKS.names())}")
    _eps(e.eps, "eval.eps")
    _check(e.n_eval is None or e.n_eval >= 1, f"eval.n_eval must be >= 1 or null (all), got {e.n_eval}")
    _check(e.batch_size >= 1, f"eval.batch_size must be >= 1, got {e.batch_size}")
    _check(e.precision in ("auto", "fp32", "bf16"), f"eval.precision must be auto, fp32 or bf16, got {e.precision!r}")
    from .robustness.suites import SUITES
    _check(e.suite in SUITES, f"eval.suite must be one of {', '.join(SUITES.names())}, got {e.suite!r}")
    _check(e.eot_samples is None or e.eot_samples >= 1, f"eval.eot_samples must be >= 1 or null, got {e.eot_samples}")
    _check(e.draws is None or e.draws >= 1, f"eval.draws must be >= 1 or null, got {e.draws}")
    from .attacks.base import check_attack_args
    try:
        e.attack_args = {name: check_attack_args(name, args, e.eps)
                         for name, args in e.attack_args.items()}
    except ValueError as err:
        raise ConfigError(str(err)) from None
