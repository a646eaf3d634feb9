"""Cost of the EnResNet block noise: drawing it, and one forward + backward through it.

    python benchmarks/bench_noise.py

For one block output of shape (128, 16, 32, 32) (the largest in a ResNet20 at batch 128),
in channels_last and NCHW fp32: ``randn_like`` against robustq's draw (``normal_`` into a
buffer in memory order), and the naive autograd noise ``x + c * x.std() * randn_like(x)``
against robustq's ``GaussianBlockNoise`` (fused forward, closed-form backward).
Median of 7 timings after warm-up, milliseconds.
"""
from __future__ import annotations

import statistics
import time

import torch

from robustq.models.enresnet import GaussianBlockNoise, _physical_randn


def ms(fn, reps: int = 7) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; tensor (128, 16, 32, 32) fp32")
    print(f"{'layout':<15}{'randn_like':>12}{'robustq draw':>14}{'naive fwd+bwd':>15}{'robustq fwd+bwd':>17}")
    for layout in ("channels_last", "NCHW"):
        x = torch.randn(128, 16, 32, 32)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        g = torch.randn_like(x)

        def naive():
            torch.autograd.grad(x + 0.1 * x.std() * torch.randn_like(x), x, g)

        def ours():
            torch.autograd.grad(GaussianBlockNoise.apply(x, 0.1), x, g)
        print(f"{layout:<15}{ms(lambda: torch.randn_like(x)):>12.1f}{ms(lambda: _physical_randn(x)):>14.1f}"
              f"{ms(naive):>15.1f}{ms(ours):>17.1f}")


if __name__ == "__main__":
    main()
