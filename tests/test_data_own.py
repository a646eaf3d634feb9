"""Datasets of your own: ImageFolder-style PNG/JPEG folders and .npz files, through the same
verification, splits and errors as the built-in ones, and trainable from the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustq.cli import main
from robustq.config import load_config
from robustq.data import load_dataset
from robustq.errors import ConfigError, DataError
from tests.test_engine import TINY

PIL = pytest.importorskip("PIL.Image")


def write_images(folder, per_class=6, size=12, mode="RGB", classes=("cat", "dog"), ext=".png"):
    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            PIL.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / c / f"{i}{ext}")


def test_folder_with_train_and_test(tmp_path):
    write_images(tmp_path / "train", per_class=5)
    write_images(tmp_path / "test", per_class=2, ext=".jpg")
    train, test, spec = load_dataset(f"folder:{tmp_path}")
    assert train.images.shape == (10, 3, 12, 12) and train.images.dtype == torch.uint8
    assert test.images.shape == (4, 3, 12, 12) and spec.classes == ("cat", "dog")
    assert train.labels.tolist() == [0] * 5 + [1] * 5 and spec.num_classes == 2
    first = np.array(PIL.open(tmp_path / "train" / "cat" / "0.png"))
    assert torch.equal(train.images[0], torch.from_numpy(first).permute(2, 0, 1))  # pixels kept


def test_one_folder_of_classes_holds_out_a_fixed_stratified_test_split(tmp_path):
    write_images(tmp_path, per_class=12, mode="L")
    train, test, spec = load_dataset(f"folder:{tmp_path}")
    assert spec.channels == 1 and len(train) + len(test) == 24 and len(test) == 4
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1]
    again = load_dataset(f"folder:{tmp_path}")[1]
    assert torch.equal(again.images, test.images)  # the same test split for every run


@pytest.mark.parametrize("make,message", [
    (lambda d: write_images(d, size=12) or PIL.fromarray(np.zeros((12, 16, 3), np.uint8)).save(d / "cat" / "wide.png"),
     "must be square"),
    (lambda d: write_images(d, size=12) or PIL.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "dog" / "big.png"),
     "all images must have one size"),
    (lambda d: write_images(d) or (d / "empty").mkdir(), "holds no PNG or JPEG"),
    (lambda d: write_images(d) or (d / "cat" / "bad.png").write_bytes(b"not an image"), "not a readable"),
    (lambda d: (d / "train").mkdir(), "no test/ folder"),
    (lambda d: None, "holds no class subfolders"),
])
def test_folder_errors_are_one_sentence(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message) as e:
        load_dataset(f"folder:{tmp_path}")
    assert "\n" not in str(e.value)


def test_npz_in_every_layout(tmp_path):
    rng = np.random.default_rng(1)
    for layout, shape in [("nhw", (20, 10, 10)), ("nhwc", (20, 10, 10, 3)), ("nchw", (20, 3, 10, 10))]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        path = tmp_path / f"{layout}.npz"
        np.savez(path, x_train=x, y_train=np.arange(20) % 4, x_test=x[:8], y_test=np.arange(8) % 4)
        train, test, spec = load_dataset(f"npz:{path}")
        c = 1 if layout == "nhw" else 3
        assert train.images.shape == (20, c, 10, 10) and len(test) == 8 and spec.num_classes == 4
        if layout == "nhwc":
            assert torch.equal(train.images[3, :, 2, 5], torch.from_numpy(x[3, 2, 5]))


@pytest.mark.parametrize("arrays,message", [
    ({"x_train": np.zeros((4, 8, 8), np.float32)}, "must be uint8"),
    ({"x_train": np.zeros((4, 8, 9), np.uint8)}, "must be square"),
    ({"y_test": np.array([0, 9])}, "labels span"),
    ({"y_train": np.zeros((4, 2), np.int64)}, "1-D array of integer labels"),
])
def test_npz_errors(tmp_path, arrays, message):
    base = {"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 0, 1]),
            "x_test": np.zeros((2, 8, 8), np.uint8), "y_test": np.array([0, 1])}
    np.savez(tmp_path / "d.npz", **{**base, **arrays})
    with pytest.raises(DataError, match=message):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    np.savez(tmp_path / "e.npz", x_train=base["x_train"])
    with pytest.raises(DataError, match="lacks y_train, x_test, y_test"):
        load_dataset(f"npz:{tmp_path / 'e.npz'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")


def test_config_accepts_own_kinds_and_refuses_others():
    assert load_config(None, ["data.name=folder:/x"]).data.name == "folder:/x"
    with pytest.raises(ConfigError, match="folder:PATH"):
        load_config(None, ["data.name=imagenet"])


def test_train_and_evaluate_on_a_folder_from_the_cli(tmp_path, capsys):
    write_images(tmp_path / "imgs" / "train", per_class=40, size=16)
    write_images(tmp_path / "imgs" / "test", per_class=8, size=16)
    out = tmp_path / "run"
    args = [a for t in TINY for a in ("--set", t)]
    assert main(["train", "quickstart", "--set", f"data.name=folder:{tmp_path / 'imgs'}",
                 "--out", str(out), "--quiet", "--threads", "1", *args,
                 "--set", "train.epochs=1", "--set", "data.val_size=16"]) == 0
    import json
    r = json.loads((out / "results.json").read_text())
    assert r["dataset"] == f"folder:{tmp_path / 'imgs'}" and r["n_eval"] == 16
    assert main(["eval", str(out / "model.pt"), "--quiet", "--set", "eval.n_eval=8",
                 "--set", "eval.attacks=[fgsm]"]) == 0  # a model file finds its data again
