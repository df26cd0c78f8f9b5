"""What a similarity source reads and where it runs: the training split of an ``ImageData``, its number
of classes, the compute device, and the ``info`` dict a source fills (see `simlab.similarity.sources`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["num_classes", "put_info", "resolve_device", "train_xy"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → CUDA when available else CPU; ``"cuda"`` without CUDA is a ValueError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: got {device!r} but CUDA is not available")
    return dev


def num_classes(data: Any) -> int:
    """``K`` of an ``ImageData`` (its ``class_names``, at least 2)."""
    names = getattr(data, "class_names", None)
    if not isinstance(names, Sequence) or isinstance(names, str) or len(names) < 2:
        raise ValueError(f"data: expected an ImageData with at least 2 class_names, got {names!r}")
    return len(names)


def train_xy(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_x uint8 [N, C, H, W], train_y int64 [N])``: the only images a source may read."""
    x, y = getattr(data, "train_x", None), getattr(data, "train_y", None)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() < 2:
        raise ValueError(
            "data.train_x: expected a uint8 tensor [N, C, H, W], got "
            f"{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}"
        )
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"data.train_y: expected integer labels [{x.shape[0]}], got {tuple(getattr(y, 'shape', ()))}"
        )
    return x, y.long()


def put_info(info: dict[str, Any] | None, **values: Any) -> None:
    """Record metadata in a source's ``info`` dict (None: nothing to record)."""
    if info is not None:
        info.update(values)
