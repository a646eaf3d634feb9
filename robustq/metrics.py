"""The per-epoch record of a run: ``metrics.csv`` (one row per epoch) and what results.json
says about the training, read back from it."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .checkpoint import atomic_write

METRIC_FIELDS = ["epoch", "phase", "lam", "lr", "train_loss", "train_acc", "train_adv_acc",
                 "val_acc", "val_robust_acc", "val_fgsm_acc", "co", "img_per_s", "seconds",
                 "selected"]


def epoch_row(epoch: int, s, lam, lr: float, c: list, step, val: dict, seconds: float) -> dict:
    """One metrics.csv row from the epoch's (rank-summed) sums ``c``."""
    return {"epoch": epoch + 1, "phase": s.relax.phase(epoch),
            "lam": "" if lam is None else f"{lam:.6g}", "lr": f"{lr:.6g}",
            "train_loss": f"{c[0] / c[3]:.5f}",
            "train_acc": f"{c[1] / c[3]:.5f}" if step.needs_clean else "",
            "train_adv_acc": f"{c[2] / c[3]:.5f}" if step.attack is not None else "",
            "val_acc": f"{val['val_acc']:.5f}", "val_robust_acc": f"{val['val_robust_acc']:.5f}",
            "val_fgsm_acc": f"{val['val_fgsm_acc']:.5f}",
            "img_per_s": f"{c[3] * step.replay / seconds:.2f}", "seconds": f"{seconds:.2f}"}


def training_summary(run_dir: Path) -> dict:
    """What the training of ``run_dir`` did, from its metrics.csv: epochs run, the epoch in
    model.pt, and the epochs flagged as catastrophic overfitting (for results.json)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    flagged = [int(r["epoch"]) for r in rows if r.get("co") == "1"]
    chosen = [int(r["epoch"]) for r in rows if r.get("selected") == "1"]
    return {"epochs_run": len(rows), "selected_epoch": chosen[-1] if chosen else None,
            "catastrophic_overfitting": bool(flagged), "co_epochs": flagged}


def write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue().encode())
