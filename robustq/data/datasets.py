"""Datasets by name: what each one is, where to find it, and how to read and verify it.

Every dataset loads into an ``ImageData`` (uint8 images ``(N, C, H, W)`` + int64 labels)
straight from its official on-disk format. Content is verified on load (shapes, counts,
label range) so that what robustq trains on is the real dataset.

Where a dataset is looked for, in order (``candidate_roots``): an explicit ``data.root``;
``$ROBUSTQ_DATA/<folder>``; robustq's own data directory (``$XDG_DATA_HOME/robustq/<folder>``,
by default ``~/.local/share/robustq/<folder>``, where ``robustq data fetch`` puts it); the
copy bundled inside the package; the folders where system packages install datasets
(``/usr/share/datasets/<folder>``, as Debian's ``dataset-fashion-mnist`` does). The first
folder that holds the dataset's files wins. The entries themselves are in ``catalog.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import DataError
from ..registry import Registry
from .idx import read_idx

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
ENV_VAR = "ROBUSTQ_DATA"


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: torch.Tensor) -> "ImageData":
        return ImageData(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class Resource:
    """One file of a dataset's official distribution and its published MD5."""
    file: str
    md5: str
    extract: str = ""                        # for archives: the folder they unpack to


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    size: int
    classes: tuple[str, ...]
    counts: tuple[int, int]                  # (train, test) as published
    read: Callable[[Path], tuple[ImageData, ImageData]]
    files: tuple[str, ...]                   # what must be in the directory
    pad: int = 4                             # random-crop padding
    flip: bool = False                       # horizontal flips (never for digits)
    system_dirs: tuple[str, ...] = ()        # where system packages install it
    default_root: Optional[Path] = None      # bundled data
    info: dict = field(default_factory=dict)  # source, license, citation
    folder: str = ""                         # directory name under a data root (default: name)
    present: Optional[Callable[[Path], bool]] = None  # does a folder hold it? (default: files)
    mirrors: tuple[str, ...] = ()            # base URLs of the official files, tried in order
    resources: tuple[Resource, ...] = ()     # what ``robustq data fetch`` downloads

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def dirname(self) -> str:
        return self.folder or self.name

    def is_present(self, root: Path) -> bool:
        """Whether ``root`` holds this dataset's files (not yet whether they are valid)."""
        if self.present is not None:
            return self.present(root)
        return all((root / f).is_file() or (root / f"{f}.gz").is_file() for f in self.files)


DATASETS: Registry[DatasetSpec] = Registry("dataset")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def _find_file(root: Path, stem: str) -> Path:
    for cand in (root / f"{stem}.gz", root / stem):
        if cand.exists():
            return cand
    raise DataError(f"dataset file {stem}(.gz) is missing from {root}; download the dataset "
                    f"again (robustq data fetch) or point data.root at a complete copy")


def verify(name: str, data: ImageData, shape: tuple[int, int, int], count: Optional[int],
           num_classes: int, split: str) -> ImageData:
    """Check shapes, counts and label range; raise one clear DataError otherwise."""
    n = len(data)
    if tuple(data.images.shape[1:]) != shape or data.images.shape[0] != n:
        raise DataError(f"{name} {split} images have shape {tuple(data.images.shape)} but should "
                        f"be (N, {', '.join(map(str, shape))}) with N = {n} labels; the files "
                        f"are not {name} or are corrupt")
    if count is not None and n != count:
        raise DataError(f"{name} {split} split has {n} images but the official one has {count}; "
                        f"the copy is incomplete or not {name}: download it again")
    if data.images.dtype != torch.uint8 or data.labels.dtype != torch.int64:
        raise DataError(f"{name} {split} holds {data.images.dtype} images and {data.labels.dtype} "
                        f"labels, not uint8 pixels and integer labels; the files are not {name}")
    if n and (int(data.labels.min()) < 0 or int(data.labels.max()) >= num_classes):
        raise DataError(f"{name} {split} labels span [{int(data.labels.min())}, "
                        f"{int(data.labels.max())}] but must lie in [0, {num_classes - 1}]; the "
                        f"label file is corrupt or belongs to another dataset")
    if n >= 2 * num_classes and int(data.labels.unique().numel()) == 1:
        raise DataError(f"{name} {split} labels are all {int(data.labels[0])}; the label file is "
                        f"corrupt (zeroed or overwritten): download the dataset again")
    return data


def read_mnist_format(root: Path) -> tuple[ImageData, ImageData]:
    """MNIST-format IDX files (MNIST, Fashion-MNIST, and the bundled subset)."""
    out = []
    for split in ("train", "t10k"):
        images = read_idx(_find_file(root, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_file(root, f"{split}-labels-idx1-ubyte"))
        if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"the {split} files in {root} disagree: images {tuple(images.shape)}, "
                            f"labels {tuple(labels.shape)}; they must hold N 2-D images and N labels")
        out.append(ImageData(images.unsqueeze(1).contiguous(), labels.long()))
    return out[0], out[1]


def user_data_dir() -> Path:
    """robustq's own data directory: ``$XDG_DATA_HOME/robustq`` (``~/.local/share/robustq``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "robustq"


def get_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name`` (or the spec of a ``folder:`` / ``npz:`` dataset,
    read to build it); a DataError listing the known ones otherwise."""
    from .own import load_own, own_kind
    if own_kind(name) is not None:
        return load_own(name)[2]
    try:
        return DATASETS.get(name)
    except KeyError as e:
        raise DataError(f"{e.args[0]}; see robustq data list") from None


def candidate_roots(spec: DatasetSpec, root: Optional[str | Path] = None) -> list[Path]:
    """Where to look, in order: explicit root; $ROBUSTQ_DATA/<folder>; the user data dir;
    bundled; system dirs (``/usr/share/datasets/<folder>`` and the spec's own)."""
    if root is not None:
        return [Path(root).expanduser()]
    cands = []
    if os.environ.get(ENV_VAR):
        cands.append(Path(os.environ[ENV_VAR]).expanduser() / spec.dirname)
    cands.append(user_data_dir() / spec.dirname)
    if spec.default_root is not None:
        cands.append(spec.default_root)
    cands += [Path(d) for d in (*spec.system_dirs, f"/usr/share/datasets/{spec.dirname}")]
    return list(dict.fromkeys(cands))  # in order, without duplicates


def find_root(spec: DatasetSpec, root: Optional[str | Path] = None) -> Path:
    """The folder to read ``spec`` from: the explicit ``root`` if it exists, else the first
    candidate that holds the dataset's files (a folder without them is passed over)."""
    cands = candidate_roots(spec, root)
    if root is not None:
        if cands[0].is_dir():
            return cands[0]
        raise DataError(f"data directory {cands[0]} does not exist; set data.root to the folder "
                        f"that holds the {spec.name} files")
    for cand in cands:
        if cand.is_dir() and spec.is_present(cand):
            return cand
    where = ", ".join(str(c) + ("" if not c.is_dir() else " (lacks its files)") for c in cands)
    fetch = f"run robustq data fetch {spec.name}, " if spec.resources else ""
    raise DataError(f"dataset {spec.name} was not found (looked in {where}); {fetch}set "
                    f"data.root to its folder, or set ${ENV_VAR} to a folder containing "
                    f"{spec.dirname}/")


def check_md5s(spec: DatasetSpec, where: Path, require: bool = True) -> list[str]:
    """Check the published MD5 of each of ``spec``'s official files in ``where`` (or, for an
    extracted archive, its parent); returns the files checked. DataError on any mismatch and,
    if ``require``, when a file to check is absent (only its extracted content is there)."""
    from .fetch import md5sum

    if not spec.resources:
        raise DataError(f"{spec.name} has no published checksums (it is bundled or derived); "
                        f"set data.verify false for it")
    checked = []
    for res in spec.resources:
        path = next((d / res.file for d in (where, where.parent) if (d / res.file).is_file()), None)
        if path is None and not require:
            continue
        if path is None:
            raise DataError(f"{spec.name}: {res.file} is not in {where}, so its published MD5 "
                            f"cannot be checked; fetch the dataset (robustq data fetch "
                            f"{spec.name}) or set data.verify false")
        if md5sum(path) != res.md5:
            raise DataError(f"{path} does not have the published MD5 {res.md5} (a re-compressed "
                            f"or modified copy); fetch the official file (robustq data fetch "
                            f"{spec.name}) or set data.verify false to use it as it is")
        checked.append(str(path))
    return checked


def load_dataset(name: str, root: Optional[str | Path] = None,
                 check: bool = False) -> tuple[ImageData, ImageData, DatasetSpec]:
    """Read and verify ``name``'s train and test splits from ``root`` (or the usual places);
    with ``check``, first check the published MD5s of the files (``check_md5s``).

    ``folder:PATH`` and ``npz:PATH`` name a dataset of the user's own (``own.py``)."""
    from .own import load_own, own_kind
    if own_kind(name) is not None:
        return load_own(name, root)
    spec = get_spec(name)
    where = find_root(spec, root)
    if check:
        check_md5s(spec, where)
    train, test = spec.read(where)
    shape = (spec.channels, spec.size, spec.size)
    verify(name, train, shape, spec.counts[0], spec.num_classes, "train")
    verify(name, test, shape, spec.counts[1], spec.num_classes, "test")
    return train, test, spec
