"""Files of a run, written atomically and read without executing code.

``atomic_write`` writes to a temporary file in the same directory, fsyncs it and renames it
over the target: a crash mid-write leaves the previous file intact. Checkpoints and model
files are ``torch.save`` dicts of tensors and plain values, read back with
``torch.load(weights_only=True)``, which refuses any pickled object that is not a tensor or
a container of plain values, so an untrusted file cannot run code. Every file carries a
``format`` tag so a foreign file is recognised as such, and (from format version 2) a
SHA-256 content hash checked on load (``integrity.py``); a model file is also checked for
finite weights, valid BatchNorm statistics, exact Q(w) grids and a bounded architecture.

A killed writer can leave its ``.NAME.tmpPID`` file behind; ``remove_stale_tmp`` clears them
from a run directory before a run continues, and ``check_writable`` probes an output folder
before any work starts, so a read-only or missing folder fails at once, not after hours.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ConfigError, short_path
from .integrity import HASH_KEY, check_hash, check_model_file, content_hash, short

CHECKPOINT_FORMAT = "robustq-checkpoint"   # full training state (resume)
MODEL_FORMAT = "robustq-model"             # a selected model (quantized weights baked in)
FORMAT_VERSION = 2                         # 2: carries a content hash (1: without; still read)
# the files of a run directory: no verb writes over them except the training run itself
RUN_FILES = ("config.yaml", "checkpoint.pt", "model.pt", "metrics.csv")


def atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file the user knows, not the temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None
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


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmpPID`` files that killed ``atomic_write`` calls (and writability
    probes, ``.robustq-probe-*``) left in ``folder``; only robustq writes such names in a run
    directory. Returns what was removed."""
    removed = []
    for p in Path(folder).glob(".*"):
        tmp = p.name[1:].partition(".tmp")[2].isdigit() or p.name.startswith(".robustq-probe-")
        if p.is_file() and tmp:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def check_writable(folder: str | Path, what: str) -> None:
    """Probe that files can be created in ``folder`` (created if missing) before any work
    starts; one ConfigError sentence naming ``what`` otherwise."""
    import tempfile

    folder = Path(folder)
    where = short_path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"cannot write {what} in {where}: it is a file, not a folder; fix the path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".robustq-probe-")
        try:
            os.write(fd, b"x")  # one byte: a full disk fails here, not after the work
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)  # removed now, not whenever the garbage collector gets to it
    except OSError as e:
        raise ConfigError(f"cannot write {what} in {where} ({e.strerror or type(e).__name__}); "
                          f"choose a writable location") from None


def check_output_file(out: str | Path, what: str, inputs: tuple[str | Path, ...] = ()) -> Path:
    """``out`` may be written: not a folder, not one of a run's own files, not an input, and
    its folder is writable (checked now, before the work)."""
    out = Path(out)
    try:
        same = any(out.resolve() == Path(i).resolve() for i in inputs)
    except (RuntimeError, OSError):  # Python < 3.13 reports a loop of links as RuntimeError
        raise ConfigError(f"{what} {short_path(out)} lies on a loop of symbolic links; fix the path") from None
    if out.is_dir():
        raise ConfigError(f"{what} {short_path(out)} is a folder; give a file name")
    if out.name in RUN_FILES and out.exists():
        raise ConfigError(f"{what} {short_path(out)} is a run's own {out.name} and is never overwritten; "
                          f"choose another file name")
    if same:
        raise ConfigError(f"{what} {short_path(out)} is the input file; choose another file name")
    check_writable(out.parent, what)
    return out


def save(obj: dict, path: str | Path) -> None:
    """``torch.save`` ``obj`` with its content hash, atomically."""
    obj = {**obj, HASH_KEY: content_hash(obj)}
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
    except (OSError, MemoryError) as e:  # unreadable, not damaged: the error boundary says why
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, MemoryError)):
            raise
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}); use an "
                              f"intact copy or retrain") from None
    except Exception as e:  # a damaged zip or pickle surfaces as any of a dozen error types
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}); use an "
                              f"intact copy or retrain") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {fmt} file (found {short(found)}); pass a file that "
                              f"robustq wrote for this purpose")
    version = obj.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CheckpointError(f"{path} has an invalid format_version {short(version)}; it is "
                              f"corrupt or edited: use an intact file written by robustq")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer robustq (format version "
                              f"{version}); upgrade robustq to read it")
    check_hash(obj, path, required=version >= 2)
    if fmt == MODEL_FORMAT:
        check_model_file(obj, path)
    return obj
