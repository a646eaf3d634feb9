"""Architectures: parameter counts (REFERENCE.md section 3), shapes, noise and ensembles."""
from __future__ import annotations

import pytest
import torch

from robustq.models import Ensemble, enresnet, has_noise, model_name, set_noise
from robustq.models.enresnet import GaussianBlockNoise


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("depth,ensemble,classes,expected", [
    (20, 1, 10, 272_282), (20, 5, 10, 1_361_410), (56, 1, 10, 855_578),
    (56, 2, 10, 1_711_156), (110, 1, 10, 1_730_522), (110, 1, 100, 1_736_372),
])
def test_parameter_counts_match_reference(depth, ensemble, classes, expected):
    assert n_params(enresnet(depth, ensemble, 0.1, 3, classes)) == expected


def test_resnet38_is_the_documented_stand_in_for_the_papers_resnet34():
    assert round(n_params(enresnet(38, 1, 0.0, 3, 10)) / 1e6, 2) == 0.56


@pytest.mark.parametrize("depth", [8, 20, 32, 44, 56, 110])
def test_any_depth_6n_plus_2_builds_and_runs(depth):
    m = enresnet(depth, 1, 0.1, 3, 10).eval()
    assert m(torch.rand(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("channels,size,classes", [(1, 28, 10), (3, 32, 100), (3, 8, 7), (4, 12, 2)])
def test_inputs_of_any_channels_and_size(channels, size, classes):
    m = enresnet(8, 2, 0.1, channels, classes)
    assert m(torch.rand(3, channels, size, size)).shape == (3, classes)


@pytest.mark.parametrize("depth", [7, 21, 2])
def test_bad_depth_is_refused(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        enresnet(depth)


def test_noise_on_is_random_off_is_deterministic():
    m = enresnet(8, 1, 0.1, 3, 10).eval()
    x = torch.rand(4, 3, 16, 16)
    assert has_noise(m)
    assert not torch.equal(m(x), m(x))
    set_noise(m, False)
    assert not has_noise(m)
    assert torch.equal(m(x), m(x))
    plain = enresnet(8, 1, 0.0, 3, 10).eval()
    assert not has_noise(plain) and torch.equal(plain(x), plain(x))


def test_noise_is_scaled_by_the_tensor_std():
    x = torch.randn(8, 16, 10, 10) * 3.0
    torch.manual_seed(1)
    out = GaussianBlockNoise.apply(x, 0.1)
    ratio = ((out - x).std() / (0.1 * x.std())).item()
    assert 0.95 < ratio < 1.05


@pytest.mark.parametrize("channels_last", [False, True])
def test_noise_backward_equals_autograd_of_the_formula(channels_last):
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    torch.manual_seed(3)
    out = GaussianBlockNoise.apply(x, 0.1)
    g = torch.randn_like(out)
    got, = torch.autograd.grad(out, x, g)
    # the same noise, through plain autograd: out = x + 0.1 * std(x) * z
    z = ((out - x) / (0.1 * x.std())).detach()
    ref_out = x + 0.1 * x.std() * z
    ref, = torch.autograd.grad(ref_out, x, g)
    assert torch.allclose(got, ref, atol=1e-12)


def test_ensemble_is_the_mean_of_member_logits():
    torch.manual_seed(0)
    m = enresnet(8, 3, 0.0, 3, 10).eval()
    x = torch.rand(2, 3, 8, 8)
    members = torch.stack([mem(x) for mem in m.members])
    assert torch.allclose(m(x), members.mean(0), atol=1e-6)
    with pytest.raises(ValueError):
        Ensemble([])


def test_names_follow_the_paper():
    assert model_name(20, 1, 0.1) == "En1ResNet20"
    assert model_name(56, 2, 0.1) == "En2ResNet56"
    assert model_name(20, 1, 0.0) == "ResNet20"
