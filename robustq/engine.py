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
from .attacks.free import FreeReplay
from .attacks.training import training_attack
from .build import Arch, build_model
from .checkpoint import (CHECKPOINT_FORMAT, FORMAT_VERSION, MODEL_FORMAT, atomic_write, load,
                         remove_stale_tmp, save)
from .config import RunConfig
from .errors import CheckpointError, ConfigError
from .integrity import check_checkpoint
from .data import Batches, ImageData, load_dataset, stratified_split, to_pixels
from .guard import overfitting
from .losses import OBJECTIVES
from .progress import Progress
from .quant import RelaxSchedule, bake, set_relaxation
from .quant.projections import canonical_name
from .runtime import autocast, resolve_precision, rng_state, seed_everything, set_rng_state
from .schedule import make_scheduler

METRIC_FIELDS = ["epoch", "phase", "lam", "lr", "train_loss", "train_acc", "train_adv_acc",
                 "val_acc", "val_robust_acc", "val_fgsm_acc", "co", "img_per_s", "seconds",
                 "selected"]


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
    train_full, test, spec = load_dataset(cfg.data.name, cfg.data.root, check=cfg.data.verify)
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


def make_optimizer(model: nn.Module, cfg: RunConfig, steps_per_epoch: int = 1):
    """SGD and its LR schedule (``schedule.py``), stepped after every optimizer step."""
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return opt, make_scheduler(opt, t, steps_per_epoch)


def batches_per_epoch(n_batches: int, cfg: RunConfig) -> int:
    """Minibatches drawn per epoch: free AT replays each m times, so it draws 1/m of them
    (the same number of optimizer steps as any other method's epoch)."""
    n = n_batches if cfg.train.max_batches is None else min(n_batches, cfg.train.max_batches)
    return -(-n // cfg.adv.replay) if cfg.adv.attack == "free" and cfg.loss.name in ("at", "tradeoff") else n


def validate(model: nn.Module, s: Setup, device, precision: str, channels_last: bool, epoch: int,
             progress: bool = False) -> dict:
    """Clean, PGD and FGSM accuracy of the truly quantized model (u = Q(w)) on the validation
    split, by the evaluation engine (robust: correct on the clean image and under the attack;
    FGSM next to PGD is what reveals catastrophic overfitting, ``guard.py``)."""
    from .robustness import run_attacks
    if len(s.val) == 0:
        return {"val_acc": math.nan, "val_robust_acc": math.nan, "val_fgsm_acc": math.nan}
    a = s.cfg.adv
    pgd = make_attack("pgd", eps=a.eps, alpha=a.step, steps=s.cfg.train.val_attack_steps)
    fgsm = make_attack("fgsm", eps=a.eps)
    lam = next((m.lam for m in model.modules() if hasattr(m, "lam")), None)
    set_relaxation(model, None)   # evaluate exactly Q(w), whatever the phase
    was_training = model.training
    model.eval()
    x, y = to_pixels(s.val.images, device, channels_last), s.val.labels.to(device)
    # a separate, fixed random stream: validation never perturbs the training stream
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            autocast(precision, device):
        out = run_attacks(model, x, y, {"pgd": pgd, "fgsm": fgsm}, draws=1, batch_size=256,
                          seed=s.cfg.seed * 1000 + epoch, log=lambda _: None, progress=progress,
                          desc="validation")
    model.train(was_training)
    set_relaxation(model, lam)
    acc = {k: float(v.double().mean()) for k, v in out.correct.items()}
    return {"val_acc": acc["natural"], "val_robust_acc": acc["pgd"], "val_fgsm_acc": acc["fgsm"]}


def model_file(model: nn.Module, s: Setup, epoch: int, val: dict, provisional: bool = False) -> dict:
    """The selectable artifact: a float network whose quantized layers hold exactly Q(w)."""
    baked = bake(copy.deepcopy(model)).to(device="cpu", memory_format=torch.contiguous_format)
    return {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
            "state_dict": {k: v.contiguous() for k, v in baked.state_dict().items()},
            "meta": {"arch": s.arch.to_dict(), "quant": canonical_name(s.cfg.quant.scheme),
                     "method": s.cfg.quant.method, "policy": s.cfg.quant.policy,
                     "bit_map": s.bit_map, "epoch": epoch, "val": val, "dataset": s.cfg.data.name,
                     "provisional": provisional}}


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


class TrainStep:
    """One optimisation step of the configured objective: make x_adv, forward, backward, step.

    Free AT (``adv.attack: free``) makes one call m replays of the minibatch, each one
    forward-backward that steps the weights and moves the persistent perturbation.
    Shared by the engine and the training benchmark, so the benchmark times this code."""

    def __init__(self, cfg: RunConfig, model: nn.Module, device: torch.device, precision: str,
                 steps_per_epoch: int = 1) -> None:
        self.objective = OBJECTIVES.get(cfg.loss.name)
        self.params = {k: getattr(cfg.loss, k) for k in self.objective.params}
        self.attack = training_attack(cfg, self.objective.attack)
        self.replay = cfg.adv.replay if isinstance(self.attack, FreeReplay) else 1
        self.needs_clean = self.objective.needs_clean(**self.params)
        self.opt, self.sched = make_optimizer(model, cfg, steps_per_epoch)
        self.device, self.precision = device, precision

    def _update(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()         # gradients w.r.t. u land on w (straight-through)
        self.opt.step()         # w changed: the next forward re-projects u
        self.sched.step()       # the LR schedule is defined per optimizer step

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Returns ``(loss, clean logits or None, adversarial logits or None)``, detached."""
        if isinstance(self.attack, FreeReplay):
            return self._free(model, x, y)
        with autocast(self.precision, self.device):
            # the attack runs on the u weights with noise on; PGD and the single-step attacks
            # in adv.bn_mode (the reference: train mode, so their forwards update BN
            # statistics), TRADES' KL attack in eval mode (eq. 7)
            x_adv = self.attack(model, x, y) if self.attack is not None else None
            logits = model(x) if self.needs_clean else None
            logits_adv = model(x_adv) if x_adv is not None else None
            out = self.objective.fn(logits, logits_adv, y, **self.params)
        self._update(out["loss"])
        detach = lambda t: None if t is None else t.detach()
        return out["loss"].detach(), detach(logits), detach(logits_adv)

    def _free(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        for _ in range(self.replay):
            with autocast(self.precision, self.device):
                x_in = self.attack.inputs(x)   # x + delta, a leaf: backward gives its gradient
                logits = model(x) if self.needs_clean else None
                logits_adv = model(x_in)
                out = self.objective.fn(logits, logits_adv, y, **self.params)
            self._update(out["loss"])          # ONE backward: weight step and ...
            self.attack.ascend(x, x_in)        # ... the perturbation's ascent step
        return (out["loss"].detach(), None if logits is None else logits.detach(),
                logits_adv.detach())


def _select(s: Setup, epoch: int, co: Optional[str], best: dict, key: list) -> tuple[bool, bool]:
    """``(selected, provisional)`` for a finished epoch. Candidates are states whose
    training weights were exactly Q(w) (or float training) and that did not overfit
    catastrophically; the best by ``key`` wins. While no candidate exists, each healthy
    epoch's Q(w) is kept as a provisional model.pt, so a run stopped early, or relaxed to the
    end, still leaves its last good model (the last epoch's, if healthy, is then selected)."""
    if co is not None:
        return False, False
    waiting = best["epoch"] is None or bool(best.get("provisional"))
    last = epoch == s.cfg.train.epochs - 1
    candidate = s.relax.method == "none" or s.relax.is_quantized(epoch) or (last and waiting)
    if candidate and (waiting or key > best["key"]):
        return True, False
    return False, not candidate and waiting


def _restore(path: Path, cfg: RunConfig, step: "TrainStep", steps_per_epoch: int,
             gen: torch.Generator, device: torch.device, model: nn.Module) -> tuple[int, list, dict, dict]:
    """Load and check the checkpoint at ``path`` into the training state; returns ``(epochs
    done, metric rows, best, the checkpoint)``. Everything is checked before the first state
    is touched."""
    ck = load(path, CHECKPOINT_FORMAT)
    check_checkpoint(ck, path, cfg.train.epochs, steps_per_epoch)
    try:
        model.load_state_dict(ck["model"])
        step.opt.load_state_dict(ck["optimizer"])
        step.sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["rng"]["data"])
        set_rng_state(ck["rng"], device)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path} does not match the run's model or optimizer "
                              f"({str(e).splitlines()[0][:100] if str(e) else type(e).__name__}); "
                              f"it belongs to another run or is corrupt") from None
    return ck["epoch"], ck["metrics"], ck["best"], ck


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
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = Batches(s.train, t.batch_size, shuffle=True, pad=s.spec.pad, flip=s.spec.flip,
                      augment_data=cfg.data.augment, generator=gen, device=device,
                      channels_last=t.channels_last)
    n_batches = batches_per_epoch(len(batches), cfg)
    steps_per_epoch = n_batches * cfg.adv.replay if cfg.adv.attack == "free" else n_batches
    step = TrainStep(cfg, model, device, precision, steps_per_epoch=steps_per_epoch)
    opt, sched = step.opt, step.sched
    start, rows, best = 0, [], {"epoch": None, "key": None}
    remove_stale_tmp(run_dir)  # half-written files of a killed run; the real ones are intact
    if resume:
        start, rows, best, ck = _restore(run_dir / "checkpoint.pt", cfg, step, steps_per_epoch,
                                         gen, device, model)
        if isinstance(step.attack, FreeReplay):  # free AT's perturbation carries over epochs
            step.attack.delta = ck.get("free_delta")
        log(f"resuming {run_dir} after epoch {start}")
    else:
        seed_everything(cfg.seed)
    log(f"training {s.arch.name} ({cfg.quant.scheme}, {cfg.quant.method}) with loss "
        f"{cfg.loss.name} {step.params} on {cfg.data.name}: {len(s.train)} train / {len(s.val)} val "
        f"images, {t.epochs} epochs, device {device}, precision {precision}"
        f"{', channels_last' if t.channels_last else ''}")
    if resume and ck.get("stopped"):
        log(f"this run stopped after epoch {start}: {ck['stopped']}; nothing left to train")
        return s
    for epoch in range(start, t.epochs):
        lam = s.relax.lam(epoch)
        set_relaxation(model, lam)  # BR: u = (lam Q(w) + w)/(lam + 1); None: BC, u = Q(w)
        model.train()
        bar = Progress(n_batches, f"epoch {epoch + 1}/{t.epochs} {s.relax.phase(epoch)}", enabled=progress)
        stats = torch.zeros(4, device=device)  # loss sum, clean correct, adv correct, images
        lr = opt.param_groups[0]["lr"]         # the rate of the epoch's first step
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
            bar.update(len(y) * step.replay, lambda: {"loss": float(stats[0] / stats[3]),
                                                      "acc": float(stats[acc_slot] / stats[3])})
        seconds = time.perf_counter() - started
        val = validate(model, s, device, precision, t.channels_last, epoch, progress)
        c = stats.tolist()
        row = {"epoch": epoch + 1, "phase": s.relax.phase(epoch),
               "lam": "" if lam is None else f"{lam:.6g}", "lr": f"{lr:.6g}",
               "train_loss": f"{c[0] / c[3]:.5f}",
               "train_acc": f"{c[1] / c[3]:.5f}" if step.needs_clean else "",
               "train_adv_acc": f"{c[2] / c[3]:.5f}" if step.attack is not None else "",
               "val_acc": f"{val['val_acc']:.5f}", "val_robust_acc": f"{val['val_robust_acc']:.5f}",
               "val_fgsm_acc": f"{val['val_fgsm_acc']:.5f}",
               "img_per_s": f"{c[3] * step.replay / seconds:.2f}", "seconds": f"{seconds:.2f}"}
        co = None if t.co_guard == "off" else overfitting(rows + [row], t.co_drop, t.co_gap)
        key = [val["val_robust_acc"], val["val_acc"]]
        selected, provisional = _select(s, epoch, co, best, key)
        if selected or provisional:
            best = {"epoch": epoch + 1, "key": key, "provisional": provisional}
            save(model_file(model, s, epoch + 1, val, provisional), run_dir / "model.pt")
        rows.append({**row, "co": int(co is not None), "selected": int(selected)})
        bar.close(val_acc=val["val_acc"], val_rob=val["val_robust_acc"])
        stopped = None
        if co is not None:
            kept = f"model.pt stays epoch {best['epoch']}" if best["epoch"] else "no model.pt yet"
            log(f"catastrophic overfitting at epoch {epoch + 1}: {co}; {kept}"
                + ("; stopping (train.co_guard: stop)" if t.co_guard == "stop" else ""))
            if t.co_guard == "stop":
                stopped = f"catastrophic overfitting at epoch {epoch + 1}: {co}"
        write_metrics(run_dir / "metrics.csv", rows)
        save({"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
              "epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict(), "rng": {**rng_state(device), "data": gen.get_state()},
              "best": best, "metrics": rows, "config": cfg.to_dict(), "stopped": stopped,
              "free_delta": getattr(step.attack, "delta", None)},
             run_dir / "checkpoint.pt")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
        if stopped:
            break
    what = "kept the last good epoch" if best.get("provisional") else "selected epoch"
    log(f"{what} {best['epoch']} (validation robust accuracy {best['key'][0]:.4f})"
        if best["key"] else "no epoch was selected")
    return s
