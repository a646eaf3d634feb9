"""The training engine: one readable loop, checkpoint every epoch, exact resume.

A run directory holds ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch),
``checkpoint.pt`` (the complete training state after the last finished epoch, for
``--resume``), ``model.pt`` (the selected model: quantized weights baked in as exactly Q(w))
and, after evaluation, ``results.json``.

Model selection: after every epoch the model is validated on a held-out split of the
TRAINING data (never the test set) with its weights projected to exactly Q(w); only epochs
whose training weights were already exactly Q(w) (the Binary-Connect phase) are candidates,
so a relaxed BR state is never selected. The candidate with the highest validation robust
accuracy (PGD) wins; clean validation accuracy breaks ties.
"""
from __future__ import annotations

import copy
import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from . import __version__
from .attacks import make_attack
from .build import Arch, build_model
from .checkpoint import CHECKPOINT_FORMAT, FORMAT_VERSION, MODEL_FORMAT, atomic_write, load, save
from .config import RunConfig
from .errors import ConfigError
from .data import Batches, ImageData, load_dataset, stratified_split
from .evaluate import robust_accuracy
from .losses import OBJECTIVES
from .progress import Progress
from .quant import RelaxSchedule, bake, set_relaxation
from .quant.projections import canonical_name
from .runtime import autocast, resolve_precision, rng_state, seed_everything, set_rng_state

METRIC_FIELDS = ["epoch", "phase", "lam", "lr", "train_loss", "train_acc", "train_adv_acc",
                 "val_acc", "val_robust_acc", "img_per_s", "seconds", "selected"]


@dataclass
class Setup:
    """Everything a run is made of, built from the config."""
    cfg: RunConfig
    arch: Arch
    model: nn.Module
    bit_map: dict
    train: ImageData
    val: ImageData
    test: ImageData
    spec: object
    relax: RelaxSchedule


def val_count(val_size: float, n: int) -> int:
    return int(val_size) if val_size >= 1 else int(round(val_size * n))


def setup(cfg: RunConfig) -> Setup:
    train_full, test, spec = load_dataset(cfg.data.name, cfg.data.root)
    n_val = val_count(cfg.data.val_size, len(train_full))
    if n_val >= len(train_full):
        raise ConfigError(f"data.val_size {cfg.data.val_size} would hold out all {len(train_full)} "
                          f"training images; use a fraction below 1 or a smaller count")
    tr_idx, val_idx = stratified_split(train_full.labels, n_val, cfg.seed)
    if cfg.data.train_size is not None and cfg.data.train_size < len(tr_idx):
        # a stratified subset of what is left: the held-out part of a second split
        _, keep = stratified_split(train_full.labels[tr_idx], cfg.data.train_size, cfg.seed + 1)
        tr_idx = tr_idx[keep]
    arch = Arch(cfg.model.depth, cfg.model.ensemble, cfg.model.noise, spec.channels,
                spec.num_classes, spec.size)
    seed_everything(cfg.seed)  # the same seed gives the same initial weights
    model, bits = build_model(arch, cfg.quant.scheme, cfg.quant.policy)
    relax = RelaxSchedule.for_epochs(cfg.quant.method, cfg.train.epochs, cfg.quant.lambda0,
                                     cfg.quant.rho, cfg.quant.cutoff)
    return Setup(cfg, arch, model, bits, train_full.subset(tr_idx), train_full.subset(val_idx),
                 test, spec, relax)


def make_optimizer(model: nn.Module, cfg: RunConfig):
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    # fractions of the run (paper: 80/120/160 of 200); milestones that round to the same
    # epoch in a short run stack, so the run still ends at lr * gamma^3 as the paper's does
    milestones = [max(1, round(f * t.epochs)) for f in t.milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=t.lr_gamma)
    return opt, sched


def validate(model: nn.Module, s: Setup, device, precision: str, channels_last: bool, epoch: int) -> dict:
    """Clean and PGD accuracy of the truly quantized model (u = Q(w)) on the validation split."""
    if len(s.val) == 0:
        return {"val_acc": math.nan, "val_robust_acc": math.nan}
    a = s.cfg.adv
    pgd = make_attack("pgd", eps=a.eps, alpha=a.step, steps=s.cfg.train.val_attack_steps)
    lam = next((m.lam for m in model.modules() if hasattr(m, "lam")), None)
    set_relaxation(model, None)   # evaluate exactly Q(w), whatever the phase
    # a separate, fixed random stream: validation never perturbs the training stream
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(s.cfg.seed * 1000 + epoch)
        masks = robust_accuracy(model, s.val, {"val_acc": None, "val_robust_acc": pgd},
                                batch_size=256, device=device, precision=precision,
                                channels_last=channels_last)
    set_relaxation(model, lam)
    return {k: float(v.float().mean()) for k, v in masks.items()}


def model_file(model: nn.Module, s: Setup, epoch: int, val: dict) -> dict:
    """The selectable artifact: a float network whose quantized layers hold exactly Q(w)."""
    baked = bake(copy.deepcopy(model)).to(device="cpu", memory_format=torch.contiguous_format)
    return {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
            "state_dict": {k: v.contiguous() for k, v in baked.state_dict().items()},
            "meta": {"arch": s.arch.to_dict(), "quant": canonical_name(s.cfg.quant.scheme),
                     "method": s.cfg.quant.method, "policy": s.cfg.quant.policy,
                     "bit_map": s.bit_map, "epoch": epoch, "val": val, "dataset": s.cfg.data.name}}


def write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue().encode())


class TrainStep:
    """One optimisation step of the configured objective: make x_adv, forward, backward, step.

    Shared by the engine and the training benchmark, so the benchmark times this code."""

    def __init__(self, cfg: RunConfig, model: nn.Module, device: torch.device, precision: str) -> None:
        a = cfg.adv
        self.objective = OBJECTIVES.get(cfg.loss.name)
        self.params = {k: getattr(cfg.loss, k) for k in self.objective.params}
        self.attack = None if self.objective.attack is None else make_attack(
            self.objective.attack, eps=a.eps, alpha=a.step, steps=a.steps, model_mode=a.bn_mode)
        self.needs_clean = self.objective.needs_clean(**self.params)
        self.opt, self.sched = make_optimizer(model, cfg)
        self.device, self.precision = device, precision

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Returns ``(loss, clean logits or None, adversarial logits or None)``, detached."""
        with autocast(self.precision, self.device):
            # the attack runs on the u weights with noise on; BN mode per adv.bn_mode
            # (the reference: train mode, so attack forwards also update BN statistics)
            x_adv = self.attack(model, x, y) if self.attack is not None else None
            logits = model(x) if self.needs_clean else None
            logits_adv = model(x_adv) if x_adv is not None else None
            out = self.objective.fn(logits, logits_adv, y, **self.params)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()  # gradients w.r.t. u land on w (straight-through)
        self.opt.step()         # w changed: the next forward re-projects u
        detach = lambda t: None if t is None else t.detach()
        return out["loss"].detach(), detach(logits), detach(logits_adv)


def train(cfg: RunConfig, run_dir: Path, device: torch.device, *, resume: bool = False,
          log: Callable[[str], None] = print, progress: bool = True,
          on_epoch_end: Optional[Callable[[int], None]] = None,
          prepared: Optional[Setup] = None) -> Setup:
    """Train ``cfg`` into ``run_dir`` (resuming from its checkpoint if ``resume``).

    ``prepared`` is the ``setup(cfg)`` already built (it reads the data); ``on_epoch_end``
    is called with the number of finished epochs after each checkpoint."""
    s, t = prepared or setup(cfg), cfg.train
    model = s.model.to(device)
    precision = resolve_precision(t.precision, device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step = TrainStep(cfg, model, device, precision)
    opt, sched = step.opt, step.sched
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = Batches(s.train, t.batch_size, shuffle=True, pad=s.spec.pad, flip=s.spec.flip,
                      augment_data=cfg.data.augment, generator=gen, device=device,
                      channels_last=t.channels_last)
    start, rows, best = 0, [], {"epoch": None, "key": None}
    if resume:
        ck = load(run_dir / "checkpoint.pt", CHECKPOINT_FORMAT)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["rng"]["data"])
        set_rng_state(ck["rng"], device)
        start, rows, best = ck["epoch"], ck["metrics"], ck["best"]
        log(f"resuming {run_dir} after epoch {start}")
    else:
        seed_everything(cfg.seed)
    log(f"training {s.arch.name} ({cfg.quant.scheme}, {cfg.quant.method}) with loss "
        f"{cfg.loss.name} {step.params} on {cfg.data.name}: {len(s.train)} train / {len(s.val)} val "
        f"images, {t.epochs} epochs, device {device}, precision {precision}"
        f"{', channels_last' if t.channels_last else ''}")
    for epoch in range(start, t.epochs):
        lam = s.relax.lam(epoch)
        set_relaxation(model, lam)  # BR: u = (lam Q(w) + w)/(lam + 1); None: BC, u = Q(w)
        model.train()
        n_batches = len(batches) if t.max_batches is None else min(len(batches), t.max_batches)
        bar = Progress(n_batches, f"epoch {epoch + 1}/{t.epochs} {s.relax.phase(epoch)}", enabled=progress)
        stats = torch.zeros(4, device=device)  # loss sum, clean correct, adv correct, images
        started = time.perf_counter()
        for i, (x, y) in enumerate(batches):
            if i == n_batches:
                break
            loss, logits, logits_adv = step(model, x, y)
            with torch.no_grad():   # running sums stay on the device: no sync per batch
                stats[0] += loss.float() * len(y)
                if logits is not None:
                    stats[1] += (logits.argmax(1) == y).sum()
                if logits_adv is not None:
                    stats[2] += (logits_adv.argmax(1) == y).sum()
                stats[3] += len(y)
            acc_slot = 1 if logits is not None else 2
            bar.update(len(y), lambda: {"loss": float(stats[0] / stats[3]),
                                        "acc": float(stats[acc_slot] / stats[3])})
        seconds = time.perf_counter() - started
        lr = opt.param_groups[0]["lr"]
        sched.step()  # the LR schedule and lambda both advance once per epoch, after it
        val = validate(model, s, device, precision, t.channels_last, epoch)
        # candidates: states whose training weights were exactly Q(w) (or float training);
        # if the whole run was relaxed, the final Q(w) is taken rather than nothing
        candidate = s.relax.method == "none" or s.relax.is_quantized(epoch) or (
            epoch == t.epochs - 1 and best["epoch"] is None)
        key = [val["val_robust_acc"], val["val_acc"]]
        selected = candidate and (best["key"] is None or key > best["key"])
        if selected:
            best = {"epoch": epoch + 1, "key": key}
            save(model_file(model, s, epoch + 1, val), run_dir / "model.pt")
        c = stats.tolist()
        rows.append({"epoch": epoch + 1, "phase": s.relax.phase(epoch),
                     "lam": "" if lam is None else f"{lam:.6g}", "lr": f"{lr:.6g}",
                     "train_loss": f"{c[0] / c[3]:.5f}",
                     "train_acc": f"{c[1] / c[3]:.5f}" if step.needs_clean else "",
                     "train_adv_acc": f"{c[2] / c[3]:.5f}" if step.attack is not None else "",
                     "val_acc": f"{val['val_acc']:.5f}", "val_robust_acc": f"{val['val_robust_acc']:.5f}",
                     "img_per_s": f"{c[3] / seconds:.2f}", "seconds": f"{seconds:.2f}",
                     "selected": int(selected)})
        bar.close(val_acc=val["val_acc"], val_rob=val["val_robust_acc"])
        write_metrics(run_dir / "metrics.csv", rows)
        save({"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
              "epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict(), "rng": {**rng_state(device), "data": gen.get_state()},
              "best": best, "metrics": rows, "config": cfg.to_dict()}, run_dir / "checkpoint.pt")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    log(f"selected epoch {best['epoch']} (validation robust accuracy {best['key'][0]:.4f})"
        if best["key"] else "no epoch was selected")
    return s
