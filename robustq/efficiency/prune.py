"""Physical channel pruning: a quantized EnResNet -> a smaller dense one, same function.

What goes (``sparsity.py`` explains why per role; ``pruned.py`` shows the pruned forward):

* a private block channel ``j`` whose first-conv filter ``W1[j]`` or second-conv slice
  ``W2[:, j]`` is all zero: the filter, its BatchNorm channel and the slice;
* the zero slices of convs that read the residual stream or the image: their weights (the
  conv reads a gathered subset); the stream channel itself stays;
* zero output filters of the stem, second convs and shortcuts, which write into the stream:
  the filter (its output is added into the stream only where it is nonzero);
* zero classifier columns (when the classifier is quantized).

The BatchNorm constant. In eval mode ``bn2(z)_j = gamma_j (z_j - mu_j) / sqrt(var_j + eps)
+ beta_j``; a zero filter gives ``z_j = 0`` everywhere, so after ReLU the channel is the
constant ``r_j = relu(beta_j - gamma_j mu_j / sqrt(var_j + eps))``, not zero. The second conv
(3x3, zero padding 1) turns it into ``sum_j r_j sum_{taps inside the image} W2[o, j, tap]``:
constant inside, different along each border and corner, because the padding taps see 0, not
``r_j``. Folding it into a scalar bias would be wrong at the borders; folding it into the
single-channel kernel ``K[o] = sum_j r_j W2[o, j]`` and adding ``conv2d(ones(H, W), K)`` is
exact for every input size (``PrunedConv.const``), at the cost of one 1-channel conv on a
batch of one.

Equivalence: in eval mode with the noise off the pruned model's outputs equal the dense
model's up to float summation order (tested to 1e-5); with the noise on and the same seed too,
because the stream keeps its shape. ``prune_report`` counts parameters and FLOPs before and
after, beside the paper's arithmetic ("params minus the weights of all zero input slices").
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..models.enresnet import BlockNoise, Ensemble
from ..models.resnet import PreActBlock, PreActResNet
from .pruned import build_pruned

Index = Optional[list]


def _live_in(w: torch.Tensor) -> torch.Tensor:
    return (w != 0).transpose(0, 1).flatten(1).any(1)


def _live_out(w: torch.Tensor) -> torch.Tensor:
    return (w != 0).flatten(1).any(1)


def _idx(mask: torch.Tensor) -> Index:
    """Kept channel numbers, or None when all are kept (no gather/scatter needed)."""
    return None if bool(mask.all()) else [int(i) for i in torch.nonzero(mask).flatten()]


def _within(sub: torch.Tensor, read: torch.Tensor) -> Index:
    """Positions of ``sub``'s channels among the ``read`` channels (None when the same)."""
    if bool((sub == read).all()):
        return None
    return [p for p, c in enumerate(torch.nonzero(read).flatten().tolist()) if bool(sub[c])]


def _pad(mask: torch.Tensor, align: int) -> torch.Tensor:
    """``mask`` plus the first unkept channels, up to a multiple of ``align`` kept ones (or
    all). Re-adding a dead channel is always exact: it computes its zero (or constant)."""
    mask = mask.clone()
    short = (-int(mask.sum())) % align
    if short:
        mask[torch.nonzero(~mask).flatten()[:short]] = True
    return mask


def _block_plan(b: PreActBlock, align: int) -> dict:
    w1, w2 = b.conv1.weight, b.conv2.weight
    k1 = _pad(_live_in(w1), align)
    ks = _pad(_live_in(b.shortcut.weight), align) if b.shortcut is not None else torch.zeros_like(k1)
    read = _pad(k1 | ks, align)
    live_filter, live_slice = _live_out(w1), _live_in(w2)
    mid = _pad(live_filter & live_slice, align)
    plan = {"read": _idx(read), "conv1_in": _within(k1, read),
            "mid": [int(i) for i in torch.nonzero(mid).flatten()],
            "const": bool((~live_filter & live_slice & ~mid).any()),
            "conv2_out": _idx(_pad(_live_out(w2), align)), "shortcut": None}
    if b.shortcut is not None:
        plan["shortcut"] = {"in": _within(ks, read),
                            "out": _idx(_pad(_live_out(b.shortcut.weight), align))}
    return plan


def member_plan(m: PreActResNet, align: int = 1) -> dict:
    """The channel plan (see ``pruned.py``) of one dense member with baked weights; with
    ``align > 1`` every kept channel count is rounded up to a multiple of ``align``."""
    w = m.conv1.weight
    return {"stem": {"in": _idx(_pad(_live_in(w), align)), "out": _idx(_pad(_live_out(w), align))},
            "blocks": [_block_plan(b, align) for b in m.blocks],
            "head": {"read": _idx(_pad(_live_in(m.linear.weight), align))}}


def _rows(t: torch.Tensor, idx: Index) -> torch.Tensor:
    return t if idx is None else t[idx]


def _cols(t: torch.Tensor, idx: Index) -> torch.Tensor:
    return t if idx is None else t[:, idx]


def _copy_bn(dst: Optional[nn.BatchNorm2d], src: nn.BatchNorm2d, idx: Index) -> None:
    if dst is None:
        return
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).data.copy_(_rows(getattr(src, name).data, idx))
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


@torch.no_grad()
def _fold_constant(b: PreActBlock, out: Index, mid: list) -> torch.Tensor:
    """``K[o] = sum_j r_j W2[o, j]`` over the constant private channels not kept in ``mid``
    (float64 sum)."""
    w1, w2 = b.conv1.weight, b.conv2.weight
    const = ~_live_out(w1) & _live_in(w2)
    const[mid] = False
    bn2 = copy.deepcopy(b.bn2).eval()
    r = torch.relu(bn2(w2.new_zeros(1, w2.shape[1], 1, 1))).flatten()   # relu(bn2(0)) per channel
    k = torch.einsum("ojhw,j->ohw", _rows(w2, out)[:, const].double(), r[const].double())
    return k.unsqueeze(1).float()


@torch.no_grad()
def _fill_block(dst: nn.Module, b: PreActBlock, plan: dict) -> None:
    read, mid, out = plan["read"], plan["mid"], plan["conv2_out"]
    _copy_bn(dst.bn1, b.bn1, read)
    if dst.conv1 is not None:
        w1 = _cols(b.conv1.weight[mid], read)
        dst.conv1.weight.copy_(_cols(w1, plan["conv1_in"]))
        _copy_bn(dst.bn2, b.bn2, mid)
    if dst.conv2 is not None:
        dst.conv2.weight.copy_(_rows(b.conv2.weight, out)[:, mid])
        if dst.conv2.const is not None:
            dst.conv2.const.copy_(_fold_constant(b, out, mid))
    if dst.shortcut is not None:
        ws = _cols(_rows(b.shortcut.weight, plan["shortcut"]["out"]), read)
        dst.shortcut.weight.copy_(_cols(ws, plan["shortcut"]["in"]))


@torch.no_grad()
def _fill_member(dst: nn.Module, m: PreActResNet, plan: dict) -> None:
    if dst.conv1 is not None:
        dst.conv1.weight.copy_(_cols(_rows(m.conv1.weight, plan["stem"]["out"]), plan["stem"]["in"]))
    for d, b, p in zip(dst.blocks, m.blocks, plan["blocks"]):
        _fill_block(d, b, p)
    head = plan["head"]["read"]
    _copy_bn(dst.bn, m.bn, head)
    dst.linear.weight.copy_(_cols(m.linear.weight, head))
    dst.linear.bias.copy_(m.linear.bias)


def _dense_members(model: nn.Module) -> list[PreActResNet]:
    if hasattr(model, "quantized_weight") or any(hasattr(x, "quantized_weight") for x in model.modules()):
        from ..quant import bake
        model = bake(copy.deepcopy(model))
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    if not all(isinstance(m, PreActResNet) for m in members):
        raise TypeError("prune expects a dense (unpruned) EnResNet / PreActResNet ensemble")
    return members


def prune(model: nn.Module, arch: dict, align: int = 1) -> tuple[Ensemble, dict]:
    """``(pruned model in eval mode, spec)`` for a dense model with baked quantized weights.

    ``arch`` holds the Arch fields (depth, ensemble, noise, in_channels, num_classes, ...).
    ``align = 1`` removes every dead channel; ``align = 8`` keeps a few so that every channel
    count is a multiple of 8, which the blocked conv kernels of oneDNN / ONNX Runtime favour."""
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    members = _dense_members(model)
    widths = list(dict.fromkeys([members[0].conv1.out_channels] +
                                [b.conv2.out_channels for b in members[0].blocks]))
    spec = {"widths": widths, "members": [member_plan(m, align) for m in members]}
    pruned = build_pruned(arch, spec)
    for dst, m, plan in zip(pruned.members, members, spec["members"]):
        _fill_member(dst, m, plan)
    noise_on = any(isinstance(x, BlockNoise) and x.enabled for x in model.modules())
    for x in pruned.modules():
        if isinstance(x, BlockNoise):
            x.enabled = noise_on
    return pruned.eval(), spec


def count_params(model: nn.Module) -> int:
    """Parameters plus the folded constant kernels (stored numbers a user pays for)."""
    consts = sum(m.const.numel() for m in model.modules() if getattr(m, "const", None) is not None)
    return sum(p.numel() for p in model.parameters()) + consts


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of the convs and linear layers for one image (the 'FLOPs' of
    CNN papers; BN, ReLU, adds, gathers are not counted). Folded constant maps count."""
    total = [0]

    def hook(m: nn.Module, inp, out) -> None:
        if isinstance(m, nn.Conv2d):
            hw = out.shape[2] * out.shape[3]
            total[0] += m.weight.numel() * hw
            if getattr(m, "const", None) is not None:
                total[0] += m.const.numel() * hw
        else:
            total[0] += m.weight.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    noise = [(m, m.enabled) for m in model.modules() if isinstance(m, BlockNoise)]
    was_training = model.training
    try:
        for m, _ in noise:
            m.enabled = False
        model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        for m, on in noise:
            m.enabled = on
        model.train(was_training)
    return total[0]


def paper_pruned_params(model: nn.Module, layers: list[str]) -> int:
    """The paper's arithmetic: parameters minus every weight of the zero input slices of the
    quantized convs ``layers`` (no BN channel or producing filter counted, nothing built)."""
    removed = 0
    for name, m in model.named_modules():
        if name in layers and isinstance(m, nn.Conv2d):
            w = m.quantized_weight() if hasattr(m, "quantized_weight") else m.weight
            zero = ~_live_in(w)
            removed += int(zero.sum()) * w.shape[0] * w.shape[2] * w.shape[3]
    return count_params(model) - removed


def prune_report(dense: nn.Module, pruned: nn.Module, arch: dict, layers: list[str]) -> dict:
    """Parameters and FLOPs before and after pruning, beside the paper's arithmetic."""
    shape = (arch["in_channels"], arch["input_size"], arch["input_size"])
    r = {"params": count_params(dense), "params_pruned": count_params(pruned),
         "params_paper_pruned": paper_pruned_params(dense, layers),
         "flops": count_flops(dense, shape), "flops_pruned": count_flops(pruned, shape)}
    r["params_ratio"] = r["params_pruned"] / r["params"]
    r["flops_ratio"] = r["flops_pruned"] / r["flops"]
    return r


def format_prune_report(r: dict) -> str:
    return (f"parameters: {r['params']:,} -> {r['params_pruned']:,} "
            f"({100 * r['params_ratio']:.1f}%; the paper's arithmetic gives "
            f"{r['params_paper_pruned']:,})\n"
            f"FLOPs (multiply-adds per image): {r['flops']:,} -> {r['flops_pruned']:,} "
            f"({100 * r['flops_ratio']:.1f}%)")


def efficiency_record(model: nn.Module, meta: dict, layers: list[str], sp: dict) -> dict:
    """Flat ``results.json`` keys: what pruning removes and the sizes before and after
    (``sp``: the model's ``sparsity_report``).

    For an already pruned model (an exported file) ``params_pruned`` is its own size and the
    dense-model figures are absent (None)."""
    rec = {k: sp[k] for k in ("removable_slices", "gathered_slices", "removable_channels",
                              "constant_channels")}
    cpu = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    arch = meta["arch"]
    if "pruned" in meta:
        shape = (arch["in_channels"], arch["input_size"], arch["input_size"])
        rec.update(params_pruned=count_params(cpu), flops_pruned=count_flops(cpu, shape),
                   params_paper_pruned=None, flops=None)
        return rec
    pruned, _ = prune(cpu, arch)
    r = prune_report(cpu, pruned, arch, layers)
    rec.update({k: r[k] for k in ("params_pruned", "params_paper_pruned", "flops", "flops_pruned")})
    return rec
