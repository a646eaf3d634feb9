"""Training throughput of robustq's fast path against a plain eager-fp32 PyTorch loop.

    python benchmarks/bench_train.py                  # natural + PGD-10 AT, batch 128, 32x32
    python benchmarks/bench_train.py --steps 3 --rounds 2 --mode pgd
    python benchmarks/bench_train.py --ceiling        # what bounds the PGD-10 ratio (CPU)
    python benchmarks/bench_train.py --ddp            # 2 DDP ranks x 1 thread vs 1 process x 2

Both sides train the SAME method in the same process, interleaved round by round: an
En1ResNet20 (block noise c = 0.1) whose 3x3 convs are Binary-Relax 4-bit (lambda = 2, so the
relaxed weights u = (lam Q(w) + w)/(lam + 1) are in play), SGD with the paper's settings,
batch 128 of random 32x32 RGB images. "pgd" is PGD-10 adversarial training (eps 0.031, step
0.007, random start, BN in train mode as the reference; loss CE(f(x_adv), y)).

* robustq: ``engine.TrainStep`` on the model ``build.build_model`` makes, in the precision
  ``auto`` picks (bf16 autocast only where the hardware has bf16 convolutions), channels_last.
* plain: what a straightforward implementation does: NCHW fp32, block noise as
  ``x + c * x.std() * torch.randn_like(x)`` through autograd, and BR as the reference code
  does it, copying u into the conv weights once per step and the float w back after the
  backward pass; input gradients with ``torch.autograd.grad``.

Timing is after warm-up; each side's figure is the median over rounds of images/second.
``--ceiling`` times robustq's PGD-10 step operator by operator and asks how fast it could
be if everything except the convolutions and the noise draws took no time at all: both are
work the method cannot skip, so that rate over the plain loop's is an upper bound on the
ratio any fp32 implementation of the same method reaches on this machine (unless it has a
faster convolution or a faster Gaussian generator than PyTorch's). The convolutions' rate is
printed beside a large fp32 matrix multiply, the machine's practical peak.

``--ddp`` compares two ways to spend the same cores on the same PGD-10 step (robustq's
``TrainStep``, the same global batch): ONE process with ``--ranks`` threads against
``--ranks`` DDP processes (``torchrun``, gloo) with ONE thread each and ``batch / ranks``
images each. Each side runs in its own fresh process(es), one after the other; the figure is
global images/second (median over rounds, all ranks timed between barriers) and the ratio is
DDP over the single process.

Like the CLI, the benchmark keeps freed heap pages (``runtime.keep_heap_pages``); the setting
is process-wide, so the plain side gets it too (``--malloc-default`` turns it off for both).
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from robustq.build import Arch, build_model, build_network
from robustq.config import load_config
from robustq.engine import TrainStep
from robustq.models.enresnet import BlockNoise
from robustq.quant import get_projection, set_relaxation
from robustq.runtime import keep_heap_pages, resolve_device, resolve_precision

LAM = 2.0


class NaiveNoise(nn.Module):
    def __init__(self, coef: float) -> None:
        super().__init__()
        self.coef = coef

    def forward(self, x):
        return x + self.coef * x.std() * torch.randn_like(x)


class PlainStep:
    """The plain baseline (see the module docstring)."""

    def __init__(self, arch: Arch, pgd: bool, device) -> None:
        self.model = build_network(arch).to(device)
        for name, m in list(self.model.named_modules()):
            for child_name, child in list(m.named_children()):
                if isinstance(child, BlockNoise):
                    setattr(m, child_name, NaiveNoise(child.coef))
        self.qconvs = [m for m in self.model.modules()
                       if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        self.proj, self.pgd = get_projection("4bit"), pgd
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def _attack(self, x, y):
        x_adv = (x + torch.empty_like(x).uniform_(-0.031, 0.031)).clamp(0, 1)
        for _ in range(10):
            x_adv.requires_grad_(True)
            g, = torch.autograd.grad(F.cross_entropy(self.model(x_adv), y), x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + 0.007 * g.sign(), x - 0.031), x + 0.031).clamp(0, 1)
        return x_adv

    def __call__(self, x, y):
        with torch.no_grad():  # reference-style BR: swap u in, keep w aside
            saved = [m.weight.detach().clone() for m in self.qconvs]
            for m, w in zip(self.qconvs, saved):
                m.weight.copy_((LAM * self.proj(w) + w) / (LAM + 1))
        self.model.train()
        inputs = self._attack(x, y) if self.pgd else x
        loss = F.cross_entropy(self.model(inputs), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # straight-through: the gradient w.r.t. u updates w
            for m, w in zip(self.qconvs, saved):
                m.weight.copy_(w)
        self.opt.step()
        return loss.detach()


class ToolStep:
    def __init__(self, arch: Arch, pgd: bool, device, precision: str, d=None) -> None:
        from robustq.distributed import SINGLE, wrap_ddp
        cfg = load_config(None, ["loss.name=at" if pgd else "loss.name=natural", "loss.alpha=0",
                                 "loss.beta=1"])
        self.model, _ = build_model(arch, "4bit", "paper")
        self.model = self.model.to(device=device, memory_format=torch.channels_last)
        set_relaxation(self.model, LAM)
        self.step = TrainStep(cfg, self.model, device, precision,
                              net=wrap_ddp(self.model, device, d or SINGLE))

    def __call__(self, x, y):
        self.model.train()
        return self.step(self.model, x.contiguous(memory_format=torch.channels_last), y)[0]


def timed(step, x, y, n: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        loss = step(x, y)
    float(loss)  # wait for the device
    return n * x.shape[0] / (time.perf_counter() - t0)


def problem(args, device) -> tuple[Arch, torch.Tensor, torch.Tensor]:
    """En1ResNet20 with noise on RGB inputs, and one fixed random batch."""
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    return Arch(20, 1, 0.1, 3, 10, args.size), x, torch.randint(0, 10, (args.batch,), device=device)


def bench(mode: str, args, device, precision) -> tuple[float, float]:
    arch, x, y = problem(args, device)
    sides = {"robustq": ToolStep(arch, mode == "pgd", device, precision),
             "plain": PlainStep(arch, mode == "pgd", device)}
    for step in sides.values():  # warm-up
        timed(step, x, y, args.warmup, device)
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, step in sides.items():
            rates[name].append(timed(step, x, y, args.steps, device))
    return statistics.median(rates["robustq"]), statistics.median(rates["plain"])


class OpTimer(TorchDispatchMode):
    """Wall time and convolution FLOPs per aten operator. CPU operators run
    synchronously, so timing each call around the dispatch is exact up to the mode's own
    small overhead (which lands outside the timed region)."""

    def __init__(self) -> None:
        super().__init__()
        self.time: dict[str, float] = collections.defaultdict(float)
        self.flops: dict[str, float] = collections.defaultdict(float)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket).removeprefix("aten.")
        self.time[name] += time.perf_counter() - t0
        if name == "convolution":  # 2 * outputs * (C_in / groups) * k_h * k_w
            self.flops[name] += 2.0 * out.numel() * args[1][0].numel()
        elif name == "convolution_backward":  # the same per computed gradient (input, weight)
            passes = int(args[10][0]) + int(args[10][1])
            self.flops[name] += 2.0 * args[0].numel() * args[2][0].numel() * passes
        return out


RNG_OPS = ("normal_", "randn", "randn_like", "uniform_", "rand", "rand_like", "bernoulli_")


def timed_ops(step, x, y, rounds: int) -> tuple[float, OpTimer]:
    """The median (by wall time) of ``rounds`` steps run under an ``OpTimer``."""
    runs = []
    for _ in range(rounds):
        timer = OpTimer()
        with timer:
            t0 = time.perf_counter()
            step(x, y)
            runs.append((time.perf_counter() - t0, timer))
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


def matmul_gflops(device) -> float:
    """fp32 rate of a 2048^3 matrix multiply (median of 5): the machine's practical peak."""
    a = torch.randn(2048, 2048, device=device)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2 * 2048 ** 3 / statistics.median(times) / 1e9


def ceiling(args, device, precision) -> None:
    """Upper bound on robustq's PGD-10 ratio: the convolutions and noise draws alone."""
    if device.type != "cpu":
        raise SystemExit("--ceiling times CPU operators one by one; run it with --device cpu")
    tool_rate, plain_rate = bench("pgd", args, device, precision)
    arch, x, y = problem(args, device)
    tool = ToolStep(arch, True, device, precision)
    timed(tool, x, y, args.warmup, device)
    total, timer = timed_ops(tool, x, y, args.rounds)
    fwd, bwd = timer.time["convolution"], timer.time["convolution_backward"]
    conv_flops = timer.flops["convolution"] + timer.flops["convolution_backward"]
    conv_rate = conv_flops / (fwd + bwd) / 1e9
    rng = sum(timer.time[k] for k in RNG_OPS)
    bound = args.batch / (fwd + bwd + rng)
    print(f"robustq PGD-10 step timed operator by operator (median of {args.rounds} steps; "
          f"batch {args.batch}, {args.size}x{args.size}, precision {precision}):")
    print(f"  convolutions (forward {fwd:.2f} s, backward {bwd:.2f} s) {fwd + bwd:6.2f} s  at "
          f"{conv_rate:.0f} GFLOP/s; a 2048^3 fp32 matmul here runs at {matmul_gflops(device):.0f}")
    print(f"  noise and random-start draws {' ' * 27}{rng:6.2f} s")
    print(f"  everything else {' ' * 40}{total - fwd - bwd - rng:6.2f} s  (step {total:.2f} s "
          f"under the timer)")
    print(f"untimed, as without --ceiling: robustq {tool_rate:.1f} img/s, plain loop "
          f"{plain_rate:.1f} img/s ({tool_rate / plain_rate:.2f}x)")
    print(f"if everything but the convolutions and the draws took no time: {bound:.1f} img/s, "
          f"{bound / plain_rate:.2f}x the plain loop")


def ddp_worker(args, device, precision) -> None:
    """One side of ``--ddp``: this process (one of torchrun's ranks, or the only process)
    times the PGD-10 step on its ``batch / world`` share; rank 0 prints the global rate."""
    import torch.distributed as dist
    from robustq import distributed

    torch.set_num_threads(args.threads)
    d = distributed.init()
    arch, x, y = problem(args, device)
    share = args.batch // d.world
    x, y = x[d.rank * share:(d.rank + 1) * share], y[d.rank * share:(d.rank + 1) * share]
    step = ToolStep(arch, True, device, precision, d)
    barrier = dist.barrier if d.active else (lambda: None)
    timed(step, x, y, args.warmup, device)
    rates = []
    for _ in range(args.rounds):
        barrier()
        t0 = time.perf_counter()
        timed(step, x, y, args.steps, device)
        barrier()
        rates.append(args.steps * share * d.world / (time.perf_counter() - t0))
    if d.main:
        print(f"RATE {statistics.median(rates):.3f}", flush=True)
    distributed.shutdown()


def ddp_compare(args) -> None:
    """``--ddp``: the two sides in fresh processes, side by side, and their ratio."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = [__file__, "--ddp-worker", "--batch", str(args.batch), "--size", str(args.size),
              "--steps", str(args.steps), "--rounds", str(args.rounds), "--warmup",
              str(args.warmup), "--device", "cpu", "--precision", args.precision]
    sides = {f"1 process x {args.ranks} threads": (
                 [sys.executable, *common, "--threads", str(args.ranks)], args.ranks),
             f"{args.ranks} DDP ranks x 1 thread": (
                 [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks),
                  "--master_addr", "127.0.0.1", "--master_port", str(port), *common,
                  "--threads", "1"], 1)}
    rates = {}
    for name, (cmd, threads) in sides.items():
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        rates[name] = float(next(l for l in out.splitlines() if l.startswith("RATE")).split()[1])
    print(f"PGD-10 step, En1ResNet20 BR 4-bit, global batch {args.batch} ({args.batch // args.ranks} "
          f"per rank), {args.size}x{args.size}, cpu; median of {args.rounds} rounds x {args.steps} steps")
    for name, rate in rates.items():
        print(f"{name:<28}{rate:>10.1f} img/s")
    single, ddp = rates.values()
    print(f"{'ratio (DDP / 1 process)':<28}{ddp / single:>10.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description="robustq training throughput vs a plain loop")
    ap.add_argument("--mode", choices=["natural", "pgd", "both"], default="both")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--ceiling", action="store_true",
                    help="instead: time the PGD-10 step op by op and print the bound on its ratio")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave glibc's heap trimming on (see runtime.keep_heap_pages)")
    ap.add_argument("--ddp", action="store_true", help="instead: --ranks DDP processes x 1 thread "
                    "vs 1 process x --ranks threads on the PGD-10 step (CPU)")
    ap.add_argument("--ranks", type=int, default=2, help="--ddp: processes (and threads)")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ddp:
        ddp_compare(args)
        return
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    heap = "kept" if not args.malloc_default and keep_heap_pages() else "glibc default"
    if args.ddp_worker:
        ddp_worker(args, device, precision)
        return
    print(f"heap pages: {heap} (the CLI keeps them; process-wide, so both sides share it)")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"robustq precision {precision} + channels_last; batch {args.batch}, {args.size}x{args.size}, "
          f"En1ResNet20 BR 4-bit with block noise; median of {args.rounds} rounds x {args.steps} steps")
    if args.ceiling:
        ceiling(args, device, precision)
        return
    print(f"{'mode':<10}{'robustq img/s':>15}{'plain img/s':>14}{'ratio':>8}")
    for mode in (["natural", "pgd"] if args.mode == "both" else [args.mode]):
        tool, plain = bench(mode, args, device, precision)
        label = "PGD-10 AT" if mode == "pgd" else "natural"
        print(f"{label:<10}{tool:>15.1f}{plain:>14.1f}{tool / plain:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
