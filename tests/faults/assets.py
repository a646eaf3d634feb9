"""What the fault cases damage: a tiny finished run, a run stopped after its first epoch,
the exported and pruned files of the run, and the bundled dataset. Built once per process
(a few seconds) in a cache folder, never modified; each case works on copies."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

TINY = {"name": "tiny", "data": {"train_size": 64, "val_size": 32}, "model": {"depth": 8},
        "quant": {"method": "bc"}, "adv": {"steps": 1},
        "train": {"epochs": 2, "batch_size": 32, "max_batches": 2, "val_attack_steps": 1,
                  "precision": "fp32"},
        "eval": {"n_eval": 8, "attacks": ["fgsm"], "batch_size": 8}}
QUIET = ["--quiet", "--device", "cpu"]


@dataclass(frozen=True)
class Assets:
    root: Path
    config: Path        # the tiny config (YAML)
    run: Path           # a finished run: config.yaml, metrics.csv, checkpoint.pt, model.pt
    run1: Path          # the same run as it was after epoch 1 of 2 (resumable)
    export: Path        # robustq export of the run (packed .safetensors)
    pruned: Path        # robustq prune of the run (float .safetensors)
    data: Path          # a copy of the bundled dataset's folder

    @property
    def model(self) -> Path:
        return self.run / "model.pt"


def _train(root: Path) -> tuple[Path, Path]:
    from robustq.checkpoint import atomic_write
    from robustq.config import load_config
    from robustq.engine import train

    cfg = load_config(root / "tiny.yaml")
    run, run1 = root / "run", root / "run1"
    run.mkdir()
    atomic_write(run / "config.yaml", cfg.to_yaml().encode())

    def keep_first(epoch: int) -> None:
        if epoch == 1:
            shutil.copytree(run, run1)

    train(cfg, run, torch.device("cpu"), progress=False, log=lambda *_: None, on_epoch_end=keep_first)
    return run, run1


@lru_cache(maxsize=1)
def assets() -> Assets:
    import yaml

    from robustq.data.datasets import BUNDLED_DIR
    from robustq.efficiency.pipeline import export_to_file, prune_to_file

    root = Path(tempfile.mkdtemp(prefix="robustq-faults-"))
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    with torch.random.fork_rng():
        run, run1 = _train(root)
    files = root / "files"
    files.mkdir()
    export = Path(export_to_file(run, files / "model.safetensors")["out"])
    pruned = Path(prune_to_file(run, files / "model.pruned.safetensors")["out"])
    data = root / "data"
    shutil.copytree(BUNDLED_DIR / "fashion-mnist-10k", data)
    return Assets(root, root / "tiny.yaml", run, run1, export, pruned, data)


def state_of(path: Path) -> dict:
    """What a model file means: its tensors and metadata as loaded (for "identical" checks)."""
    from robustq.evaluate import load_any_model
    model, meta = load_any_model(path)
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "meta": {k: v for k, v in meta.items() if k != "sha256"}}


def same_state(a: dict, b: dict) -> bool:
    return a["meta"] == b["meta"] and a["state"].keys() == b["state"].keys() and all(
        a["state"][k].dtype == b["state"][k].dtype and torch.equal(a["state"][k], b["state"][k])
        for k in a["state"])
