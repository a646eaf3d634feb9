"""Readers for CIFAR-10 and CIFAR-100 in their official python format (Krizhevsky 2009).

The official archives ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` hold a folder
(``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta``;
``cifar-100-python/``: ``train``, ``test``, ``meta``) of Python-2 pickles. Each data pickle is
a dict with ``data`` (a uint8 numpy array ``(N, 3072)``: the R, G and B planes of a 32x32
image, row-major) and ``labels`` (CIFAR-10) or ``fine_labels`` + ``coarse_labels``
(CIFAR-100), lists of ints. Both the extracted folder and the unextracted .tar.gz are read.

Pickles can run arbitrary code, so they are read with ``RestrictedUnpickler``: it resolves
only the globals a numpy array needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype`` of a plain numeric type; ``_frombuffer`` and ``_codecs.encode`` for copies
re-pickled by Python 3) and refuses everything else. Content is then checked (types, shapes, per-batch
counts); counts and label ranges of the whole split are checked by ``datasets.verify``. No
per-file checksum is required: re-written copies with other bytes (e.g. without the
``filenames`` key) load as long as their content is right.
"""
from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from .bounded import read_file
from .datasets import ImageData

MAX_MEMBER = 256 << 20   # the largest CIFAR member (CIFAR-100 train) is 155 MB

# numeric dtypes a CIFAR pickle may reconstruct (no object, no structured dtypes)
_NUMERIC_KINDS = set("biuf")


def _reconstruct(cls: type, shape: tuple, typecode: bytes | str) -> np.ndarray:
    if cls is not np.ndarray or not isinstance(shape, tuple):
        raise pickle.UnpicklingError("numpy _reconstruct called with something other than ndarray")
    return np.ndarray.__new__(np.ndarray, shape, np.uint8)  # BUILD sets dtype and data


def _dtype(spec: bytes | str, align: object = False, copy: object = False) -> np.dtype:
    if not isinstance(spec, (str, bytes)):
        raise pickle.UnpicklingError(f"refusing numpy dtype built from {type(spec).__name__}")
    # copy=True as numpy's own reduce asks: BUILD then sets the byte order on a private copy,
    # never on numpy's shared built-in dtype
    dt = np.dtype(spec.decode("ascii") if isinstance(spec, bytes) else spec, bool(align), True)
    if dt.kind not in _NUMERIC_KINDS or dt.fields is not None:
        raise pickle.UnpicklingError(f"refusing non-numeric numpy dtype {dt}")
    return dt


def _frombuffer(buf: bytes, dtype: np.dtype, shape: tuple, order: str) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) \
            or dtype.kind not in _NUMERIC_KINDS or order not in ("C", "F"):
        raise pickle.UnpicklingError("refusing numpy _frombuffer outside numeric byte buffers")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy(order="C")


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode outside latin1 byte strings")
    return codecs.encode(text, "latin1")


_ALLOWED: dict[tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,     # protocol 5 (newer Pythons)
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, strings, bytes, numbers and numeric
    numpy arrays; any other global (``os.system``, ``builtins.eval``, ...) is refused."""

    def find_class(self, module: str, name: str):  # noqa: D102 (pickle API)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid):  # noqa: D102 (pickle API)
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_unpickle(raw: bytes, what: str) -> object:
    """Unpickle ``raw`` (the file ``what``) with ``RestrictedUnpickler``; DataError if refused."""
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        if "not allowed" in str(e) or "refusing" in str(e):
            raise DataError(f"{what} asks to run code that a CIFAR file never needs ({e}); it was "
                            f"tampered with or is not a CIFAR file: delete it and fetch the "
                            f"dataset again") from None
        raise DataError(f"{what} is not a readable pickle ({e}); it is truncated or corrupt: "
                        f"download the dataset again") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, OverflowError) as e:
        raise DataError(f"{what} is not a readable pickle ({type(e).__name__}: {e}); it is "
                        f"truncated or corrupt: download the dataset again") from None


def _str_keys(obj: object, what: str) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{what} holds a {type(obj).__name__}, not the dict of a CIFAR batch; "
                        f"point data.root at the official python-version files")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def parse_batch(obj: object, what: str, label_keys: tuple[str, ...]) -> tuple[np.ndarray, list]:
    """Check one unpickled batch; return its images ``(N, 3, 32, 32)`` and label arrays."""
    d = _str_keys(obj, what)
    missing = [k for k in ("data", *label_keys) if k not in d]
    if missing:
        raise DataError(f"{what} has no {', '.join(missing)} entry; it is not a CIFAR "
                        f"{'-100' if 'fine_labels' in label_keys else '-10'} batch file")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{what} holds images of type/shape {got}, not uint8 (N, 3072); the "
                        f"file is corrupt or not CIFAR: download the dataset again")
    labels = []
    for key in label_keys:
        lab = d[key]
        if not isinstance(lab, (list, np.ndarray)) or len(lab) != data.shape[0] or \
                not all(isinstance(v, (int, np.integer)) for v in lab):
            raise DataError(f"{what} has {len(lab) if hasattr(lab, '__len__') else '?'} "
                            f"{key} for {data.shape[0]} images, or labels that are not "
                            f"integers; the file is corrupt: download the dataset again")
        labels.append(np.asarray(lab, dtype=np.int64))
    return data.reshape(-1, 3, 32, 32), labels


class _Source:
    """The member files of a CIFAR folder, read from disk or from the official .tar.gz."""

    def __init__(self, root: Path, folder: str, archive: str, members: tuple[str, ...]) -> None:
        self.members = members
        for cand in (root, root / folder):
            if all((cand / m).is_file() for m in members):
                self.where, self.tar = cand, None
                return
        if (root / archive).is_file():
            self.where, self.tar = root / archive, folder
            return
        raise DataError(f"{root} holds neither {folder}/ with {', '.join(members)} nor "
                        f"{archive}; fetch the dataset (robustq data fetch) or set data.root "
                        f"to the folder that holds it")

    def read_all(self) -> dict[str, bytes]:
        if self.tar is None:
            return {m: read_file(self.where / m, self.describe(m), MAX_MEMBER) for m in self.members}
        wanted = {f"{self.tar}/{m}": m for m in self.members}
        out: dict[str, bytes] = {}
        try:
            with tarfile.open(self.where, "r:gz") as tar:
                for info in tar:
                    if info.name in wanted and info.isfile():
                        if info.size > MAX_MEMBER:
                            raise DataError(f"{self.describe(wanted[info.name])} declares "
                                            f"{info.size:,} bytes, more than any CIFAR file; the "
                                            f"archive is corrupt: fetch the dataset again")
                        out[wanted[info.name]] = tar.extractfile(info).read()
                        if len(out) == len(wanted):
                            break  # the rest of the archive is never decompressed
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{self.where} is not a readable .tar.gz ({e}); it is truncated "
                            f"or corrupt: delete it and fetch the dataset again") from None
        lost = [m for m in self.members if m not in out]
        if lost:
            raise DataError(f"{self.where} lacks {self.tar}/{', '.join(lost)}; it is not the "
                            f"official archive: delete it and fetch the dataset again")
        return out

    def describe(self, member: str) -> str:
        return f"{self.where}/{member}" if self.tar is None else f"{self.where}:{self.tar}/{member}"


def _split(src: _Source, raw: dict[str, bytes], members: tuple[str, ...],
           label_key: tuple[str, ...], pick: int) -> ImageData:
    images, labels = [], []
    for m in members:
        x, ys = parse_batch(safe_unpickle(raw[m], src.describe(m)), src.describe(m), label_key)
        images.append(x)
        labels.append(ys[pick])
    x = images[0] if len(images) == 1 else np.concatenate(images)
    y = labels[0] if len(labels) == 1 else np.concatenate(labels)
    return ImageData(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))


CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def read_cifar10(root: Path) -> tuple[ImageData, ImageData]:
    """CIFAR-10 from ``root`` (``cifar-10-batches-py/`` itself, its parent, or the .tar.gz)."""
    src = _Source(Path(root), "cifar-10-batches-py", "cifar-10-python.tar.gz",
                  (*CIFAR10_TRAIN, "test_batch"))
    raw = src.read_all()
    return (_split(src, raw, CIFAR10_TRAIN, ("labels",), 0),
            _split(src, raw, ("test_batch",), ("labels",), 0))


def read_cifar100(root: Path, labels: str = "fine") -> tuple[ImageData, ImageData]:
    """CIFAR-100 from ``root`` with its ``fine`` (100 classes) or ``coarse`` (20) labels."""
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    src = _Source(Path(root), "cifar-100-python", "cifar-100-python.tar.gz", ("train", "test"))
    raw = src.read_all()
    keys, pick = ("fine_labels", "coarse_labels"), int(labels == "coarse")
    return _split(src, raw, ("train",), keys, pick), _split(src, raw, ("test",), keys, pick)
