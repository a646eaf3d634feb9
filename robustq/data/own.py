"""Datasets of your own: a folder of class subfolders of PNG/JPEG files, or one ``.npz``.

Named in the config by kind and path, so a run directory records where its data came from::

    data.name: folder:/data/leaves      # PATH/train/<class>/*.png and PATH/test/<class>/*.png,
                                        # or PATH/<class>/*.png (a test split is held out)
    data.name: npz:/data/scans.npz      # arrays x_train, y_train, x_test, y_test

Both load into the same ``ImageData`` as the built-in datasets and pass the same ``verify``
(shapes, label range), then the same validation split, augmentation and errors apply.

Rules (docs/datasets.md):

* Classes are the subfolder names, sorted (``folder``), or ``0..max label`` (``npz``, with
  optional names in a ``classes`` array). Test classes must be among the training classes.
* Images must be square and all of one size (no silent resize): a 640x480 photo is an error
  that names the file. Grayscale files give 1 channel; if any file is in colour, all are
  converted to RGB (an alpha channel is dropped).
* Without ``train/`` and ``test/``, a stratified 1/6 of the images (seed 0, the same for
  every run, so runs are comparable) is the test split, as MNIST's 60k/10k.
* Augmentation: random crop with zero padding ``max(2, size // 8)``, no flips.
* ``.npz`` images are ``uint8`` arrays ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``
  with C 1 or 3; labels are integers. The file is read with ``allow_pickle=False``.

Folders need Pillow (``pip install "robustq[images]"``); ``.npz`` needs nothing more.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from .datasets import DatasetSpec, ImageData, verify

KINDS = ("folder", "npz")
EXTENSIONS = (".png", ".jpg", ".jpeg")
TEST_FRACTION = 1 / 6


def own_kind(name: str) -> Optional[tuple[str, Path]]:
    """``("folder" | "npz", path)`` for ``folder:PATH`` / ``npz:PATH``; None otherwise."""
    kind, sep, path = name.partition(":")
    if not sep or kind not in KINDS:
        return None
    if not path:
        raise DataError(f"data.name {name!r} names no path; write {kind}:/path/to/your/data")
    return kind, Path(path).expanduser()


def _square(name: str, size: tuple[int, int], where: str) -> int:
    h, w = size
    if h != w:
        raise DataError(f"{where} is {w}x{h} pixels but {name} images must be square; crop or "
                        f"resize them to one square size first (docs/datasets.md)")
    if h < 8:
        raise DataError(f"{where} is {w}x{h} pixels; the networks need images of at least 8x8")
    return h


def _class_files(folder: Path) -> dict[str, list[Path]]:
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {d.name: sorted(f for f in d.rglob("*") if f.suffix.lower() in EXTENSIONS)
             for d in classes}
    if not files:
        raise DataError(f"{folder} holds no class subfolders; put the images in "
                        f"{folder}/<class>/*.png (or train/ and test/ folders of those)")
    empty = [c for c, fs in files.items() if not fs]
    if empty:
        raise DataError(f"class folder {folder / empty[0]} holds no PNG or JPEG files; add "
                        f"images or remove the folder")
    return files


def _read_images(paths: list[Path], rgb: Optional[bool]) -> tuple[torch.Tensor, bool]:
    """uint8 ``(N, C, H, W)`` from image files, all of the first file's square size."""
    from ..extras import require
    require("images", "a folder dataset (data.name: folder:PATH)")
    from PIL import Image

    arrays, size, modes = [], None, []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                modes.append(im.mode)
                arrays.append(im.copy())
        except (OSError, ValueError) as e:
            raise DataError(f"{p} is not a readable PNG or JPEG image ({e}); remove or "
                            f"replace it") from None
        s = _square("folder", arrays[-1].size[::-1], str(p))
        if size is None:
            size = s
        elif s != size:
            raise DataError(f"{p} is {s}x{s} pixels but the first image is {size}x{size}; "
                            f"all images must have one size (resize them first)")
    if rgb is None:
        rgb = any(m not in ("1", "L", "LA", "I", "I;16", "F") for m in modes)
    mode = "RGB" if rgb else "L"
    stack = np.stack([np.asarray(im.convert(mode), dtype=np.uint8) for im in arrays])
    x = torch.from_numpy(stack)
    return (x.permute(0, 3, 1, 2) if rgb else x[:, None]).contiguous(), rgb


def read_folder(root: Path) -> tuple[ImageData, Optional[ImageData], tuple[str, ...]]:
    """Train (and test, if ``root`` has ``train/`` and ``test/``) splits and class names."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; data.name folder:PATH needs a "
                        f"folder of class subfolders of PNG/JPEG files")
    has_splits = (root / "train").is_dir()
    if has_splits and not (root / "test").is_dir():
        raise DataError(f"{root} has a train/ folder but no test/ folder; add test/<class>/ "
                        f"images, or put the class folders directly in {root}")
    train_files = _class_files(root / "train" if has_splits else root)
    classes = tuple(train_files)
    test_files = _class_files(root / "test") if has_splits else {}
    extra = sorted(set(test_files) - set(classes))
    if extra:
        raise DataError(f"{root / 'test' / extra[0]} is a test class with no training folder; "
                        f"the test classes must be among {', '.join(classes)}")

    def split(files: dict[str, list[Path]], rgb: Optional[bool]):
        paths = [p for c in classes for p in files.get(c, [])]
        labels = [i for i, c in enumerate(classes) for _ in files.get(c, [])]
        x, rgb = _read_images(paths, rgb)
        return ImageData(x, torch.tensor(labels, dtype=torch.long)), rgb

    train, rgb = split(train_files, None)
    if not has_splits:
        return train, None, classes
    test, _ = split(test_files, rgb)
    if test.images.shape[1:] != train.images.shape[1:]:
        raise DataError(f"the test images in {root / 'test'} are {tuple(test.images.shape[1:])} "
                        f"but the training images {tuple(train.images.shape[1:])}; use one size")
    return train, test, classes


def _npz_images(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {key} is {x.dtype} but must be uint8 pixels 0..255; convert "
                        f"it with (x * 255).round().astype('uint8') if it holds [0, 1] floats")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] == x.shape[2]:
        x = x.transpose(0, 3, 1, 2)                      # (N, H, W, C) -> (N, C, H, W)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise DataError(f"{path}: {key} has shape {x.shape}; it must be (N, H, W), (N, H, W, C) "
                        f"or (N, C, H, W) with C 1 or 3")
    _square("npz", x.shape[2:], f"{path}: {key}'s images")
    return torch.from_numpy(np.ascontiguousarray(x))


def read_npz(path: Path) -> tuple[ImageData, ImageData, tuple[str, ...]]:
    """Train and test splits and class names from ``x_train, y_train, x_test, y_test``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"dataset file {path} does not exist; data.name npz:PATH needs a .npz "
                        f"with x_train, y_train, x_test, y_test") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable .npz of plain arrays ({e})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it must hold x_train, y_train, "
                        f"x_test and y_test (has: {', '.join(sorted(arrays)) or 'nothing'})")
    splits = []
    for s in ("train", "test"):
        y = arrays[f"y_{s}"]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y_{s} must be a 1-D array of integer labels, got "
                            f"{y.dtype} {y.shape}")
        splits.append(ImageData(_npz_images(arrays[f"x_{s}"], f"x_{s}", path),
                                torch.from_numpy(y.astype(np.int64))))
    n = int(splits[0].labels.max()) + 1 if len(splits[0]) else 0
    names = arrays.get("classes")
    classes = tuple(str(c) for c in names) if names is not None else tuple(map(str, range(n)))
    return splits[0], splits[1], classes


def load_own(name: str, root: Optional[str | Path] = None
             ) -> tuple[ImageData, ImageData, DatasetSpec]:
    """Read, split and verify a ``folder:`` or ``npz:`` dataset; its spec is built from it."""
    from .loader import stratified_split

    kind, path = own_kind(name)  # type: ignore[misc]
    if root is not None:
        raise DataError(f"data.root is not used with data.name {name!r} (the path is in the "
                        f"name); remove data.root")
    if kind == "npz":
        train, test, classes = read_npz(path)
    else:
        train, test, classes = read_folder(path)
        if test is None:  # one folder of classes: hold out a fixed, stratified test split
            n_test = int(round(TEST_FRACTION * len(train)))
            if n_test < 1 or n_test >= len(train):
                raise DataError(f"{path} holds {len(train)} images, too few to hold out a "
                                f"test split; add images or use train/ and test/ folders")
            tr, te = stratified_split(train.labels, n_test, seed=0)
            train, test = train.subset(tr), train.subset(te)
    c, size = train.images.shape[1], train.images.shape[2]
    spec = DatasetSpec(name=name, channels=c, size=size, classes=classes,
                       counts=(len(train), len(test)), read=lambda _: (train, test), files=(),
                       pad=max(2, size // 8), flip=False, info={"source": str(path)})
    for data, split in ((train, "train"), (test, "test")):
        verify(name, data, (c, size, size), None, spec.num_classes, split)
    return train, test, spec
