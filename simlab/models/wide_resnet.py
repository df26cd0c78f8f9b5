"""``wrn``: WideResNet-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016).

Pre-activation blocks with dropout between the convolutions. Paper A's "WRN with {16, 16, 32, 64}
filters" is ``widen_factor=1`` (the stem has 16 filters and the three groups 16k, 32k, 64k); ``wrn28_1``
names that configuration with depth 28 (the paper does not state the depth). Depth and width are free
(depth = 6n + 4), so CPU-sized nets are ``model_args={"depth": 16, "widen_factor": 1}`` (WRN-16-1, 0.18M
parameters).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from simlab.models._checks import check_positive_int


class WideBasic(nn.Module):
    """Pre-activation block BN-ReLU-conv3x3-dropout-BN-ReLU-conv3x3 (the paper's B(3,3) with dropout)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input, as in the authors' code.
        short = x if self.shortcut is None else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + short


class WideResNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not (isinstance(depth, int) and depth >= 10 and (depth - 4) % 6 == 0):
            raise ValueError(
                f"depth: WideResNet needs depth = 6n + 4 (10, 16, 22, 28, 40, ...), got {depth!r}"
            )
        check_positive_int("widen_factor", widen_factor)
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        cin = widths[0]
        for g, cout in enumerate(widths[1:]):
            for j in range(n):
                layers.append(WideBasic(cin, cout, 2 if (g > 0 and j == 0) else 1, float(dropout)))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


def wrn(
    num_classes: int, in_channels: int = 3, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0
):
    """WRN-depth-widen_factor; WRN-28-10: 36,479,194 parameters, WRN-16-4: 2,748,890 (10 classes)."""
    return WideResNet(num_classes, in_channels, depth=depth, widen_factor=widen_factor, dropout=dropout)


def wrn28_1(num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """Paper A's "WRN with {16, 16, 32, 64} filters" (widen factor 1; depth 28 is our choice)."""
    return WideResNet(num_classes, in_channels, depth=28, widen_factor=1, dropout=dropout)
