"""Where and how tensors are computed: device choice, the mixed-precision fast path, seeds.

The fast path is channels_last memory format everywhere, plus bf16 autocast where the
hardware runs bf16 convolutions natively (CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX).
On CPUs without them (e.g. AVX2-only) bf16 convolutions are emulated and ~10x slower, so
``precision: auto`` picks fp32 there. BatchNorm statistics, the block-noise std, losses and
softmaxes are computed in fp32 under autocast; only conv/linear math runs in bf16.
"""
from __future__ import annotations

import contextlib
import random
from typing import ContextManager

import numpy as np
import torch

from .errors import ConfigError


def keep_heap_pages() -> bool:
    """Ask glibc to keep freed heap pages instead of returning each large block to the OS.

    PyTorch's CPU allocator is plain malloc: with glibc's defaults every activation of a few
    MB is a fresh mmap whose pages fault in on first touch, at every forward. Measured on a
    2-core AVX2 VM (benchmarks/bench_train.py), keeping the pages made natural training ~20%
    faster. Process-wide, so only the CLI and the benchmarks call it, never an import. Returns
    False where it is unavailable (not glibc)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 2 ** 30) and libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but PyTorch sees no CUDA GPU; use "
                          f"--device cpu (or auto)")
    return torch.device(name)


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast is chosen by ``precision: auto`` only on CUDA GPUs that support it.

    Not on CPUs, even with AVX512-BF16 and AMX: on such a 2-core Xeon, En1ResNet20 natural
    training ran at 137 img/s in bf16 against 466 in fp32 (``python benchmarks/bench_train.py
    --mode natural --precision bf16`` vs ``fp32``), and bf16 is a deviation from the paper
    besides (Q(w)'s levels stop being exact multiples of one scale inside the conv,
    docs/method.md). ``precision: bf16`` still forces it."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where it is fast on ``device``, else ``fp32``."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
