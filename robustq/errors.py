"""User-facing errors: each carries one sentence saying what is wrong and how to fix it.

The CLI prints ``robustq: error: <sentence>`` and exits with status 2 for these and for the
OS, decoding, recursion and memory errors that hostile inputs and full or read-only disks
cause (``sentence`` says which file and what to do); anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import errno
from pathlib import Path


class RobustqError(Exception):
    """A problem with the user's input (config, data, checkpoint), not a bug."""


class ConfigError(RobustqError):
    pass


class DataError(RobustqError):
    pass


class CheckpointError(RobustqError):
    pass


class DependencyError(RobustqError):
    """An optional extra (``pip install robustq[...]``) that a feature needs is missing."""


# optional package -> the extra that installs it
EXTRAS = {"pyautoattack": "autoattack", "matplotlib": "plot", "onnxruntime": "onnx", "onnx": "onnx"}


def require(package: str, what: str) -> None:
    """Raise ``DependencyError`` (one sentence, how to install) unless ``package`` imports;
    checked before any work starts, without importing it."""
    import importlib.util

    from .extras import EXTRAS as BY_EXTRA, require as require_extra
    if EXTRAS.get(package) in BY_EXTRA:   # one check for every optional extra
        return require_extra(EXTRAS[package], what)
    if importlib.util.find_spec(package) is None:
        extra = EXTRAS.get(package)
        how = f'pip install "robustq[{extra}]"' if extra else f"pip install {package}"
        raise DependencyError(f"{what} needs the optional package {package}; install it with: {how}")
def short_path(p: "str | Path", limit: int = 120) -> str:
    """``p`` for a message: a hostile 4 kB path is cut in its middle."""
    s = str(p)
    return s if len(s) <= limit else f"{s[:limit // 2]}...{s[-limit // 2:]}"


# errno -> what to do about it, for the OS errors any verb can meet on its files
_OS_FIXES = {
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.ENOSPC: "the disk is full: free some space or choose another location",
    errno.EDQUOT: "the disk quota is used up: free some space or choose another location",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter path",
    errno.ELOOP: "the path has a loop of symbolic links: fix the links",
    errno.ENOENT: "it does not exist: check the path",
    errno.EEXIST: "it already exists: choose another name",
}
MAX_MESSAGE = 600  # an error echoes user input; hostile input must not make it a flood


def sentence(e: BaseException) -> str:
    """The one sentence ``robustq: error:`` prints for ``e``: a robustq error as it is, an
    OS, decoding, recursion or memory error as what happened to which file and what to do."""
    if isinstance(e, OSError):
        where = f" {short_path(e.filename)}" if e.filename else ""
        fix = _OS_FIXES.get(e.errno, "check the path and try again")
        msg = f"cannot use{where} ({e.strerror or type(e).__name__}); {fix}"
    elif isinstance(e, UnicodeError):
        msg = f"an input is not valid text ({type(e).__name__}); give files saved as UTF-8"
    elif isinstance(e, RecursionError):
        msg = "an input is nested too deeply to read (a damaged or hostile file); use a file robustq wrote"
    elif isinstance(e, MemoryError):
        msg = ("ran out of memory (an input or a setting asks for more than this machine has); "
               "use smaller batch sizes or a smaller model, or check the input files")
    else:
        msg = str(e)
    msg = " ".join(msg.split())  # one line, whatever the input held
    return msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE - 3] + "..."
