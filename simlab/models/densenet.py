"""``densenet_bc``: DenseNet-BC (Huang et al. 2017).

Bottleneck layers (1x1 conv to 4k channels) and compression 0.5 in the transitions; ``depth=100,
growth_rate=12`` is DenseNet-BC-100 (k=12), ``depth=190, growth_rate=40`` DenseNet-BC-190 (k=40).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from simlab.models._checks import check_positive_int


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth_rate: int) -> None:
        super().__init__()
        inner = 4 * growth_rate  # bottleneck width 4k (the "B" of DenseNet-BC)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class _Transition(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 100,
        growth_rate: int = 12,
        compression: float = 0.5,
    ) -> None:
        super().__init__()
        if not (isinstance(depth, int) and depth >= 10 and (depth - 4) % 6 == 0):
            raise ValueError(f"depth: DenseNet-BC needs depth = 6n + 4 (40, 100, 190, ...), got {depth!r}")
        check_positive_int("growth_rate", growth_rate)
        if not (isinstance(compression, (int, float)) and 0 < compression <= 1):
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        n = (depth - 4) // 6  # bottleneck layers per dense block (each has two convolutions)
        channels = 2 * growth_rate  # the BC stem has 2k filters
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for b in range(3):
            for _ in range(n):
                blocks.append(_DenseLayer(channels, growth_rate))
                channels += growth_rate
            if b < 2:
                out = int(math.floor(channels * compression))
                blocks.append(_Transition(channels, out))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


def densenet_bc(
    num_classes: int, in_channels: int = 3, depth: int = 100, growth_rate: int = 12, compression: float = 0.5
) -> DenseNetBC:
    """DenseNet-BC-depth (k = growth_rate); BC-100 k=12: 769,162 parameters for 10 classes."""
    return DenseNetBC(num_classes, in_channels, depth=depth, growth_rate=growth_rate, compression=compression)
