"""The training engine: one readable loop, checkpoints every epoch and mid-epoch, exact resume.

A run directory holds ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch),
``checkpoint.pt`` (the complete training state after the last finished epoch, or mid-epoch:
``train.checkpoint_minutes`` and Ctrl-C/SIGTERM, ``resume.py``; for ``--resume``), ``model.pt`` (the selected model: quantized weights baked in as exactly Q(w))
and, after evaluation, ``results.json``.

Model selection: after every epoch the model is validated on a held-out split of the
TRAINING data (never the test set) with its weights projected to exactly Q(w); only epochs
whose training weights were already exactly Q(w) (the Binary-Connect phase) are candidates,
so a relaxed BR state is never selected. The candidate with the highest validation robust
accuracy (PGD) wins; clean validation accuracy breaks ties.

Under torchrun (``distributed.py``) every rank runs this same loop on its shard of each
epoch; DDP all-reduces the gradients, the epoch sums and validation are reduced over ranks,
and only rank 0 writes files.
"""
from __future__ import annotations

import copy
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
from .checkpoint import CHECKPOINT_FORMAT, FORMAT_VERSION, MODEL_FORMAT, load, remove_stale_tmp, save
from .distributed import SINGLE, Dist, agree, all_sum, any_rank, rank_seed, sharded_masks, sync_buffers, wrap_ddp
from .config import RunConfig
from .errors import CheckpointError, ConfigError
from .integrity import check_checkpoint
from .data import Batches, ImageData, load_dataset, stratified_split, to_pixels
from .guard import overfitting
from .metrics import METRIC_FIELDS, epoch_row, training_summary, write_metrics  # noqa: F401 (re-exported)
from .losses import OBJECTIVES
from .progress import Progress
from .quant import RelaxSchedule, bake, set_relaxation
from .quant.projections import canonical_name
from .resume import CheckpointClock, Saver, StopRequests, TrainState
from .runtime import autocast, resolve_precision, seed_everything
from .schedule import make_scheduler

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


def per_rank_batches(n: int, batch_size: int, d: Dist = SINGLE) -> int:
    """Batches in the smallest rank's shard of ``n`` examples: under DDP every rank must take
    the same number of steps, so a larger shard's last (at most one) image is left out."""
    return -(-len(range(d.world - 1, n, d.world)) // batch_size)


def check_world(n: int, cfg: RunConfig, d: Dist, device: torch.device) -> None:
    """A torchrun job needs at least one training batch per rank, and SyncBN needs GPUs
    (one sentence otherwise)."""
    if cfg.train.sync_bn and d.active and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm runs only "
                          "on GPUs); set train.sync_bn=false for a CPU job")
    single = batches_per_epoch(-(-n // cfg.train.batch_size), cfg)
    if d.world > single:
        raise ConfigError(f"torchrun started {d.world} processes but an epoch has only {single} "
                          f"training batch(es) of train.batch_size={cfg.train.batch_size} "
                          f"({n} images); use at most {single} processes or a smaller batch size")


def validate(model: nn.Module, s: Setup, device, precision: str, channels_last: bool, epoch: int,
             d: Dist = SINGLE, progress: bool = False) -> dict:
    """Clean, PGD and FGSM accuracy of the truly quantized model (u = Q(w)) on the validation
    split, by the evaluation engine (robust: correct on the clean image and under the attack;
    FGSM next to PGD is what reveals catastrophic overfitting, ``guard.py``). Under torchrun
    the split is divided between the ranks and the per-image results gathered."""
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

    def correct(lo: int, hi: int) -> dict:
        part = s.val.subset(torch.arange(lo, hi))
        x, y = to_pixels(part.images, device, channels_last), part.labels.to(device)
        # a separate, fixed random stream: validation never perturbs the training stream
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                autocast(precision, device):
            return run_attacks(model, x, y, {"pgd": pgd, "fgsm": fgsm}, draws=1, batch_size=256,
                               seed=rank_seed(s.cfg.seed * 1000 + epoch, d), log=lambda _: None,
                               progress=progress and d.main, desc="validation").correct

    masks = sharded_masks(correct, len(s.val), d)
    model.train(was_training)
    set_relaxation(model, lam)
    acc = {k: float(v.double().mean()) for k, v in masks.items()}
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


class TrainStep:
    """One optimisation step of the configured objective: make x_adv, forward, backward, step.

    Free AT (``adv.attack: free``) makes one call m replays of the minibatch, each one
    forward-backward that steps the weights and moves the persistent perturbation.
    Shared by the engine and the training benchmark, so the benchmark times this code.
    ``net`` is the model the training forwards go through (DDP's wrapper, which all-reduces
    the gradients); attacks always run on the bare ``model`` (no gradient sync for them)."""

    def __init__(self, cfg: RunConfig, model: nn.Module, device: torch.device, precision: str,
                 steps_per_epoch: int = 1, net: Optional[nn.Module] = None) -> None:
        self.net, self.steps_per_epoch = net, steps_per_epoch
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
            net = model if self.net is None else self.net
            logits = net(x) if self.needs_clean else None
            logits_adv = net(x_adv) if x_adv is not None else None
            out = self.objective.fn(logits, logits_adv, y, **self.params)
        self._update(out["loss"])
        detach = lambda t: None if t is None else t.detach()
        return out["loss"].detach(), detach(logits), detach(logits_adv)

    def _free(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        model = model if self.net is None else self.net
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


@torch.no_grad()
def _accumulate(stats: torch.Tensor, loss, logits, logits_adv, y) -> None:
    """Running sums on the device (no sync per batch): loss, clean/adv correct, images."""
    stats[0] += loss.float() * len(y)
    if logits is not None:
        stats[1] += (logits.argmax(1) == y).sum()
    if logits_adv is not None:
        stats[2] += (logits_adv.argmax(1) == y).sum()
    stats[3] += len(y)


def _start(cfg: RunConfig, run_dir: Path, resume: bool, saver: Saver, d: Dist, log,
           n_batches: int = 1) -> TrainState:
    """The state to train from: a checkpoint's (rank 0 reads it, every rank gets it, so
    nodes need no shared disk for it) or a fresh one with each rank's own random streams.
    A checkpoint is checked (``integrity.check_checkpoint``) before any state is touched."""
    if d.main:
        remove_stale_tmp(run_dir)  # half-written files of a killed run; the real ones are intact
    if not resume:
        seed_everything(cfg.seed)
        if d.active:
            torch.manual_seed(rank_seed(cfg.seed, d))   # block noise, random starts: per rank
        return TrainState()
    path, per_epoch = run_dir / "checkpoint.pt", saver.step.steps_per_epoch

    def read() -> dict:
        ck = load(path, CHECKPOINT_FORMAT)
        same_world = int(ck.get("world_size", 1)) == d.world   # else: other batches per epoch
        check_checkpoint(ck, path, cfg.train.epochs, per_epoch if same_world else None,
                         per_epoch // max(n_batches, 1))
        return ck

    ck = agree(read, d, main_only=True)
    try:
        st = saver.restore(ck, log)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path} does not match the run's model or optimizer "
                              f"({str(e).splitlines()[0][:100] if str(e) else type(e).__name__}); "
                              f"it belongs to another run or is corrupt") from None
    log(f"resuming {run_dir} after epoch {st.epoch}" + (f", batch {st.batch}" if st.batch else ""))
    return st


@dataclass
class Run:
    """What one training run is made of, built once by ``train``."""
    s: Setup
    model: nn.Module
    step: TrainStep
    batches: Batches
    n_batches: int            # per epoch, the same on every rank
    saver: Saver
    run_dir: Path
    device: torch.device
    precision: str
    dist: Dist
    log: Callable[[str], None]
    progress: bool


def _build(s: Setup, run_dir: Path, device: torch.device, progress: bool, d: Dist, log) -> Run:
    cfg, t = s.cfg, s.cfg.train
    model = s.model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if t.sync_bn and d.active:   # batch statistics over all ranks' batches (docs/method.md)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    precision = resolve_precision(t.precision, device)
    # the data ORDER comes from the seed alone (shared by all ranks, split by shard); a single
    # process also draws its augmentation from it (as always), each DDP rank from its own
    order_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator().manual_seed(rank_seed(cfg.seed, d, 1)) if d.active else order_gen
    batches = Batches(s.train, t.batch_size, shuffle=True, pad=s.spec.pad, flip=s.spec.flip,
                      augment_data=cfg.data.augment, generator=aug_gen, device=device,
                      channels_last=t.channels_last, shard=(d.rank, d.world),
                      order_generator=order_gen)
    n_batches = batches_per_epoch(per_rank_batches(len(s.train), t.batch_size, d), cfg)
    step = TrainStep(cfg, model, device, precision, steps_per_epoch=n_batches * cfg.adv.replay
                     if cfg.adv.attack == "free" else n_batches, net=wrap_ddp(model, device, d))
    saver = Saver(run_dir, cfg, model, step, aug_gen, order_gen, device, d)
    return Run(s, model, step, batches, n_batches, saver, run_dir, device, precision, d, log, progress)


def train(cfg: RunConfig, run_dir: Path, device: torch.device, *, resume: bool = False,
          log: Callable[[str], None] = print, progress: bool = True,
          on_epoch_end: Optional[Callable[[int], None]] = None,
          on_checkpoint: Optional[Callable[[int, int], None]] = None,
          prepared: Optional[Setup] = None, dist: Dist = SINGLE) -> Setup:
    """Train ``cfg`` into ``run_dir`` (resuming from its checkpoint if ``resume``).

    ``prepared`` is the ``setup(cfg)`` already built (it reads the data); ``on_epoch_end``
    is called with the number of finished epochs after each checkpoint, ``on_checkpoint``
    with ``(epochs done, batches done)`` after each mid-epoch one; ``dist`` is this rank of a
    torchrun job (default: the single process)."""
    log = log if dist.main else (lambda *_: None)
    r = _build(prepared or setup(cfg), Path(run_dir), device, progress, dist, log)
    st = _start(cfg, r.run_dir, resume, r.saver, dist, log, r.n_batches)
    with StopRequests() as stop:   # from here on, Ctrl-C/SIGTERM stop at a batch boundary
        _header(r, log)            # (printed once the handlers are in place)
        if st.stopped:
            log(f"this run stopped after epoch {st.epoch}: {st.stopped}; nothing left to train")
            return r.s
        _loop(r, st, stop, on_epoch_end, on_checkpoint)
    what = "kept the last good epoch" if st.best.get("provisional") else "selected epoch"
    log(f"{what} {st.best['epoch']} (validation robust accuracy {st.best['key'][0]:.4f})"
        if st.best["key"] else "no epoch was selected")
    return r.s


def _header(r: Run, log) -> None:
    cfg, t, device, dist = r.s.cfg, r.s.cfg.train, r.device, r.dist
    log(f"training {r.s.arch.name} ({cfg.quant.scheme}, {cfg.quant.method}) with loss "
        f"{cfg.loss.name} {r.step.params} on {cfg.data.name}: {len(r.s.train)} train / "
        f"{len(r.s.val)} val images, {t.epochs} epochs, device {device}, precision {r.precision}"
        f"{', channels_last' if t.channels_last else ''}"
        + (f", {dist.world} processes (DDP{', SyncBN' if t.sync_bn else ''})" if dist.active else ""))


def _loop(r: Run, st: TrainState, stop: StopRequests, on_epoch_end, on_checkpoint) -> None:
    """The epochs, from wherever ``st`` stands (a fresh run, an epoch end, or mid-epoch)."""
    t, step, model = r.s.cfg.train, r.step, r.model
    clock = CheckpointClock(t.checkpoint_minutes)
    for epoch in range(st.epoch, t.epochs):
        lam = r.s.relax.lam(epoch)
        set_relaxation(model, lam)  # BR: u = (lam Q(w) + w)/(lam + 1); None: BC, u = Q(w)
        model.train()
        if st.batch == 0:           # a fresh epoch (else: the saved one goes on)
            st.order, st.stats = r.batches.new_order(), torch.zeros(4, device=r.device)
            st.lr, st.seconds = step.opt.param_groups[0]["lr"], 0.0  # the first step's rate
        bar = Progress(r.n_batches, f"epoch {epoch + 1}/{t.epochs} {r.s.relax.phase(epoch)}",
                       enabled=r.progress and r.dist.main)
        bar.done, started, before = st.batch, time.perf_counter(), st.seconds
        acc_slot = 1 if step.needs_clean else 2
        for x, y in r.batches.iterate(st.order, st.batch):
            if st.batch == r.n_batches:
                break
            _accumulate(st.stats, *step(model, x, y), y)
            st.batch += 1
            bar.update(len(y) * step.replay, lambda: {"loss": float(st.stats[0] / st.stats[3]),
                                                      "acc": float(st.stats[acc_slot] / st.stats[3])})
            if st.batch < r.n_batches:  # the last batch's state is the epoch checkpoint's
                st.seconds = before + time.perf_counter() - started
                _midway(r, st, stop, clock, on_checkpoint)
        st.seconds = before + time.perf_counter() - started
        sync_buffers(model, r.dist)     # every rank validates rank 0's BN statistics
        _finish_epoch(r, st, epoch, lam, bar)
        r.saver.save(st)
        clock.reset()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
        if st.stopped:
            break
        if epoch + 1 < t.epochs and any_rank([stop.signum is not None], r.dist)[0]:
            raise stop.interrupted(r.run_dir, f"after epoch {epoch + 1}", r.dist)


def _midway(r: Run, st: TrainState, stop: StopRequests, clock: CheckpointClock, on_checkpoint) -> None:
    """After a minibatch: a mid-epoch checkpoint when one is due (rank 0's clock) or a stop
    was asked for (a signal on any rank); every rank decides the same (one all-reduce)."""
    asked, due = any_rank([stop.signum is not None, r.dist.main and clock.due()], r.dist)
    if not (asked or due):
        return
    r.saver.save(st)
    clock.reset()
    if on_checkpoint is not None:
        on_checkpoint(st.epoch, st.batch)
    if asked:
        raise stop.interrupted(r.run_dir, f"in epoch {st.epoch + 1} after batch {st.batch} of "
                                          f"{r.n_batches}", r.dist)


def _finish_epoch(r: Run, st: TrainState, epoch: int, lam, bar: Progress) -> None:
    """Validate, guard, select, write metrics.csv and model.pt; ``st`` moves to the next epoch."""
    s, t, d = r.s, r.s.cfg.train, r.dist
    c = all_sum(st.stats.clone(), d).tolist()
    val = validate(r.model, s, r.device, r.precision, t.channels_last, epoch, d, r.progress)
    row = epoch_row(epoch, s, lam, st.lr, c, r.step, val, st.seconds)
    co = None if t.co_guard == "off" else overfitting(st.rows + [row], t.co_drop, t.co_gap)
    key = [val["val_robust_acc"], val["val_acc"]]
    selected, provisional = _select(s, epoch, co, st.best, key)
    if selected or provisional:
        st.best = {"epoch": epoch + 1, "key": key, "provisional": provisional}
        if d.main:
            save(model_file(r.model, s, epoch + 1, val, provisional), r.run_dir / "model.pt")
    st.rows.append({**row, "co": int(co is not None), "selected": int(selected)})
    bar.close(val_acc=val["val_acc"], val_rob=val["val_robust_acc"])
    if co is not None:
        kept = f"model.pt stays epoch {st.best['epoch']}" if st.best["epoch"] else "no model.pt yet"
        r.log(f"catastrophic overfitting at epoch {epoch + 1}: {co}; {kept}"
              + ("; stopping (train.co_guard: stop)" if t.co_guard == "stop" else ""))
        if t.co_guard == "stop":
            st.stopped = f"catastrophic overfitting at epoch {epoch + 1}: {co}"
    if d.main:
        write_metrics(r.run_dir / "metrics.csv", st.rows)
    st.epoch, st.batch, st.order, st.stats = epoch + 1, 0, None, None
