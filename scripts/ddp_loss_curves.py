"""Loss curves of a DDP run against a single process with the same GLOBAL batch.

    python scripts/ddp_loss_curves.py --out curves/ --batch 128 --ranks 2 \\
        --config configs/quickstart.yaml --set train.epochs=10

trains the config twice: once as one process with ``train.batch_size = batch`` and once under
``torchrun --nproc_per_node ranks`` with ``train.batch_size = batch / ranks`` per rank (the
same global batch, learning rate and number of optimizer steps), then writes, per epoch, both
runs' training loss, training adversarial accuracy and validation robust accuracy side by
side to ``OUT/loss_curves.csv`` and ``OUT/loss_curves.png`` (needs matplotlib). The two runs
see the same data in a different order and different random streams, so the curves agree
within run-to-run noise, not bit for bit (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

COLUMNS = ["train_loss", "train_adv_acc", "val_robust_acc"]


def run(cmd: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env)


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the two runs, the CSV and the PNG")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"))
    ap.add_argument("--batch", type=int, default=128, help="global batch (both runs)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if args.batch % args.ranks:
        sys.exit(f"--batch {args.batch} must be a multiple of --ranks {args.ranks}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = [a for s in args.overrides for a in ("--set", s)]
    common = ["train", args.config, "--quiet", "--no-eval", *sets]
    one, ddp = out / "one_process", out / f"ddp_{args.ranks}"
    if not (one / "metrics.csv").exists():
        run([sys.executable, "-m", "robustq", *common, "--out", str(one),
             "--set", f"train.batch_size={args.batch}"], threads=args.ranks)
    if not (ddp / "metrics.csv").exists():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks),
             "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "robustq", *common,
             "--out", str(ddp), "--set", f"train.batch_size={args.batch // args.ranks}"], threads=1)
    a, b = metrics(one), metrics(ddp)
    rows = [{"epoch": ra["epoch"], **{f"{c}_1proc": ra[c] for c in COLUMNS},
             **{f"{c}_ddp{args.ranks}": rb[c] for c in COLUMNS}} for ra, rb in zip(a, b)]
    with open(out / "loss_curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out / 'loss_curves.csv'}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install robustq[plot]): no PNG")
        return
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.2))
    epochs = [int(r["epoch"]) for r in rows]
    for ax, c in zip(axes, COLUMNS):
        for suffix, label in (("1proc", f"1 process, batch {args.batch}"),
                              (f"ddp{args.ranks}", f"{args.ranks} ranks x {args.batch // args.ranks}")):
            ax.plot(epochs, [float(r[f"{c}_{suffix}"] or "nan") for r in rows], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(c)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    print(f"wrote {out / 'loss_curves.png'}")


if __name__ == "__main__":
    main()
