"""Content hashes and load-time checks (robustq/integrity.py); the hostile cases are in
tests/faults/."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from robustq.build import Arch, build_model, build_network
from robustq.checkpoint import remove_stale_tmp, save
from robustq.errors import CheckpointError
from robustq.integrity import check_grid, content_hash, estimate_params
from robustq.quant import PROJECTIONS, bake


def test_the_hash_survives_a_save_and_load_and_sees_one_changed_bit(tmp_path):
    obj = {"format": "x", "t": torch.randn(3, 4).to(memory_format=torch.contiguous_format),
           "meta": {"b": [1, 2.5, None, "s"], "a": (True, float("nan"))}}
    save(obj, tmp_path / "f.pt")
    back = torch.load(tmp_path / "f.pt", weights_only=True)
    assert back["sha256"] == content_hash(obj) == content_hash(back)
    back["t"].view(torch.int32)[0, 0] ^= 1
    assert content_hash(back) != content_hash(obj)


@pytest.mark.parametrize("scheme", PROJECTIONS.names())
def test_every_baked_quantizer_is_on_its_grid_and_an_edit_is_not(scheme):
    torch.manual_seed(0)
    model, bits = build_model(Arch(8, 1, 0.1, 1, 10, 28), scheme, "all")
    state = bake(copy.deepcopy(model)).state_dict()
    check_grid(state, bits, Path("m.pt"))
    layer = next(k for k, v in bits.items() if v != "float")
    w = state[f"{layer}.weight"].view(-1)
    w[w.abs().argmax()] *= 1.37  # a nonzero code (ternary grids hold many zeros)
    with pytest.raises(CheckpointError, match="grid"):
        check_grid(state, bits, Path("m.pt"))


@pytest.mark.parametrize("depth,ensemble,classes", [(8, 1, 10), (20, 5, 100), (110, 1, 10)])
def test_the_size_estimate_is_close_to_the_real_count(depth, ensemble, classes):
    real = sum(p.numel() for p in build_network(Arch(depth, ensemble, 0.1, 3, classes, 32)).parameters())
    assert real <= estimate_params(depth, ensemble, 3, classes) <= 1.4 * real


def test_only_robustq_temporary_files_are_removed(tmp_path):
    for name in (".checkpoint.pt.tmp123", ".robustq-probe-abc", ".model.pt.tmpx", "keep.tmp1", "model.pt"):
        (tmp_path / name).write_text("x")
    removed = {p.name for p in remove_stale_tmp(tmp_path)}
    assert removed == {".checkpoint.pt.tmp123", ".robustq-probe-abc"}
    assert {p.name for p in tmp_path.iterdir()} == {".model.pt.tmpx", "keep.tmp1", "model.pt"}
