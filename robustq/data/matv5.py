"""A small reader (and writer) for MATLAB level-5 MAT-files: numeric arrays only.

SVHN's cropped digits ship as ``train_32x32.mat`` / ``test_32x32.mat`` (MAT-file version 5,
zlib-compressed as MATLAB 7 writes them). Reading them needs ~150 lines, so robustq does not
depend on scipy (a large wheel) for one dataset, and every way a file can be wrong ends in a
``DataError`` that names the file.

The format (MathWorks, "MAT-File Format", level 5):

* a 128-byte header: 116 bytes of text (``MATLAB 5.0 MAT-file ...``), 8 bytes subsystem
  offset, a 2-byte version (0x0100) and the endian indicator ``IM`` (little-endian) or ``MI``;
* then data elements, each an 8-byte tag ``(type: u32, nbytes: u32)`` followed by ``nbytes``
  of data padded to a multiple of 8. A *small* element packs ``nbytes`` (upper 16 bits) and
  ``type`` (lower 16 bits) into the first 4 bytes and its data into the next 4;
* a variable is an ``miMATRIX`` element (type 14), possibly wrapped in an ``miCOMPRESSED``
  element (type 15: its data is a zlib stream holding the ``miMATRIX``). Its sub-elements are
  array flags (class in the low byte; 0x0800 = complex), dimensions (int32), name (int8) and
  the real part, stored in any numeric type (MATLAB may store a double array as uint8);
* numeric data is column-major (Fortran order).

Files saved with ``-v7.3`` are HDF5 files and are refused with a clear message.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from .bounded import inflate, read_file

MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
            12: "i8", 13: "u8"}
MI_MATRIX, MI_COMPRESSED = 14, 15
MX_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
              14: "i8", 15: "u8"}
_CLASS_OF = {np.dtype(v): k for k, v in MX_CLASSES.items()}
_MI_OF = {np.dtype(v): k for k, v in MI_TYPES.items()}


class _Reader:
    """Walks the data elements of one buffer with bounds checks (``what`` names the file)."""

    def __init__(self, buf: bytes | memoryview, order: str, what: str) -> None:
        self.buf, self.order, self.what, self.pos = memoryview(buf), order, what, 0

    def fail(self, why: str) -> DataError:
        return DataError(f"{self.what} is not a valid MAT-file ({why}); it is truncated or "
                         f"corrupt: download it again")

    def element(self) -> tuple[int, memoryview]:
        """The next element's type and data; the position moves past its padding."""
        if self.pos + 8 > len(self.buf):
            raise self.fail(f"an element tag at byte {self.pos} is cut off")
        first, second = struct.unpack_from(self.order + "II", self.buf, self.pos)
        if first >> 16:                                   # small element: data in the tag
            mtype, n = first & 0xFFFF, first >> 16
            if n > 4:
                raise self.fail(f"a small element claims {n} bytes")
            data, self.pos = self.buf[self.pos + 4:self.pos + 4 + n], self.pos + 8
            return mtype, data
        mtype, n, start = first, second, self.pos + 8
        if start + n > len(self.buf):
            raise self.fail(f"an element at byte {self.pos} needs {n} bytes but only "
                            f"{len(self.buf) - start} remain")
        pad = 0 if mtype == MI_COMPRESSED else -n % 8
        self.pos = min(start + n + pad, len(self.buf))
        return mtype, self.buf[start:start + n]

    def numbers(self, data: memoryview, mtype: int) -> np.ndarray:
        if mtype not in MI_TYPES:
            raise self.fail(f"numeric data of unknown type {mtype}")
        dt = np.dtype(MI_TYPES[mtype]).newbyteorder(self.order)
        if len(data) % dt.itemsize:
            raise self.fail(f"{len(data)} bytes are not a whole number of {dt.name}")
        return np.frombuffer(data, dtype=dt)


def _matrix(r: _Reader, data: memoryview) -> Optional[tuple[str, np.ndarray]]:
    """Decode one miMATRIX body; ``None`` for classes this reader skips (cell, struct, ...)."""
    sub = _Reader(data, r.order, r.what)
    _, flags = sub.element()
    flags = sub.numbers(flags, 6)
    if len(flags) < 1:
        raise r.fail("a variable has no array flags")
    cls = int(flags[0]) & 0xFF
    dims_type, dims = sub.element()
    dims = tuple(int(d) for d in sub.numbers(dims, dims_type))
    name_type, name = sub.element()
    name = bytes(name).decode("ascii", "replace")
    if cls not in MX_CLASSES or int(flags[0]) & 0x0800:
        return None                                       # not a real numeric array
    if any(d < 0 for d in dims):
        raise r.fail(f"variable {name!r} has negative dimensions {dims}")
    real_type, real = sub.element()
    values = sub.numbers(real, real_type)
    if values.size != int(np.prod(dims, dtype=np.int64)):
        raise r.fail(f"variable {name!r} holds {values.size} values but its dimensions "
                     f"{dims} need {int(np.prod(dims, dtype=np.int64))}")
    out = values.astype(np.dtype(MX_CLASSES[cls]), copy=False).reshape(dims, order="F")
    return name, out


def _header(raw: bytes, what: str) -> str:
    if raw[:8] == b"\x89HDF\r\n\x1a\n" or raw[:19] == b"MATLAB 7.3 MAT-file" or \
            raw[512:520] == b"\x89HDF\r\n\x1a\n":
        raise DataError(f"{what} is a MATLAB v7.3 (HDF5) file; robustq reads the official "
                        f"v5 files: download the original from the dataset's home page")
    if len(raw) < 128 or not raw.startswith(b"MATLAB 5.0 MAT-file"):
        raise DataError(f"{what} is not a MATLAB 5 MAT-file (bad header); it is truncated, "
                        f"corrupt or another format: download it again")
    endian = raw[126:128]
    if endian not in (b"IM", b"MI"):
        raise DataError(f"{what} has an unknown byte-order mark {endian!r}; it is corrupt: "
                        f"download it again")
    return "<" if endian == b"IM" else ">"


def read_mat(path: str | Path, names: Optional[set[str]] = None) -> dict[str, np.ndarray]:
    """The numeric variables of a level-5 MAT-file (only ``names`` if given), with MATLAB's
    shapes (column-major data reshaped in Fortran order)."""
    path = Path(path)
    raw = read_file(path, str(path))
    top = _Reader(raw, _header(raw, str(path)), str(path))
    top.pos, out = 128, {}
    while top.pos < len(raw):
        mtype, data = top.element()
        if mtype == MI_COMPRESSED:
            inner = _Reader(inflate(data, top.what), top.order, top.what)
            mtype, data = inner.element()
        if mtype != MI_MATRIX:
            continue
        var = _matrix(top, data)
        if var is not None and (names is None or var[0] in names):
            out[var[0]] = var[1]
    return out


def _element(mtype: int, payload: bytes) -> bytes:
    return struct.pack("<II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def write_mat(path: str | Path, arrays: dict[str, np.ndarray], compress: bool = True,
              storage: Optional[dict[str, np.dtype]] = None) -> None:
    """Write numeric arrays as a little-endian level-5 MAT-file (as MATLAB 7 does, zlib-
    compressed by default). ``storage`` stores a variable's values in another numeric type,
    as MATLAB does for integral doubles. For test fixtures and small exports."""
    text = b"MATLAB 5.0 MAT-file, written by robustq".ljust(116, b" ")
    out = [text + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"]
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        cls = _CLASS_OF[arr.dtype.newbyteorder("=")]
        store = np.dtype((storage or {}).get(name, arr.dtype)).newbyteorder("<")
        body = (_element(6, struct.pack("<II", cls, 0))
                + _element(5, struct.pack(f"<{arr.ndim}i", *arr.shape))
                + _element(1, name.encode("ascii"))
                + _element(_MI_OF[store.newbyteorder("=")],
                           arr.astype(store).tobytes(order="F")))
        matrix = _element(MI_MATRIX, body)
        if compress:                                     # no padding after compressed data
            matrix = zlib.compress(matrix)
            matrix = struct.pack("<II", MI_COMPRESSED, len(matrix)) + matrix
        out.append(matrix)
    Path(path).write_bytes(b"".join(out))
