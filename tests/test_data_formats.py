"""The official-format readers on small files written here in each format: valid, truncated,
wrong shape, wrong label range; the restricted unpickler refusing code; where data is found."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robustq.data import DATASETS, ImageData, find_root, get_spec, load_dataset, verify
from robustq.data.cifar import read_cifar10, read_cifar100, safe_unpickle
from robustq.data.datasets import read_mnist_format
from robustq.data.idx import write_idx
from robustq.data.matv5 import read_mat, write_mat
from robustq.data.svhn import read_svhn, read_svhn_file
from robustq.errors import DataError

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- writers of official formats
def cifar_batch(n: int, classes: int = 10, keys=("labels",), proto: int = 2) -> bytes:
    """A CIFAR batch pickle: bytes keys as in the Python-2 originals (protocol 2)."""
    d = {b"batch_label": b"training batch", b"data": RNG.integers(0, 256, (n, 3072), np.uint8)}
    for k in keys:
        d[k.encode()] = [int(v) for v in RNG.integers(0, classes, n)]
    return pickle.dumps(d, protocol=proto)


def write_cifar10(root: Path, n: int = 6, tar: bool = False) -> Path:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    files = {m: cifar_batch(n, proto=2 if i % 2 else 4) for i, m in enumerate(names)}
    files["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
    return _write_tree(root, "cifar-10-batches-py", "cifar-10-python.tar.gz", files, tar)


def write_cifar100(root: Path, n: int = 8, tar: bool = False) -> Path:
    files = {m: cifar_batch(n, 100, ("fine_labels", "coarse_labels")) for m in ("train", "test")}
    return _write_tree(root, "cifar-100-python", "cifar-100-python.tar.gz", files, tar)


def _write_tree(root: Path, folder: str, archive: str, files: dict, tar: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if not tar:
        (root / folder).mkdir()
        for name, raw in files.items():
            (root / folder / name).write_bytes(raw)
        return root / folder
    with tarfile.open(root / archive, "w:gz") as t:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            t.addfile(info, io.BytesIO(raw))
    return root / archive


def write_svhn(root: Path, n: int = 5, compress: bool = True, labels=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        x = RNG.integers(0, 256, (32, 32, 3, n), np.uint8)
        y = np.asarray(labels if labels is not None else RNG.integers(1, 11, n), np.float64)
        # MATLAB stores SVHN's integral double labels as uint8
        write_mat(root / name, {"X": x, "y": y.reshape(-1, 1)}, compress, {"y": np.uint8})
    return root


def write_mnist(root: Path, n: int = 12, size: int = 28, label_max: int = 9, gz=True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split in ("train", "t10k"):
        write_idx(root / f"{split}-images-idx3-ubyte{ext}",
                  torch.randint(0, 256, (n, size, size), dtype=torch.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte{ext}",
                  torch.arange(n, dtype=torch.uint8) % (label_max + 1))
    return root


def check(spec_name: str, train: ImageData, test: ImageData) -> None:
    """``verify`` as load_dataset does it, minus the official counts (fixtures are small)."""
    spec = get_spec(spec_name)
    shape = (spec.channels, spec.size, spec.size)
    verify(spec_name, train, shape, None, spec.num_classes, "train")
    verify(spec_name, test, shape, None, spec.num_classes, "test")


def truncate(path: Path, keep: float = 0.5) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)
@pytest.mark.parametrize("gz", [True, False])
def test_idx_valid_gzipped_or_not(tmp_path, gz):
    train, test = read_mnist_format(write_mnist(tmp_path, gz=gz))
    check("mnist", train, test)
    assert train.images.shape == (12, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [i % 10 for i in range(12)]


def test_idx_truncated_wrong_shape_wrong_labels(tmp_path):
    truncate(write_mnist(tmp_path / "t") / "train-images-idx3-ubyte.gz", 0.9)
    with pytest.raises(DataError, match="gzip|truncated"):
        read_mnist_format(tmp_path / "t")
    with pytest.raises(DataError, match="shape"):
        check("mnist", *read_mnist_format(write_mnist(tmp_path / "s", size=27)))
    with pytest.raises(DataError, match="labels span"):
        check("mnist", *read_mnist_format(write_mnist(tmp_path / "l", label_max=10)))


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100
@pytest.mark.parametrize("tar", [False, True])
def test_cifar10_folder_or_archive(tmp_path, tar):
    write_cifar10(tmp_path, n=6, tar=tar)
    train, test = read_cifar10(tmp_path)
    check("cifar10", train, test)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)
    if not tar:  # the batches folder itself works as a root too
        again, _ = read_cifar10(tmp_path / "cifar-10-batches-py")
        assert torch.equal(again.images, train.images)


def test_cifar10_plane_layout(tmp_path):
    """Each row of ``data`` is the R, then G, then B plane, each 32x32 row-major."""
    (tmp_path / "cifar-10-batches-py").mkdir()
    row = np.arange(3072) % 251
    d = {b"data": np.stack([row] * 2).astype(np.uint8), b"labels": [3, 4]}
    for m in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / "cifar-10-batches-py" / m).write_bytes(pickle.dumps(d, protocol=2))
    train, _ = read_cifar10(tmp_path)
    c, h, w = 2, 5, 7
    assert int(train.images[0, c, h, w]) == (c * 1024 + h * 32 + w) % 251


def test_cifar100_fine_and_coarse(tmp_path):
    write_cifar100(tmp_path, tar=True)
    fine, _ = read_cifar100(tmp_path, "fine")
    coarse, _ = read_cifar100(tmp_path, "coarse")
    assert torch.equal(fine.images, coarse.images) and not torch.equal(fine.labels, coarse.labels)
    assert get_spec("cifar100").num_classes == 100 and get_spec("cifar100-coarse").num_classes == 20


def test_cifar_truncated_and_wrong_shape(tmp_path):
    batches = write_cifar10(tmp_path / "t")
    truncate(batches / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3.*truncated or corrupt"):
        read_cifar10(tmp_path / "t")
    write_cifar10(tmp_path / "a", tar=True)
    truncate(tmp_path / "a" / "cifar-10-python.tar.gz", 0.6)
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_cifar10(tmp_path / "a")
    batches = write_cifar10(tmp_path / "s")
    bad = {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}
    (batches / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        read_cifar10(tmp_path / "s")
    bad = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}
    (batches / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        read_cifar10(tmp_path / "s")


def test_cifar_wrong_label_range_and_missing_file(tmp_path):
    write_cifar10(tmp_path / "l")
    (tmp_path / "l" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}, protocol=2))
    with pytest.raises(DataError, match="labels span"):
        check("cifar10", *read_cifar10(tmp_path / "l"))
    os.remove(tmp_path / "l" / "cifar-10-batches-py" / "data_batch_5")
    with pytest.raises(DataError, match="holds neither"):
        read_cifar10(tmp_path / "l")


class _RunsCode:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):  # unpickling would create a file: proof that code ran
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("proto", [2, 4])
def test_restricted_unpickler_refuses_code(tmp_path, proto):
    target = tmp_path / "pwned"
    evil = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_RunsCode(target)]},
                        protocol=proto)
    batches = write_cifar10(tmp_path / "c")
    (batches / "data_batch_2").write_bytes(evil)
    with pytest.raises(DataError, match=r"global io\.open is not allowed.*tampered"):
        read_cifar10(tmp_path / "c")
    assert not target.exists()
    # the classic hand-made one: GLOBAL os.system, REDUCE
    shell = f"cos\nsystem\n(S'touch {target}'\ntR.".encode()
    with pytest.raises(DataError, match=r"os\.system is not allowed"):
        safe_unpickle(shell, "shell")
    assert not target.exists()
    with pytest.raises(DataError, match="non-numeric numpy dtype"):
        safe_unpickle(pickle.dumps(np.array([None, 1], dtype=object), protocol=proto), "obj")


def test_restricted_unpickler_reads_what_numpy_writes():
    for proto in (2, 3, 4, 5):
        for arr in (np.arange(6, dtype=np.uint8).reshape(2, 3), np.arange(4, dtype=">i4")):
            out = safe_unpickle(pickle.dumps({"x": arr}, protocol=proto), "t")["x"]
            ref = pickle.loads(pickle.dumps({"x": arr}, protocol=proto))["x"]
            assert np.array_equal(out, ref) and out.dtype == ref.dtype


# ---------------------------------------------------------------- SVHN (.mat v5)
@pytest.mark.parametrize("compress", [True, False])
def test_svhn_valid_label_10_is_digit_0_and_layout(tmp_path, compress):
    root = write_svhn(tmp_path, n=4, compress=compress, labels=[10, 1, 9, 10])
    x = read_mat(root / "train_32x32.mat")["X"]        # MATLAB (H, W, C, N)
    train, test = read_svhn(root)
    check("svhn", train, test)
    assert train.labels.tolist() == [0, 1, 9, 0]
    assert train.images.shape == (4, 3, 32, 32)
    assert int(train.images[3, 2, 1, 5]) == int(x[1, 5, 2, 3])   # [n, c, h, w] = X[h, w, c, n]


def test_svhn_truncated_wrong_shape_wrong_labels(tmp_path):
    root = write_svhn(tmp_path / "t")
    truncate(root / "test_32x32.mat", 0.7)
    with pytest.raises(DataError, match="test_32x32.mat.*truncated or corrupt"):
        read_svhn(root)
    write_mat(tmp_path / "s.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8),
                                   "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=r"\(32, 32, 3, N\)"):
        read_svhn_file(tmp_path / "s.mat")
    write_mat(tmp_path / "l.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                   "y": np.array([[0.0], [11.0]])})
    with pytest.raises(DataError, match="1..10"):
        read_svhn_file(tmp_path / "l.mat")
    write_mat(tmp_path / "n.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match="3 labels for 2 images"):
        read_svhn_file(tmp_path / "n.mat")


def test_mat_v73_and_garbage_are_refused(tmp_path):
    (tmp_path / "h.mat").write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512) +
                                     b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(DataError, match="v7.3"):
        read_mat(tmp_path / "h.mat")
    (tmp_path / "g.mat").write_bytes(bytes(300))
    with pytest.raises(DataError, match="not a MATLAB 5"):
        read_mat(tmp_path / "g.mat")


# ---------------------------------------------------------------- registry and finding data
def test_registry_has_the_papers_five():
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"):
        spec = get_spec(name)
        assert spec.resources and all(len(r.md5) == 32 for r in spec.resources)
        assert spec.flip == name.startswith("cifar")          # never flip digits
        assert spec.pad > 0
    assert get_spec("svhn").counts == (73257, 26032)           # train only, no extra
    with pytest.raises(DataError, match="unknown dataset"):
        get_spec("imagenet")


def test_find_root_search_order(tmp_path, monkeypatch):
    spec = get_spec("mnist")
    env, xdg = tmp_path / "env", tmp_path / "xdg"
    monkeypatch.setenv("ROBUSTQ_DATA", str(env))
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    (env / "mnist").mkdir(parents=True)                        # exists but empty: passed over
    write_mnist(xdg / "robustq" / "mnist")
    assert find_root(spec) == xdg / "robustq" / "mnist"
    write_mnist(env / "mnist")
    assert find_root(spec) == env / "mnist"
    assert find_root(spec, tmp_path) == tmp_path               # explicit root wins
    with pytest.raises(DataError, match="does not exist"):
        find_root(spec, tmp_path / "missing")
    monkeypatch.setenv("ROBUSTQ_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "nothing"))
    if not Path("/usr/share/datasets/svhn").exists():
        with pytest.raises(DataError, match="robustq data fetch svhn"):
            load_dataset("svhn")


def test_load_dataset_checks_official_counts(tmp_path):
    write_cifar10(tmp_path, n=6)
    with pytest.raises(DataError, match="official one has 50000"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_variants_share_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTQ_DATA", str(tmp_path))
    write_cifar100(tmp_path / "cifar100", tar=True)
    for name in ("cifar100", "cifar100-coarse"):
        assert find_root(DATASETS.get(name)) == tmp_path / "cifar100"
