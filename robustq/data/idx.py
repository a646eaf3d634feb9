"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al.; Xiao et al. 2017).

An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions, one big-endian int32 per dimension, then the values in C order. The official files
are gzipped (``*.gz``); both gzipped and plain files are read. Sizes are checked against the
header so a truncated or padded file fails with a clear message instead of garbage, and
reads stop at the declared size (a gzip bomb or ``/dev/zero`` cannot exhaust the memory).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from .bounded import check_regular

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


MAX_BYTES = 1 << 30   # the largest official IDX file (EMNIST) is ~0.7 GB unpacked


def _open(path: Path):
    """``path`` as a byte stream, un-gzipped on the fly; only regular files are read (a
    symlink to ``/dev/zero`` or a FIFO would never end)."""
    check_regular(path, str(path))
    f = open(path, "rb")
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")
    f.seek(0)
    return f


def _read_exactly(f, n: int, path: Path, what: str) -> bytes:
    try:
        data = f.read(n)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"dataset file {path} is not a readable gzip file ({e}); it is probably "
                        f"truncated or corrupt: download it again") from None
    if len(data) != n:
        raise DataError(f"dataset file {path} is truncated inside its {what}; download it again")
    return data


def read_idx(path: str | Path, dtype: Optional[int] = 0x08) -> torch.Tensor:
    """Read one IDX file (gzipped or not) into a tensor, checking its header against its size.

    Reads are bounded by what the header declares (and ``MAX_BYTES``), so a gzip bomb or a
    padded file fails after the expected size instead of filling the memory. ``dtype`` is the
    IDX type code required (uint8 for images and labels); None accepts any."""
    path = Path(path)
    with _open(path) as f:
        magic = _read_exactly(f, 4, path, "header")
        if magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES or not 1 <= magic[3] <= 8:
            raise DataError(f"dataset file {path} is not an IDX file (bad magic number); "
                            f"check that data.root points at the official MNIST-format files")
        if dtype is not None and magic[2] != dtype:
            raise DataError(f"dataset file {path} holds {np.dtype(_DTYPES[magic[2]])} values but "
                            f"MNIST-format images and labels are unsigned bytes; it is not an "
                            f"official file: download the dataset again")
        ndim = magic[3]
        dims = struct.unpack(f">{ndim}I", _read_exactly(f, 4 * ndim, path, "header"))
        dt = np.dtype(_DTYPES[magic[2]])
        expected = int(np.prod(dims, dtype=object)) * dt.itemsize
        if expected > MAX_BYTES:
            raise DataError(f"dataset file {path} declares {tuple(dims)} values ({expected:,} "
                            f"bytes), more than any MNIST-format dataset; it is corrupt")
        body = _read_exactly(f, expected, path, "data")
        extra = _more(f)
    if extra:
        raise DataError(f"dataset file {path} holds more data than its header {tuple(dims)} "
                        f"declares ({expected} bytes); it is corrupt or not this file: download "
                        f"it again")
    arr = np.frombuffer(body, dtype=dt)
    return torch.from_numpy(arr.astype(dt.newbyteorder("="), copy=True).reshape(dims))


def _more(f) -> bool:
    try:
        return bool(f.read(1))
    except (OSError, EOFError, zlib.error):
        return True  # trailing garbage that does not even decompress


def write_idx(path: str | Path, tensor: torch.Tensor, compress: bool | None = None) -> None:
    """Write a uint8 tensor as IDX (gzipped when the name ends in .gz, with mtime 0 so the
    bytes are reproducible)."""
    path = Path(path)
    arr = tensor.detach().cpu().numpy().astype(np.uint8, copy=False)
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)
