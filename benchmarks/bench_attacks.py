"""How long the strong suite takes, and what dominates it.

    python benchmarks/bench_attacks.py                       # CIFAR-10 test images if found
    python benchmarks/bench_attacks.py --measure 16 --n 1000 --eot 10 --threads 2

Model: En1ResNet20 (block noise c = 0.1, 272,282 parameters; random init: the cost of an
attack step does not depend on the weights), in eval mode, channels_last, fp32, as
``robustq eval --suite strong`` runs it. Images: the first ``--measure`` CIFAR-10 test images
(``load_dataset("cifar10")`` from ``--root``, by default ``$ROBUSTQ_DATA/cifar10``), or random images of the same shape
when the files are absent (the script says which).

1. Unit costs, after warm-up, median of ``--reps``: images/s of one EOT sample of an attack
   gradient (forward + backward w.r.t. the input only) at several batch sizes; of a forward
   pass; and of a natural training step (forward + backward w.r.t. weights + SGD step, batch
   128) -- the training loop's images/s the attacks are compared with.
2. The strong suite itself (``robustness.evaluate_suite``: every attack with EOT, the K draws,
   the noise-off rerun, the masking checks) on ``--measure`` images, with per-attack seconds.
   The labels are the model's own noise-free predictions, so every example is "correct" and
   every attack runs on every example: an upper bound (with a trained model, examples that
   are already wrong are skipped, and PGD's second restart only runs on unbroken ones).
   Extrapolated linearly to ``--n`` images (the suite is per-example work in batches of 250;
   at most ``n_check`` = 200 examples go through the checks, which the extrapolation
   overcounts slightly for n > 200).
3. A profile (torch.profiler) of one EOT PGD step on a batch: the top operators.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustq.attacks import make_attack
from robustq.data import load_dataset
from robustq.data.loader import to_pixels
from robustq.errors import DataError
from robustq.models import enresnet, noise_state
from robustq.robustness import SuiteOptions, evaluate_suite
from robustq.robustness.sampling import inputs_only

DEFAULT_ROOT = Path(os.environ.get("ROBUSTQ_DATA") or
                    Path(__file__).resolve().parents[2] / "shared" / "data") / "cifar10"


def images(root: Path, n: int) -> tuple[torch.Tensor, str]:
    try:
        _, test, _ = load_dataset("cifar10", root)
        return to_pixels(test.images[:n]), f"CIFAR-10 test images from {root}"
    except DataError:
        return torch.rand(n, 3, 32, 32), "random images of CIFAR-10's shape (CIFAR-10 not found)"


def rate(fn, n_images: int, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_images / statistics.median(times)


def unit_costs(model, x: torch.Tensor, reps: int) -> None:
    y = torch.zeros(x.shape[0], dtype=torch.long)
    probe = make_attack("fgsm")
    for b in (32, 128, 250):
        xb, yb = x[:b].contiguous(memory_format=torch.channels_last), y[:b]
        grad = lambda: probe.input_grad(model, xb, lambda z: F.cross_entropy(z, yb, reduction="sum"))
        with inputs_only(model):
            print(f"  attack gradient (1 EOT sample), batch {b:>3}: {rate(grad, b, reps):7.0f} images/s")
    xb = x[:250].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        print(f"  forward only,                  batch 250: {rate(lambda: model(xb), 250, reps):7.0f} images/s")
    train = model.train()
    opt = torch.optim.SGD(train.parameters(), lr=0.01, momentum=0.9)
    xt, yt = x[:128].contiguous(memory_format=torch.channels_last), y[:128]

    def step():
        loss = F.cross_entropy(train(xt), yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    print(f"  natural training step,         batch 128: {rate(step, 128, reps):7.0f} images/s")
    model.eval()


def profile(model, x: torch.Tensor, eot: int) -> None:
    from torch.profiler import profile as prof

    xb, y = x[:64].contiguous(memory_format=torch.channels_last), torch.zeros(64, dtype=torch.long)
    pgd = make_attack("pgd", steps=1, eot_samples=eot)
    with inputs_only(model):
        pgd(model, xb, y)
        with prof() as p:
            pgd(model, xb, y)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--n", type=int, default=1000, help="images to extrapolate to")
    ap.add_argument("--measure", type=int, default=16, help="images the suite really runs on")
    ap.add_argument("--eot", type=int, default=10)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-suite", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    torch.manual_seed(0)
    model = enresnet(20, 1, 0.1, 3, 10).eval().to(memory_format=torch.channels_last)
    x, source = images(args.root, max(args.measure, 250))
    print(f"En1ResNet20 ({sum(p.numel() for p in model.parameters()):,} params), {source}")
    print("unit costs (block noise on):")
    unit_costs(model, x, args.reps)
    print(f"profile of one PGD step with EOT {args.eot} on 64 images:")
    profile(model, x, args.eot)
    if args.skip_suite:
        return
    xs = x[:args.measure].contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), noise_state(model, False):
        y = model(xs).argmax(1)
    opts = SuiteOptions(eot_samples=args.eot, draws=args.draws)
    t0 = time.perf_counter()
    r = evaluate_suite(model, xs, y, "strong", 0.031, opts)
    total = time.perf_counter() - t0
    per_image = total / args.measure
    print(f"strong suite on {args.measure} images (EOT {args.eot}, {args.draws} draws, noise-off "
          f"rerun and masking checks included): {total:.0f} s = {per_image:.1f} s/image")
    shares = sorted(r["attack_seconds"].items(), key=lambda kv: -kv[1])
    print("  per attack (noisy pass): " + ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f}%)" for k, v in shares))
    print(f"extrapolated to {args.n} images: {per_image * args.n / 3600:.1f} h on this machine "
          f"(linear; upper bound, see the docstring)")


if __name__ == "__main__":
    main()
