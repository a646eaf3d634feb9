"""Reading dataset files with a bound: only regular files, never more bytes than a dataset
of that format can hold. A symlink to ``/dev/zero``, a FIFO, a padded multi-GB file or a
compression bomb then fails with one ``DataError`` sentence instead of exhausting the
memory or never returning."""
from __future__ import annotations

import zlib
from pathlib import Path

from ..errors import DataError

MAX_FILE_BYTES = 1 << 30   # the largest official file of a registered dataset is < 0.7 GB


def check_regular(path: Path, what: str) -> None:
    """``path`` exists and is a regular file (a symlink to ``/dev/zero`` or a FIFO would
    never end); one DataError sentence naming ``what`` otherwise."""
    if not path.exists():
        raise DataError(f"dataset file {what} is missing; fetch the dataset (robustq data "
                        f"fetch) or point data.root at a complete copy")
    if not path.is_file():
        raise DataError(f"dataset file {what} is not a regular file (a device, FIFO or "
                        f"folder); point data.root at the official files")


def read_file(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path`` if it holds at most ``limit`` of them."""
    check_regular(path, what)
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise DataError(f"dataset file {what} is larger than {limit >> 20} MB, more than this "
                        f"dataset's official file; it is not that file: download it again")
    return raw


def inflate(data: bytes, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """zlib-decompress ``data`` to at most ``limit`` bytes (a bomb is refused, not expanded)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise DataError(f"{what} has a compressed part that does not inflate ({e}); it is "
                        f"corrupt: download it again") from None
    if len(out) > limit or d.unconsumed_tail:
        raise DataError(f"{what} has a compressed part that inflates beyond {limit >> 20} MB, "
                        f"more than any dataset file holds; it is corrupt or hostile")
    return out
