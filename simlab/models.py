"""Image classifiers used by the papers, CIFAR-style (32x32 input, no stem down-sampling).

Every model maps float images ``[B, C, H, W]`` to logits ``[B, K]`` and ends in a global average pool,
so any input size that survives the down-sampling works (32x32 CIFAR, 64x64 Tiny-ImageNet).

- ``resnet18`` / ``resnet34``: the CIFAR ResNet of He et al. 2016 as used by paper A (ResNet-18 on
  CIFAR-100) and paper B (ResNet-34 on CIFAR-10, "we follow [10]"): 3x3 stem, no max-pool,
  BasicBlock, stages ``[2, 2, 2, 2]`` / ``[3, 4, 6, 3]`` of widths 64-128-256-512.
- ``resnet20`` / ``resnet32`` / ``resnet56``: the CIFAR ResNets of He et al. 2016 §4.2 (ResNet-(6n+2), 3
  stages of n BasicBlocks at 16-32-64 channels), with the paper's option A shortcuts (parameter-free:
  stride-2 subsampling, zero-padded channels; ``shortcut="B"`` for 1x1 projections). 0.27M / 0.46M /
  0.85M parameters: CPU-scale members of the papers' family (ResNet-20: ~41M multiply-adds per image).
- ``wrn``: WideResNet-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016), pre-activation blocks with
  dropout between the convolutions. Paper A's "WRN with {16, 16, 32, 64} filters" is ``widen_factor=1``
  (the stem has 16 filters and the three groups 16k, 32k, 64k); ``wrn28_1`` names that configuration
  with depth 28 (the paper does not state the depth). Depth and width are free (depth = 6n + 4), so
  CPU-sized nets are ``model_args={"depth": 16, "widen_factor": 1}`` (WRN-16-1, 0.18M parameters).
- ``densenet_bc``: DenseNet-BC (Huang et al. 2017), bottleneck layers (1x1 conv to 4k channels) and
  compression 0.5 in the transitions; ``depth=100, growth_rate=12`` is DenseNet-BC-100 (k=12),
  ``depth=190, growth_rate=40`` DenseNet-BC-190 (k=40).
- ``small_cnn``: four conv layers, fast on CPU (tests, quickstart); 1- or 3-channel input.

Initialisation: pass ``generator`` to :func:`build_model` to draw every initial weight from it
(reproducible without touching the global RNG); otherwise PyTorch's default RNG is used.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# small_cnn
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


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016, the widely used CIFAR variant: 3x3 stem, no max-pool)
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


# ---------------------------------------------------------------------------------------------
# WideResNet (Zagoruyko & Komodakis 2016)
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
        _check_positive_int("widen_factor", widen_factor)
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


# ---------------------------------------------------------------------------------------------
# DenseNet-BC (Huang et al. 2017)
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
        _check_positive_int("growth_rate", growth_rate)
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


def small_cnn(num_classes: int, in_channels: int = 3, width: int = 32) -> SmallCNN:
    _check_positive_int("width", width)
    return SmallCNN(num_classes, in_channels, width)


# ---------------------------------------------------------------------------------------------
MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "wrn": wrn,
    "wrn28_1": wrn28_1,
    "densenet_bc": densenet_bc,
}


def build_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    generator: torch.Generator | None = None,
    **model_args: Any,
) -> nn.Module:
    """``MODELS[name](num_classes, in_channels, **model_args)``: float ``[B, C, H, W]`` -> logits ``[B, K]``.

    With ``generator``, every weight is (re-)initialised from it (conv: Kaiming normal, fan-out; linear:
    PyTorch's default uniform; batch norm: 1/0), so two calls with equally seeded generators give equal
    models without touching the global RNG.
    """
    if not isinstance(name, str) or name not in MODELS:
        close = difflib.get_close_matches(str(name), list(MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"model: unknown name {name!r}{hint}; valid names are: {', '.join(MODELS)}")
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    factory = MODELS[name]
    check_model_args(name, model_args)
    if generator is None:
        model = factory(num_classes, in_channels, **model_args)
    else:
        # Built on the meta device (no global RNG draws, no memory), then every tensor is drawn from
        # `generator`: the model is a function of the generator's state alone.
        with torch.device("meta"):
            model = factory(num_classes, in_channels, **model_args)
        model = model.to_empty(device=generator.device)
        init_weights(model, generator=generator)
    logger.debug("built %s (%d parameters)", name, count_parameters(model))
    return model


# Annotations `check_model_args` can check a value against (the builders' own, as strings).
_ANNOTATION_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": (
        "a finite number",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    ),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
}


def check_model_args(name: str, model_args: Any) -> None:
    """ValueError naming the bad entry unless ``model_args`` fit ``MODELS[name]``'s signature: every key
    a parameter of the builder (a did-you-mean for a typo), every value of its annotated type; then the
    model is built on the meta device (no memory, no RNG) so the builder's own value checks run too.
    """
    if not isinstance(model_args, dict):
        raise ValueError(f"model_args: expected a mapping of argument -> value, got {model_args!r}")
    factory = MODELS[name]
    params = {
        p.name: p
        for p in inspect.signature(factory).parameters.values()
        if p.name not in ("num_classes", "in_channels")
    }
    unknown = sorted(k for k in model_args if k not in params)
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(params), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"model_args: {name!r} does not accept {', '.join(hints)}; "
            f"valid arguments are: {', '.join(params) or '(none)'}"
        )
    for key, value in model_args.items():
        check = _ANNOTATION_CHECKS.get(str(params[key].annotation))
        if check is not None and not check[1](value):
            raise ValueError(f"model_args.{name}.{key}: expected {check[0]}, got {value!r}")
    try:
        with torch.device("meta"):
            factory(10, 3, **model_args)
    except (ValueError, TypeError, AssertionError, ZeroDivisionError) as err:
        raise ValueError(f"model_args.{name}: {err}") from err


@torch.no_grad()
def init_weights(model: nn.Module, *, generator: torch.Generator) -> nn.Module:
    """Re-initialise conv, linear and batch-norm parameters of ``model`` from ``generator`` (in place).

    Every parameter and buffer of ``model`` must belong to one of these layers (a ``TypeError`` names
    any other layer type holding tensors), so nothing is left uninitialised.
    """
    for m in model.modules():
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if own and not isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            raise TypeError(f"init_weights: no rule for {type(m).__name__} layers, which hold tensors")
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            # Same distribution as nn.Linear.reset_parameters: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound, generator=generator)
            if m.bias is not None:
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            m.reset_running_stats()
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all of them, or only those with ``requires_grad``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_positive_int(name: str, value: Any) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
