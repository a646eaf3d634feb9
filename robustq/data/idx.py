"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al.; Xiao et al. 2017).

An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions, one big-endian int32 per dimension, then the values in C order. The official files
are gzipped (``*.gz``); both gzipped and plain files are read. Sizes are checked against the
header so a truncated or padded file fails with a clear message instead of garbage.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (gzipped or not) into a tensor, checking its header against its size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"dataset file {path} is missing; download the dataset again "
                        f"(robustq data fetch) or point data.root at a complete copy") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"dataset file {path} is not a readable gzip file ({e}); it is probably "
                        f"truncated or corrupt: download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"dataset file {path} is not an IDX file (bad magic number); "
                        f"check that data.root points at the official MNIST-format files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"dataset file {path} is truncated inside its header; download it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"dataset file {path} holds {len(raw) - header} bytes of data but its "
                        f"header {tuple(dims)} needs {expected}; it is truncated or corrupt: "
                        f"download it again")
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims))


def write_idx(path: str | Path, tensor: torch.Tensor, compress: bool | None = None) -> None:
    """Write a uint8 tensor as IDX (gzipped when the name ends in .gz, with mtime 0 so the
    bytes are reproducible)."""
    path = Path(path)
    arr = tensor.detach().cpu().numpy().astype(np.uint8, copy=False)
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)
