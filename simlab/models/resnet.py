"""CIFAR ResNets of He et al. 2016 (the widely used CIFAR variant: 3x3 stem, no max-pool, BasicBlock).

- ``resnet18`` / ``resnet34``: as used by paper A (ResNet-18 on CIFAR-100) and paper B (ResNet-34 on
  CIFAR-10, "we follow [10]"): stages ``[2, 2, 2, 2]`` / ``[3, 4, 6, 3]`` of widths 64-128-256-512.
- ``resnet20`` / ``resnet32`` / ``resnet56``: the CIFAR ResNets of He et al. 2016 §4.2 (ResNet-(6n+2), 3
  stages of n BasicBlocks at 16-32-64 channels), with the paper's option A shortcuts (parameter-free:
  stride-2 subsampling, zero-padded channels; ``shortcut="B"`` for 1x1 projections). 0.27M / 0.46M /
  0.85M parameters: CPU-scale members of the papers' family (ResNet-20: ~41M multiply-adds per image).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _ShortcutA(nn.Module):
    """Option A shortcut: parameter-free identity, subsampled by the stride, extra channels zero-padded."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, cin, H/s, W/s)
        # F.pad's pairs run from the last dimension: (W, W, H, H, C_front, C_back). The zero channels are
        # split before/after as in akamaster's widely used port; where they go changes nothing learnable.
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if (stride != 1 or cin != cout) and shortcut == "A":
            self.shortcut = _ShortcutA(cin, cout, stride)
        elif stride != 1 or cin != cout:
            # Projection shortcut (option B of He et al.) whenever the shape changes.
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem conv(``width``), then ``len(blocks)`` stages of BasicBlocks, the channels doubling and the
    feature map halving (first block stride 2) at each new stage, global average pool, linear."""

    def __init__(
        self,
        blocks: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, cout, stride, shortcut))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(out), 1))


def resnet18(num_classes: int, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-18: 11,173,962 parameters for 10 classes."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels)


def resnet34(num_classes: int, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-34: 21,282,122 parameters for 10 classes."""
    return ResNet((3, 4, 6, 3), num_classes, in_channels)


# CIFAR ResNet-20/32/56 (He et al. 2016 §4.2): ResNet-(6n+2), 3 stages of n blocks at 16, 32, 64 channels
# (feature maps 32, 16, 8). The paper's CIFAR nets use option A shortcuts (0.27M / 0.46M / 0.85M).
def resnet20(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    """CIFAR ResNet-20 (n = 3): 269,722 parameters for 10 classes (option A; 272,474 with option B)."""
    return ResNet((3, 3, 3), num_classes, in_channels, width=16, shortcut=shortcut)


def resnet32(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    """CIFAR ResNet-32 (n = 5): 464,154 parameters for 10 classes (option A; 466,906 with option B)."""
    return ResNet((5, 5, 5), num_classes, in_channels, width=16, shortcut=shortcut)


def resnet56(num_classes: int, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    """CIFAR ResNet-56 (n = 9): 853,018 parameters for 10 classes (option A; 855,770 with option B)."""
    return ResNet((9, 9, 9), num_classes, in_channels, width=16, shortcut=shortcut)
