"""The fast path changes how, not what: channels_last and the fused noise compute the same."""
from __future__ import annotations

import torch

from robustq.build import Arch, build_model
from robustq.models import set_noise
from robustq.quant import set_relaxation
from robustq.runtime import resolve_precision


def test_channels_last_computes_the_same_function_and_gradients():
    torch.manual_seed(0)
    model, _ = build_model(Arch(8, 2, 0.1, 3, 10, 16), "4bit")
    set_relaxation(model, 3.0)
    model.train()
    set_noise(model, False)
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    out = model(x)
    g, = torch.autograd.grad(out.square().sum(), x)
    model_cl = model.to(memory_format=torch.channels_last)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out_cl = model_cl(x_cl)
    g_cl, = torch.autograd.grad(out_cl.square().sum(), x_cl)
    assert torch.allclose(out, out_cl, atol=1e-5)
    assert torch.allclose(g, g_cl, atol=1e-5, rtol=1e-4)


def test_noise_statistics_are_the_same_in_both_layouts():
    x = torch.randn(64, 16, 12, 12)
    from robustq.models.enresnet import GaussianBlockNoise
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf = x.contiguous(memory_format=fmt)
        z = (GaussianBlockNoise.apply(xf, 0.1) - xf) / (0.1 * xf.std())
        assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
        # independent across channels: no correlation between neighbouring channels
        corr = torch.corrcoef(torch.stack([z[:, 0].flatten(), z[:, 1].flatten()]))[0, 1]
        assert abs(corr.item()) < 0.05


def test_auto_precision_is_a_known_value():
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
