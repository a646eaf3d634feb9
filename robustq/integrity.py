"""Integrity of the files robustq writes: a content hash, and what must hold when one is read.

**Content hash.** Every model file, checkpoint and export carries ``sha256``, the SHA-256 of
its whole content (tensors by dtype, shape and raw bytes; metadata by value) in a canonical
order (mapping keys sorted), as package managers and model hubs do. ``torch.load`` and
safetensors do not notice a flipped bit inside a tensor, so without it a damaged file would
load as a silently different model. The hash detects corruption (a bad disk, a truncated
copy, a careless edit), not forgery: whoever edits a file can recompute it, which is why the
checks below run as well.

**What must hold.** Weights are finite; BatchNorm running variances are >= 0; a layer the
bit map marks as quantized holds exactly ``s * codes`` with integer codes inside its bit
width (the Q(w) grid); the metadata has the types robustq writes; and the architecture
stays within ``ARCH_LIMITS`` and a parameter budget (``estimate_params``), so that a
tampered header cannot make any loader build a network for hours or fill the memory.
Every failure is one ``CheckpointError`` sentence.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import CheckpointError

HASH_KEY = "sha256"
ARCH_FIELDS = {"depth": int, "ensemble": int, "noise": float, "in_channels": int,
               "num_classes": int, "input_size": int}
# generous per-field bounds, then a budget on the whole: the largest network any loader builds
ARCH_LIMITS = {"depth": (8, 2000), "ensemble": (1, 64), "noise": (0, 100), "in_channels": (1, 1024),
               "num_classes": (1, 100_000), "input_size": (1, 8192)}
MAX_PARAMS = 500_000_000          # 2 GB of fp32 weights (a CIFAR En5ResNet20 has ~1.4 M)
MAX_LAYERS = 20_000               # ensemble x depth: building more modules takes minutes


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Feed ``obj`` to ``h`` canonically: the same content always gives the same bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)};".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"B%d;" % len(obj) + bytes(obj))
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d;" % len(b) + b)
    else:  # None, bool, int, float (repr is exact for floats), torch.dtype, ...
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_hash(obj: Any) -> str:
    """SHA-256 (hex) of ``obj``'s content; a mapping's own ``sha256`` entry is left out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != HASH_KEY} if isinstance(obj, dict) else obj)
    return h.hexdigest()


def check_hash(obj: dict, path: Path, required: bool) -> None:
    """The stored hash matches the content (a file without one passes unless ``required``)."""
    stored = obj.get(HASH_KEY)
    if stored is None and not required:
        return
    if not isinstance(stored, str) or stored != content_hash(obj):
        raise CheckpointError(f"{path} is corrupt: its content does not match its SHA-256 "
                              f"content hash (a flipped bit or an edit); use an intact copy or "
                              f"retrain")


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about hostile input."""
    try:
        text = repr(value)
    except RecursionError:
        return "<a structure nested too deeply to print>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- the architecture: types, bounds, budget -----------------------------------------------

def estimate_params(depth: int, ensemble: int, in_channels: int, num_classes: int) -> int:
    """Parameters of an EnResNet (3 stages of 16/32/64 channels, 3x3 convs, BN, a linear head),
    within a few percent; the budget that bounds what a config or a file may ask to build."""
    n = max(0, (depth - 2) // 6)
    convs = in_channels * 16 * 9 + n * 2 * 9 * (16 * 16 + 32 * 32 + 64 * 64)
    bn = n * 2 * 2 * (16 + 32 + 64) + 2 * 64
    return ensemble * (convs + bn + 64 * num_classes + num_classes)


def arch_problem(arch: dict) -> Optional[str]:
    """None if ``arch`` is a buildable architecture within bounds, else what is wrong."""
    if not isinstance(arch, dict) or set(arch) != set(ARCH_FIELDS):
        return f"an invalid architecture ({short(arch)})"
    for k, tp in ARCH_FIELDS.items():
        v = arch[k]
        ok = isinstance(v, (int, float) if tp is float else int) and not isinstance(v, bool)
        if not ok or (isinstance(v, float) and not math.isfinite(v)):
            return f"an invalid architecture ({k} = {short(v)})"
    for k, (lo, hi) in ARCH_LIMITS.items():
        if not lo <= arch[k] <= hi:
            return f"an implausible architecture ({k} = {arch[k]}, allowed {lo}..{hi})"
    if (arch["depth"] - 2) % 6:
        return f"an impossible architecture (depth {arch['depth']} is not 6n+2)"
    params = estimate_params(arch["depth"], arch["ensemble"], arch["in_channels"], arch["num_classes"])
    if params > MAX_PARAMS or arch["depth"] * arch["ensemble"] > MAX_LAYERS:
        return (f"an architecture too large to build (about {params:,} parameters in "
                f"{arch['ensemble']} x {arch['depth']} layers)")
    return None


def check_arch(arch: Any, path: Path) -> dict:
    problem = arch_problem(arch)
    if problem:
        raise CheckpointError(f"{path} has {problem} in its metadata; it is corrupt or was "
                              f"edited: use an intact file written by robustq")
    return arch


# --- tensors: finite, BN variances, the quantization grid ----------------------------------

def check_tensors(state: Any, path: Path, what: str = "weights") -> None:
    """A mapping of names to tensors whose floating values are finite and whose BatchNorm
    running variances are >= 0."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} has {what} that are not a mapping of names to tensors; "
                              f"it is corrupt or not a file robustq wrote")
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path} has non-finite values (NaN or inf) in {name}; the "
                                  f"model diverged or the file is corrupt: use another epoch's "
                                  f"file or retrain")
        if name.endswith("running_var") and t.is_floating_point() and bool((t < 0).any()):
            raise CheckpointError(f"{path} has a negative BatchNorm running variance in {name}, "
                                  f"which no training produces; the file is corrupt or edited")


def check_grid(state: dict, bit_map: dict, path: Path) -> None:
    """Every layer that ``bit_map`` marks as quantized holds exactly ``s * codes`` (Q(w))."""
    from .efficiency.packing import recover_codes
    from .quant import get_projection

    for layer, scheme in bit_map.items():
        if scheme == "float":
            continue
        try:
            levels = get_projection(scheme).levels
        except KeyError:
            raise CheckpointError(f"{path} marks {layer} with the unknown quantizer "
                                  f"{short(scheme)}; the file is corrupt or edited") from None
        w = state.get(f"{layer}.weight")
        if w is None or not w.is_floating_point():
            raise CheckpointError(f"{path} marks {layer} as quantized but holds no float weight "
                                  f"for it; the file is corrupt or edited")
        if w.numel() and recover_codes(w, levels) is None:
            raise CheckpointError(f"{path} has weights in {layer} that are not on the {scheme} "
                                  f"grid s * codes (the file says they are exactly Q(w)); it is "
                                  f"corrupt or edited")


def check_model_meta(meta: Any, path: Path) -> dict:
    """The metadata of a model file: types of what the loaders and verbs read."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has metadata of type {type(meta).__name__}, not a "
                              f"mapping; it is corrupt or not a file robustq wrote")
    check_arch(meta.get("arch"), path)
    bit_map = meta.get("bit_map", {})
    if not isinstance(bit_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in bit_map.items()):
        raise CheckpointError(f"{path} has a bit_map that is not a mapping of layer names to "
                              f"quantizer names ({short(bit_map)}); it is corrupt or edited")
    for key in ("quant", "method", "policy", "dataset"):
        if key in meta and not isinstance(meta[key], str):
            raise CheckpointError(f"{path} has a {key} entry that is not a string "
                                  f"({short(meta[key])}); it is corrupt or edited")
    epoch = meta.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
        raise CheckpointError(f"{path} has an invalid epoch {short(epoch)} in its metadata")
    return meta


def check_model_file(obj: dict, path: Path) -> None:
    """Everything a dense model file (``model.pt``) must satisfy before a network is built."""
    meta = check_model_meta(obj.get("meta"), path)
    state = obj.get("state_dict")
    check_tensors(state, path)
    odd = [k for k, v in state.items()
           if v.dtype != (torch.int64 if k.endswith("num_batches_tracked") else torch.float32)]
    if odd:
        raise CheckpointError(f"{path} has {odd[0]} as {state[odd[0]].dtype}, where robustq "
                              f"writes float32 weights (int64 counters); it is corrupt or edited")
    check_grid(state, meta.get("bit_map", {}), path)


# --- a checkpoint to resume from ------------------------------------------------------------

CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "best", "metrics")


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} {what}; it is corrupt or edited, so nothing was resumed: "
                           f"restore an intact copy or start the run again")


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_checkpoint(ck: dict, path: Path, epochs: int, steps_per_epoch: Optional[int] = 1,
                     steps_per_batch: int = 1) -> None:
    """What a checkpoint must hold before ``--resume`` touches the model: every key, an epoch
    in [1, ``epochs``] that agrees with the metrics, RNG states of the sizes this PyTorch
    uses, finite weights and optimizer state, a finite learning rate >= 0 (a one-cycle schedule ends at 0), and an LR
    schedule that has taken ``steps_per_epoch`` steps per finished epoch.

    A mid-epoch checkpoint (``batch`` > 0, written every ``train.checkpoint_minutes`` or on
    SIGTERM) holds ``epoch`` finished epochs (0 allowed) and ``batch`` batches of the next
    one, a ``partial`` record of that epoch, and a schedule ``steps_per_batch`` steps per
    batch further on. ``steps_per_epoch`` None (a checkpoint of another world size, whose
    epochs had other batch counts): the schedule's step count is not checked."""
    missing = [k for k in CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise _bad(path, f"lacks {', '.join(missing)}")
    epoch, batch = ck["epoch"], ck.get("batch") or 0
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0 or (
            batch and steps_per_epoch and batch * steps_per_batch >= steps_per_epoch):
        raise _bad(path, f"says it was written after batch {short(batch, 40)} of an epoch of "
                         f"{steps_per_epoch // max(steps_per_batch, 1)} batches")
    first = 0 if batch else 1
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not first <= epoch <= epochs - (
            1 if batch else 0):
        raise _bad(path, f"says it was written after epoch {short(epoch, 40)}, outside the run's "
                         f"{first}..{epochs}")
    if batch and not (isinstance(ck.get("partial"), dict) and all(
            k in ck["partial"] for k in ("order", "stats", "lr", "seconds"))):
        raise _bad(path, f"was written inside epoch {epoch + 1} but lacks the record of that "
                         f"partial epoch")
    metrics, best = ck["metrics"], ck["best"]
    if not isinstance(metrics, list) or len(metrics) != epoch or not all(isinstance(r, dict) for r in metrics):
        raise _bad(path, f"has metrics that do not list the {epoch} finished epochs")
    if not isinstance(best, dict) or not (best.get("epoch") is None or (
            isinstance(best.get("epoch"), int) and 1 <= best["epoch"] <= epoch)):
        raise _bad(path, "has an invalid record of the selected epoch")
    rng = ck["rng"]
    size = torch.get_rng_state().numel()
    if not isinstance(rng, dict) or not all(isinstance(rng.get(k), torch.Tensor) and rng[k].dtype
                                            == torch.uint8 and rng[k].numel() == size
                                            for k in ("torch", "data")):
        raise _bad(path, f"has random-generator states that are not the {size}-byte states "
                         f"PyTorch uses")
    check_tensors(ck["model"], path)
    if ck.get("free_delta") is not None:  # free adversarial training's carried perturbation
        check_tensors({"free_delta": ck["free_delta"]}, path, "a free-training perturbation")
    _check_optimizer(ck["optimizer"], ck["scheduler"], path, epoch,
                     None if steps_per_epoch is None else epoch * steps_per_epoch + batch * steps_per_batch)


def _check_optimizer(opt: Any, sched: Any, path: Path, epoch: int, steps: int) -> None:
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if not isinstance(groups, list) or not groups or not isinstance(opt.get("state"), dict):
        raise _bad(path, "has no valid optimizer state")
    for g in groups:
        if not isinstance(g, dict) or not _finite_number(g.get("lr")) or g["lr"] < 0 or not all(
                _finite_number(g.get(k)) for k in ("momentum", "weight_decay")):
            raise _bad(path, f"has an invalid learning rate or momentum "
                             f"({short(g.get('lr') if isinstance(g, dict) else g, 40)})")
    params = [p for g in groups for p in (g.get("params") or [])]
    if groups[0]["momentum"] and set(params) - set(opt["state"]):
        raise _bad(path, "lacks the momentum of some parameters (resuming would not continue "
                         "the same run)")
    for state in opt["state"].values():
        if not isinstance(state, dict) or not isinstance(state.get("momentum_buffer", torch.zeros(0)), torch.Tensor):
            raise _bad(path, "has an invalid optimizer state")
        check_tensors({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, path,
                      "optimizer state")
    last = sched.get("_last_lr", [g["lr"] for g in groups]) if isinstance(sched, dict) else None
    if not isinstance(sched, dict) or (steps is not None and sched.get("last_epoch") != steps) \
            or not isinstance(last, list) or len(last) != len(groups) \
            or not all(_finite_number(v) and v >= 0 for v in last):
        raise _bad(path, f"has a learning-rate schedule that is not at epoch {epoch}")
    # the optimizer's rate is the one the schedule set last (a one-cycle schedule ends at 0)
    if any(abs(g["lr"] - v) > 1e-12 * max(1.0, abs(v)) for g, v in zip(groups, last)):
        raise _bad(path, f"has a learning rate ({short(groups[0]['lr'], 40)}) that is not the "
                         f"one its schedule set ({short(last[0], 40)})")
