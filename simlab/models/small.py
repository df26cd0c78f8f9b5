"""``small_cnn``: four conv layers, fast on CPU (tests, quickstart); 1- or 3-channel input."""

from __future__ import annotations

import torch
from torch import nn

from simlab.models._checks import check_positive_int


class SmallCNN(nn.Module):
    """Conv(w)-Conv(w)-pool-Conv(2w)-pool-Conv(4w)-GAP-Linear; ~0.1M parameters at ``width=32``."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, w),
            _conv_bn_relu(w, w),
            nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            _conv_bn_relu(w, 2 * w),
            nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            _conv_bn_relu(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def small_cnn(num_classes: int, in_channels: int = 3, width: int = 32) -> SmallCNN:
    check_positive_int("width", width)
    return SmallCNN(num_classes, in_channels, width)
