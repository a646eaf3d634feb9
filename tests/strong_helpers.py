"""Small trained models for the strong-attack and robustness tests (seconds on a CPU)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from robustq.data import load_dataset


class Round(nn.Module):
    """A hard-threshold input layer: pixels to {0, 1}. Its gradient is zero everywhere, the
    textbook way to mask gradients without adding any robustness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.round()


@functools.lru_cache(maxsize=None)
def fashion(n_train: int = 2000, n_test: int = 300):
    train, test, _ = load_dataset("fashion-mnist-10k")
    return (train.images[:n_train].float() / 255, train.labels[:n_train],
            test.images[:n_test].float() / 255, test.labels[:n_test])


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 5) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, x.shape[0], 100):
            loss = F.cross_entropy(model(x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@functools.lru_cache(maxsize=None)
def trained_mlp(masked: bool = False) -> nn.Module:
    """A naturally trained MLP on 2,000 Fashion-MNIST images; ``masked`` puts ``Round`` in
    front (and trains through it), so its input gradients are exactly zero."""
    torch.manual_seed(0)
    x, y, _, _ = fashion()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    return _fit(nn.Sequential(Round(), mlp) if masked else mlp, x, y)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()
