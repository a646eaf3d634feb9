"""Packed export: bit packing, exact codes, load equivalence, and files that must not load."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st
from safetensors.torch import load_file, save_file

import robustq
from robustq.errors import CheckpointError
from robustq.integrity import content_hash
from robustq.build import load_any_model
from robustq.efficiency.export import load_packed, write_packed
from robustq.models import set_noise
from robustq.efficiency.packing import code_bits, pack_codes, packed_nbytes, recover_codes, unpack_codes
from robustq.efficiency.prune import prune
from robustq.quant import PROJECTIONS

from .efficiency_helpers import one_thread, sparse_model  # noqa: F401 (fixture)

WIDTHS = [(1, 1)] + [(m, 2 ** (m - 1) - 1) for m in range(2, 9)]   # binary; ternary = (2, 1); m-bit


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(WIDTHS), st.integers(0, 300), st.integers(0, 2 ** 31 - 1))
def test_pack_unpack_round_trip_for_every_bit_width(width, n, seed):
    bits, levels = width
    g = torch.Generator().manual_seed(seed)
    if bits == 1:
        codes = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    else:
        codes = torch.randint(-levels, levels + 1, (n,), generator=g)
    packed = pack_codes(codes, bits, levels)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(n, bits) == (n * bits + 7) // 8
    assert torch.equal(unpack_codes(packed, n, bits, levels), codes)


@pytest.mark.parametrize("bits,levels", [(2, 1), (3, 3), (4, 7), (8, 127)])
def test_a_code_outside_the_bit_width_is_rejected(bits, levels):
    packed = pack_codes(torch.zeros(8, dtype=torch.long), bits, levels)
    packed[0] = 0xFF                                  # offset 2^m - 1 > 2L
    with pytest.raises(ValueError, match="outside"):
        unpack_codes(packed, 8, bits, levels)


def test_binary_zeros_take_two_bits_and_padding_must_be_zero():
    assert code_bits(1, torch.tensor([1, -1])) == 1 and code_bits(1, torch.tensor([1, 0])) == 2
    assert code_bits(4, torch.tensor([0, 3])) == 4
    packed = pack_codes(torch.tensor([1, -1, 1]), 1, 1)
    packed[0] |= 0x80
    with pytest.raises(ValueError, match="padding"):
        unpack_codes(packed, 3, 1, 1)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(PROJECTIONS.names())), st.integers(1, 400), st.integers(0, 2 ** 31 - 1))
def test_codes_are_recovered_exactly_from_baked_weights(name, n, seed):
    proj = PROJECTIONS.get(name)
    w = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.1
    q = proj(w)
    codes, scale = recover_codes(q, proj.levels)
    assert int(codes.abs().max()) <= proj.levels
    assert torch.equal(scale * codes.float(), q)     # bit for bit


@pytest.mark.parametrize("scheme,ensemble", [("binary", 2), ("ternary", 1), ("4bit", 2), ("3bit", 1)])
def test_export_load_reproduces_outputs_exactly(scheme, ensemble, tmp_path):
    dense, meta = sparse_model(14, ensemble, scheme, p=0.3, seed=ensemble)
    pruned, spec = prune(dense, meta["arch"])
    header = write_packed(tmp_path / "m.safetensors", pruned, spec, meta)
    assert {v["bits"] for v in header["packed"].values()} == {PROJECTIONS.get(scheme).bits}
    loaded = robustq.load(tmp_path / "m.safetensors")
    x = torch.rand(4, 3, 12, 12)
    for noise in (False, True):
        outs = []
        for m in (pruned, loaded, dense):
            set_noise(m, noise)
            torch.manual_seed(0)
            with torch.no_grad():
                outs.append(m(x))
        assert torch.equal(outs[0], outs[1])           # exactly the pruned model
        torch.testing.assert_close(outs[1], outs[2], atol=1e-5, rtol=1e-5)
    model, meta2 = load_any_model(tmp_path / "m.safetensors")
    assert meta2["arch"] == meta["arch"] and meta2["quant"] == scheme and meta2["input_shape"] == [3, 12, 12]


def test_loading_needs_no_training_code(tmp_path):
    dense, meta = sparse_model(8, 1, "4bit")
    write_packed(tmp_path / "m.safetensors", *prune(dense, meta["arch"]), meta)
    code = ("import sys, robustq; m = robustq.load(sys.argv[1]); "
            "print(sorted(k for k in sys.modules if k.startswith('robustq')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.safetensors")],
                         capture_output=True, text=True, check=True).stdout
    for training in ("engine", "quant", "attacks", "config", "losses", "data"):
        assert f"robustq.{training}" not in out


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    dense, meta = sparse_model(8, 2, "4bit", p=0.2, seed=4)
    path = tmp_path_factory.mktemp("export") / "good.safetensors"
    write_packed(path, *prune(dense, meta["arch"]), meta)
    return path


def _tamper(src, dst, edit, rehash=True):
    """Edit a file as a hostile user would: the content hash recomputed (unless ``rehash`` is
    False), so that the checks behind it are what must catch the edit."""
    tensors = load_file(src)
    from safetensors import safe_open
    with safe_open(str(src), "pt") as f:
        header = json.loads(f.metadata()["robustq"])
    edit(tensors, header)
    if rehash and "sha256" in header:
        header["sha256"] = content_hash({"header": {k: v for k, v in header.items() if k != "sha256"},
                                         "tensors": tensors})
    save_file(tensors, dst, metadata={"robustq": json.dumps(header)})
    return dst


def _first(tensors, suffix):
    return next(k for k in sorted(tensors) if k.endswith(suffix))


def _set(tensors, key, value):
    tensors[key] = value


TAMPERS = {
    "wrong shape": (lambda t, h: _set(t, _first(t, "bn.weight"), torch.ones(3)), "shape"),
    "code outside the bit width": (lambda t, h: t[_first(t, ".codes")].__setitem__(0, 0xFF), "tampered codes"),
    "bytes missing": (lambda t, h: _set(t, _first(t, ".codes"), t[_first(t, ".codes")][:-1]), "tampered codes"),
    "ensemble disagrees": (lambda t, h: h["arch"].__setitem__("ensemble", 3), "contradicts itself"),
    "plan disagrees": (lambda t, h: h["arch"].__setitem__("depth", 14), "plan"),
    "packed shape disagrees": (lambda t, h: next(iter(h["packed"].values()))["shape"].__setitem__(0, 99),
                               "disagrees"),
    "impossible bit width": (lambda t, h: next(iter(h["packed"].values())).__setitem__("bits", 2), "bit width"),
    "missing tensor": (lambda t, h: t.pop(_first(t, "linear.bias")), "lacks"),
    "extra tensor": (lambda t, h: _set(t, "members.0.evil", torch.zeros(1)), "does not describe"),
    "non-finite scale": (lambda t, h: _set(t, _first(t, ".scale"), torch.tensor([float("nan")])), "scale"),
    "newer format": (lambda t, h: h.__setitem__("format_version", 99), "newer"),
    "absurd size": (lambda t, h: h["arch"].__setitem__("in_channels", 10 ** 9), "implausible"),
    "foreign format tag": (lambda t, h: h.clear() or h.__setitem__("format", "other"), "not a robustq-packed"),
}


def test_an_edit_without_a_new_hash_is_corrupt(good_file, tmp_path):
    bad = _tamper(good_file, tmp_path / "bad.safetensors",
                  lambda t, h: t[_first(t, "bn.weight")].mul_(1.0001), rehash=False)
    with pytest.raises(CheckpointError, match="content hash"):
        load_packed(bad)


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_files_fail_with_one_sentence(case, good_file, tmp_path):
    edit, words = TAMPERS[case]
    bad = _tamper(good_file, tmp_path / "bad.safetensors", edit)
    with pytest.raises(CheckpointError, match=words) as e:
        load_packed(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_malformed_truncated_and_foreign_files(good_file, tmp_path):
    data = good_file.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "garbage": b"\x00\x01 not safetensors" * 10,
             "empty": b""}
    for name, content in cases.items():
        (tmp_path / f"{name}.safetensors").write_bytes(content)
        with pytest.raises(CheckpointError, match="not a readable safetensors"):
            load_packed(tmp_path / f"{name}.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "broken.safetensors", metadata={"robustq": "{oops"})
    with pytest.raises(CheckpointError, match="not JSON"):
        load_packed(tmp_path / "broken.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="without robustq's metadata.*--model MODULE:FACTORY"):
        load_packed(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_packed(tmp_path / "missing.safetensors")


def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from robustq.efficiency.export import export_onnx
    dense, meta = sparse_model(14, 2, "ternary", p=0.4, seed=9)
    pruned, _ = prune(dense, meta["arch"])
    diff = export_onnx(pruned, [3, 12, 12], tmp_path / "m.onnx")
    assert diff < 1e-4


def test_unrecoverable_weights_stay_float_and_binary_zeros_take_two_bits(tmp_path):
    dense, meta = sparse_model(8, 1, "binary", p=0.0, seed=2)
    with torch.no_grad():
        dense.members[0].blocks[0].conv1.weight[0, 0, 0, 0] = 0          # an isolated zero
        dense.members[0].blocks[1].conv2.weight.normal_()              # not a quantized tensor
    pruned, spec = prune(dense, meta["arch"])
    header = write_packed(tmp_path / "m.safetensors", pruned, spec, meta)
    assert header["packed"]["members.0.blocks.0.conv1.weight"]["bits"] == 2
    assert header["packed"]["members.0.blocks.1.conv1.weight"]["bits"] == 1
    assert "members.0.blocks.1.conv2.weight" not in header["packed"]
    loaded = robustq.load(tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), pruned.state_dict().values()))


def test_cli_sparsity_prune_export_and_eval_of_the_export(tmp_path, capsys):
    from robustq.cli import main
    from .efficiency_helpers import save_model_file
    dense, meta = sparse_model(8, 1, "4bit", p=0.3, seed=6, in_channels=1, size=28)
    path = save_model_file(dense, meta, tmp_path / "model.pt")
    assert main(["sparsity", str(path)]) == 0
    out = capsys.readouterr().out
    assert "channel sparsity" in out and "paper's arithmetic" in out
    report = json.loads((tmp_path / "model.sparsity.json").read_text())
    assert report["removable_channels"] > 0 and report["pruning"]["params_pruned"] < report["pruning"]["params"]
    assert (tmp_path / "model.sparsity.png").is_file() and (tmp_path / "model.channels.png").is_file()
    assert main(["prune", str(path)]) == 0 and (tmp_path / "model.pruned.safetensors").is_file()
    assert main(["export", str(path), "--out", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "packed at [4] bits" in out and "smaller" in out
    assert main(["eval", str(tmp_path / "m.safetensors"), "--quiet", "--set", "eval.n_eval=8",
                 "--set", "eval.attacks=[fgsm]"]) == 0
    r = json.loads((tmp_path / "m.results.json").read_text())
    assert r["model"] == "En1ResNet8" and r["params_pruned"] >= r["params"]    # + folded constants
    assert main(["export", str(tmp_path / "nothing.pt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
