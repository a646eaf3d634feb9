"""Pre-activation ResNet for small images (He et al. 2016, "Identity Mappings"), CIFAR variant.

Depth ``6n + 2``: a 3x3 stem conv (in -> 16, no BN/ReLU after it), three stages of ``n``
blocks with widths 16/32/64 and strides 1/2/2, then BN-ReLU-global-average-pool-linear.

A block is ``BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3`` plus a shortcut. When the shape
changes the shortcut is a 1x1 conv (stride s, no BN, no bias) applied to the block's
BN-ReLU'd input; otherwise it is the identity on the raw input. The block output (after the
residual sum) passes through ``noise_layer``: identity for a plain ResNet, Gaussian block
noise for an EnResNet member (see ``enresnet.py``).

Parameter counts match the paper's reference code (docs/method.md), e.g. ResNet20 with 3 input channels and 10
classes has 272,282 parameters. Any input size from 8x8 up works (global average pooling).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NoiseLayer = Callable[[], nn.Module]


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, noise_layer: NoiseLayer,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn1 = norm_layer(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.noise = noise_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        # the projection shortcut reads the pre-activated input; the identity one the raw input
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return self.noise(out + shortcut)


class PreActResNet(nn.Module):
    """One pre-activation ResNet of depth 6n+2. Inputs are [0, 1] pixels (no normalization,
    as in the reference code)."""

    def __init__(self, depth: int = 20, in_channels: int = 3, num_classes: int = 10,
                 noise_layer: NoiseLayer = nn.Identity, widths: tuple[int, ...] = (16, 32, 64)
                 ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(PreActBlock(in_planes, planes, stride, noise_layer))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(x))                     # (B, 64, H/4, W/4)
        out = torch.relu(self.bn(out)).mean(dim=(2, 3))      # global average pool -> (B, 64)
        return self.linear(out)                              # (B, classes)
