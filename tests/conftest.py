"""Shared fixtures. Tests run on the CPU with small models and synthetic data; tests that
read the real datasets (``$ROBUSTQ_DATA``, else a ``shared/data`` folder beside the
repository) are marked ``data`` and skip when they are absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("ROBUSTQ_DATA") or
                   Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def same_threads_as_subprocess():
    """For tests that compare a subprocess pinned to ``OMP_NUM_THREADS=1`` with a run in this
    process: float sums depend on the thread count, so this side runs on one thread too."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real datasets are not present ({SHARED_DATA})")
    return SHARED_DATA
