"""The real datasets in ../shared/data (marked ``data``: run with ``pytest -m data``; skipped
when the folder is absent). Checks counts, class balance and known first labels, and that
the rewritten CIFAR-10 pickles (no ``filenames``, other bytes than the official tarball)
load by content."""
from __future__ import annotations

import pytest
import torch

from robustq.data import find_root, get_spec, load_dataset

pytestmark = pytest.mark.data

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _per_class(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


def test_mnist(shared_data):
    train, test, _ = load_dataset("mnist", shared_data / "mnist")
    assert _per_class(train.labels) == MNIST_TRAIN and _per_class(test.labels) == MNIST_TEST


def test_fashion_mnist(shared_data):
    train, test, _ = load_dataset("fashion-mnist", shared_data / "fashion-mnist")
    assert _per_class(train.labels) == [6000] * 10 and _per_class(test.labels) == [1000] * 10


def test_cifar10_loads_by_content(shared_data):
    train, test, spec = load_dataset("cifar10", shared_data / "cifar10")
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert _per_class(train.labels) == [5000] * 10 and _per_class(test.labels) == [1000] * 10
    assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]   # data_batch_1
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]    # test_batch
    again, _, _ = load_dataset("cifar10", shared_data / "cifar10" / "cifar-10-batches-py")
    assert torch.equal(again.images[-5:], train.images[-5:])


def test_found_through_the_environment(shared_data, monkeypatch):
    monkeypatch.setenv("ROBUSTQ_DATA", str(shared_data))
    for name in ("mnist", "fashion-mnist", "cifar10"):
        assert find_root(get_spec(name)) == shared_data / name
