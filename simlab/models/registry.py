"""The model registry: `MODELS` (name -> builder), `build_model`, `check_model_args`, `init_weights`,
`count_parameters`.

Every builder is ``builder(num_classes, in_channels, **model_args) -> nn.Module`` mapping float images
``[B, C, H, W]`` to logits ``[B, K]``; the families live one per module beside this one.
Initialisation: pass ``generator`` to :func:`build_model` to draw every initial weight from it
(reproducible without touching the global RNG); otherwise PyTorch's default RNG is used.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from simlab._validate import did_you_mean, unknown_name
from simlab.models._checks import check_positive_int
from simlab.models.densenet import densenet_bc
from simlab.models.resnet import resnet18, resnet20, resnet32, resnet34, resnet56
from simlab.models.small import small_cnn
from simlab.models.wide_resnet import wrn, wrn28_1

logger = logging.getLogger(__name__)


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
        raise ValueError(unknown_name("model", name, MODELS))
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
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
        hints = [f"{k!r}{did_you_mean(k, params)}" for k in unknown]
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
