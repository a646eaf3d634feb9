"""CPU inference speed: the float model, the pruned model and both in ONNX Runtime.

    python benchmarks/bench_inference.py                       # synthetic 4-bit En1ResNet20
    python benchmarks/bench_inference.py runs/quickstart-...   # a run directory or model file
    python benchmarks/bench_inference.py --zero-slices 0.33 --threads 1 --repeat 2
    python benchmarks/bench_inference.py --depth 56 --save s56.pt --repeat 0   # a model file

Without a model it builds a 4-bit En1ResNet20 (3x32x32, 10 classes) with random weights and
zeroes a random ``--zero-slices`` fraction of the input slices of every quantized conv (the
paper reports 33% channel sparsity for 4-bit En1ResNet56); ``--zero-slices`` also applies to a
given model (default 0 there: measure it as trained). An untrained model's BatchNorm gets
random running statistics, as training would leave.

Columns: ``float`` (the dense model, quantized weights held as fp32), ``pruned`` (every dead
channel removed), ``pruned align8`` (channel counts rounded up to multiples of 8, which the
blocked conv kernels favour), each in PyTorch and as ONNX in ONNX Runtime (``onnx ...``).

Every model runs in eval mode with the block noise OFF (the ONNX graph has none), fp32,
``--threads`` intra-op threads for both PyTorch and ONNX Runtime. After a warm-up (10 calls
at batch 1, one at batch 256, each backend) the backends take turns for ``--batches`` rounds (shuffled order);
in each round every backend runs ``--iters / --batches`` batch-1 calls and one batch-256 call.
Latency is the median batch-1 call, throughput 256 over the median batch-256 call.
``--repeat`` runs the whole measurement again (numbers on a shared machine are noisy; report
every repeat).
"""
from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from robustq.build import Arch, build_model
from robustq.models import set_noise
from robustq.efficiency.prune import count_flops, count_params, prune
from robustq.quant import bake
from robustq.runtime import keep_heap_pages


def synthetic(depth: int = 20, ensemble: int = 1) -> tuple[torch.nn.Module, dict]:
    arch = Arch(depth, ensemble, 0.1, 3, 10, 32)
    model, bit_map = build_model(arch, "4bit")
    model = bake(model).eval()
    return model, {"arch": arch.to_dict(), "bit_map": bit_map, "quant": "4bit", "method": "bc",
                   "policy": "paper", "dataset": "cifar10", "epoch": 0, "val": {}}


def save_model(model: torch.nn.Module, meta: dict, path: str) -> None:
    """Write ``model`` as a ``model.pt`` file (the engine's format), for the CLI verbs."""
    from robustq import __version__
    from robustq.checkpoint import FORMAT_VERSION, MODEL_FORMAT, save
    save({"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
          "state_dict": model.state_dict(), "meta": meta}, path)


@torch.no_grad()
def sparsify(model: torch.nn.Module, meta: dict, zero: float, seed: int = 0) -> None:
    """Zero a random ``zero`` fraction of the input slices of each quantized conv; give BN
    random running statistics (as training would)."""
    g = torch.Generator().manual_seed(seed)
    quantized = {k for k, v in meta["bit_map"].items() if v != "float"}
    for name, m in model.named_modules():
        if name in quantized and isinstance(m, torch.nn.Conv2d) and zero > 0:
            k = m.weight.shape[1]
            m.weight[:, torch.randperm(k, generator=g)[: round(zero * k)]] = 0
        if isinstance(m, torch.nn.BatchNorm2d) and zero > 0 and int(m.num_batches_tracked) == 0:
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)


def _timed(run, x: torch.Tensor) -> float:
    t = time.perf_counter()
    run(x)
    return time.perf_counter() - t


def runners(models: dict, shape: list[int], threads: int, tmp: Path) -> dict:
    """name -> callable(x: Tensor) -> output, PyTorch and (when installed) ONNX Runtime."""
    out = {}
    for name, m in models.items():
        m = copy.deepcopy(m).eval()
        set_noise(m, False)
        out[name] = lambda x, m=m: m(x)
    try:
        import onnxruntime as ort
        from robustq.efficiency.export import export_onnx
    except ImportError:
        print("onnxruntime is not installed (pip install 'robustq[onnx]'): no ONNX columns")
        return out
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    for name, m in models.items():
        path = tmp / f"{name.replace(' ', '_')}.onnx"
        export_onnx(m, shape, path, check=False)
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        out[f"onnx {name}"] = lambda x, s=s: s.run(None, {"images": x.numpy()})[0]
    return out


def measure(runs: dict, shape: list[int], iters: int, batches: int) -> dict:
    """``{name: (latency ms, images/s)}``. The backends take turns (``batches`` rounds, in a
    shuffled order each) so that a neighbour's load burst or a clock change hits them alike."""
    x1, xb = torch.rand(1, *shape), torch.rand(256, *shape)
    rng = random.Random(0)
    lat = {name: [] for name in runs}
    thr = {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():           # warm-up: allocator, kernel selection, caches
            for _ in range(10):
                run(x1)
            run(xb)
        order = list(runs)
        for _ in range(batches):
            rng.shuffle(order)              # no backend always follows the same one
            for name in order:
                lat[name] += [_timed(runs[name], x1) for _ in range(max(1, iters // batches))]
                thr[name].append(_timed(runs[name], xb))
    return {name: (1000 * statistics.median(lat[name]), 256 / statistics.median(thr[name]))
            for name in runs}


def report(results: dict) -> str:
    base_lat, base_thr = results["float"]
    lines = [f"{'model':<19}{'latency b=1 (ms)':>18}{'vs float':>10}{'throughput b=256 (img/s)':>27}{'vs float':>10}"]
    for name, (lat, thr) in results.items():
        lines.append(f"{name:<19}{lat:>18.3f}{base_lat / lat:>9.2f}x{thr:>27.0f}{thr / base_thr:>9.2f}x")
    return "\n".join(lines)


def describe(meta: dict, zero: float, dense, pruned, aligned) -> None:
    arch = meta["arch"]
    shape = (arch["in_channels"], arch["input_size"], arch["input_size"])
    print(f"{Arch(**arch).name} {meta.get('quant')} input {list(shape)}, zeroed slice fraction "
          f"{zero}; params {count_params(dense):,} -> {count_params(pruned):,}; multiply-adds "
          f"{count_flops(dense, shape):,} -> {count_flops(pruned, shape):,} (aligned to 8 "
          f"channels: {count_params(aligned):,} params, {count_flops(aligned, shape):,} multiply-adds)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="run directory or model file (default: synthetic)")
    p.add_argument("--zero-slices", type=float, default=None,
                   help="fraction of input slices to zero (default 0.33 synthetic, 0 for a model)")
    p.add_argument("--depth", type=int, default=20, help="synthetic model depth (6n+2)")
    p.add_argument("--ensemble", type=int, default=1, help="synthetic ensemble size")
    p.add_argument("--save", help="also write the (sparsified) model as a model.pt file here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--batches", type=int, default=15)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--malloc-default", action="store_true",
                   help="leave glibc's heap trimming on (see keep_heap_pages)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    heap = "glibc default" if a.malloc_default else (
        "heap pages kept (mallopt)" if keep_heap_pages() else "glibc default (mallopt unavailable)")
    if a.model:
        from robustq.efficiency.pipeline import resolve
        from robustq.build import load_any_model
        dense, meta = load_any_model(resolve(a.model)[0])
        zero = a.zero_slices or 0.0
    else:
        dense, meta = synthetic(a.depth, a.ensemble)
        zero = 0.33 if a.zero_slices is None else a.zero_slices
    sparsify(dense, meta, zero)
    if a.save:
        save_model(dense, meta, a.save)
    pruned, _ = prune(dense, meta["arch"])
    aligned, _ = prune(dense, meta["arch"], align=8)
    arch = meta["arch"]
    shape = [arch["in_channels"], arch["input_size"], arch["input_size"]]
    describe(meta, zero, dense, pruned, aligned)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}; noise off, eval mode, fp32; {heap}")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"float": dense, "pruned": pruned, "pruned align8": aligned}
        runs = runners(models, shape, a.threads, Path(tmp))
        for r in range(a.repeat):
            print(f"run {r + 1}/{a.repeat}")
            print(report(measure(runs, shape, a.iters, a.batches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
