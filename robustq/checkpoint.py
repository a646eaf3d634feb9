"""Files of a run, written atomically and read without executing code.

``atomic_write`` writes to a temporary file in the same directory, fsyncs it and renames it
over the target: a crash mid-write leaves the previous file intact. Checkpoints and model
files are ``torch.save`` dicts of tensors and plain values, read back with
``torch.load(weights_only=True)``, which refuses any pickled object that is not a tensor or
a container of plain values, so an untrusted file cannot run code. Every file carries a
``format`` tag so a foreign file is recognised as such.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

CHECKPOINT_FORMAT = "robustq-checkpoint"   # full training state (resume)
MODEL_FORMAT = "robustq-model"             # a selected model (quantized weights baked in)
FORMAT_VERSION = 1


def atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save(obj: dict, path: str | Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def load(path: str | Path, fmt: str) -> dict[str, Any]:
    """Load a robustq file of format ``fmt`` safely; one CheckpointError sentence otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give the path of a run directory or of "
                              f"a file that robustq wrote")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds objects other than tensors and plain values, so it "
                              f"was not loaded (loading it could run code); use a file that "
                              f"robustq wrote") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}); use an "
                              f"intact copy or retrain") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {fmt} file (found {found!r}); pass a file that "
                              f"robustq wrote for this purpose")
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer robustq (format version "
                              f"{obj['format_version']}); upgrade robustq to read it")
    return obj
