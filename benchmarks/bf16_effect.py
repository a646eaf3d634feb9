"""What bf16 autocast does to a quantized robustq model (``train.precision: bf16``).

    python benchmarks/bf16_effect.py RUN_DIR [--n 1000]

For the model in ``RUN_DIR/model.pt`` (weights exactly Q(w) = s * codes):

* the grid: Q(w) rounded to bf16, divided by the layer's scale s, is no longer an integer
  code everywhere: the fraction of off-grid weights and the largest distance to the grid;
* the outputs: clean accuracy (noise off: deterministic, so the two precisions differ only by
  rounding) and PGD-10 accuracy (noise off, eps 8/255, step 2/255, the same random start in
  both) on the first ``--n`` test images in fp32 and under bf16 autocast, the fraction of
  test images whose prediction changes, and the largest logit difference.

That is the evaluation-side effect; a bf16 TRAINING run differs further (every step's
gradients are rounded too) and is not measured here.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from robustq.attacks import make_attack
from robustq.config import load_config
from robustq.data import load_dataset
from robustq.build import load_any_model
from robustq.models import set_noise


def grid_error(model) -> dict:
    off, total, worst = 0, 0, 0.0
    for name, p in model.state_dict().items():
        if not name.endswith("weight") or p.dim() != 4 or p.shape[-1] != 3:
            continue
        nz = p[p != 0].abs()
        if nz.numel() == 0:
            continue
        s = nz.min()                       # 4-bit levels are s * {1..7}: the smallest is s
        codes = p.to(torch.bfloat16).float() / s
        dist = (codes - codes.round()).abs()
        off += int((dist > 1e-4).sum())
        total += p.numel()
        worst = max(worst, float(dist.max()))
    return {"off_grid_fraction": off / max(total, 1), "max_distance_in_levels": worst}


def outputs(model, x, y, bf16: bool) -> tuple[torch.Tensor, float, float]:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with ctx:
        with torch.no_grad():
            logits = model(x).float()
        torch.manual_seed(0)
        x_adv = torch.cat([make_attack("pgd", eps="8/255", alpha="2/255", steps=10)(model, x[i:i + 250], y[i:i + 250])
                           for i in range(0, len(x), 250)])
        with torch.no_grad():
            rob = float((model(x_adv).argmax(1) == y).float().mean())
    return logits, float((logits.argmax(1) == y).float().mean()), rob


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=1000)
    args = p.parse_args()
    d = Path(args.run_dir)
    cfg = load_config(d / "config.yaml")
    model, _ = load_any_model(d / "model.pt", "cpu")
    set_noise(model, False)
    _, test, _ = load_dataset(cfg.data.name, cfg.data.root)
    x, y = test.images[:args.n].float() / 255, test.labels[:args.n]
    z32, clean32, rob32 = outputs(model.eval(), x, y, False)
    z16, clean16, rob16 = outputs(model.eval(), x, y, True)
    report = {"model": str(d / "model.pt"), "n": len(y), **grid_error(model),
              "clean_fp32": clean32, "clean_bf16": clean16, "pgd10_fp32": rob32, "pgd10_bf16": rob16,
              "prediction_changed": float((z32.argmax(1) != z16.argmax(1)).float().mean()),
              "max_logit_diff": float((z32 - z16).abs().max())}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
