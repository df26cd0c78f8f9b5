"""ImageData, the stratified seeded validation split, class-balanced subsets and channel statistics."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

SPLIT_VERSION = 1  # bump when the validation/subset split algorithm changes (part of ImageData.identity)


# ---------------------------------------------------------------------------------------------
@dataclass
class ImageData:
    """A dataset split three ways, images as uint8 ``[N, C, H, W]`` tensors, labels int64 ``[N]``."""

    name: str  # DATASETS key
    class_names: list[str]  # label order
    train_x: torch.Tensor  # uint8 [N, C, H, W] (training split minus validation, maybe subset)
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor  # uint8 held-out validation split (from the training set)
    val_y: torch.Tensor
    test_x: torch.Tensor  # uint8 official test split
    test_y: torch.Tensor
    mean: tuple[float, ...]  # per-channel mean of train_x in [0, 1] units, for normalisation
    std: tuple[float, ...]  # per-channel population std of train_x in [0, 1] units
    identity: str  # stable id of (dataset, source, its parameters, split seed, val_fraction, subset)
    info: dict[str, Any] = field(default_factory=dict)  # dataset extras (superclasses, wnid words)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> ImageData:
        """A copy with every tensor on ``device`` (uint8 stays uint8: 4x less memory than float)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)


@dataclass
class RawImages:
    """A dataset before the validation split: official train/test splits, uint8 ``[N, C, H, W]``."""

    class_names: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # identity of the raw data and every parameter that shaped it
    info: dict[str, Any] = field(default_factory=dict)


def check_split_args(val_fraction: Any, subset_per_class: Any, seed: Any) -> None:
    if not (
        isinstance(val_fraction, (int, float))
        and not isinstance(val_fraction, bool)
        and 0 <= val_fraction < 1
    ):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if subset_per_class is not None and not (
        isinstance(subset_per_class, int) and not isinstance(subset_per_class, bool) and subset_per_class > 0
    ):
        raise ValueError(f"subset_per_class must be a positive integer or None, got {subset_per_class!r}")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def split_dataset(
    raw: RawImages, *, name: str, val_fraction: float, subset_per_class: int | None, seed: int
) -> ImageData:
    """Stratified validation split of ``raw``'s training set, then an optional class-balanced subset.

    Per class c with n_c training images, a ``torch.randperm`` (generator seeded by ``seed``, classes in
    label order) sends the first ``round(n_c * val_fraction)`` to validation and, of the rest, keeps the
    first ``subset_per_class`` (all when None) for training. Indices are kept in their original order.
    """
    check_split_args(val_fraction, subset_per_class, seed)
    generator = torch.Generator().manual_seed(seed)
    y = raw.train_y
    train_parts, val_parts = [], []
    for c in range(len(raw.class_names)):
        idx = torch.nonzero(y == c, as_tuple=True)[0]
        if idx.numel() == 0:
            raise ValueError(f"dataset {name!r}: class {c} ({raw.class_names[c]!r}) has no training images")
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_val = math.floor(idx.numel() * val_fraction + 0.5)
        val_parts.append(idx[:n_val])
        rest = idx[n_val:]
        if subset_per_class is not None:
            if rest.numel() < subset_per_class:
                raise ValueError(
                    f"subset_per_class={subset_per_class} but class {c} ({raw.class_names[c]!r}) has only "
                    f"{rest.numel()} training images after the validation split"
                )
            rest = rest[:subset_per_class]
        train_parts.append(rest)
    train_idx = torch.sort(torch.cat(train_parts)).values
    val_idx = torch.sort(torch.cat(val_parts)).values
    train_x = raw.train_x[train_idx]
    mean, std = channel_stats(train_x)
    identity = (
        f"{name}|{raw.source}|split=v{SPLIT_VERSION}|seed={seed}|val_fraction={float(val_fraction)!r}"
        f"|subset_per_class={subset_per_class}"
    )
    return ImageData(
        name=name,
        class_names=list(raw.class_names),
        train_x=train_x,
        train_y=raw.train_y[train_idx],
        val_x=raw.train_x[val_idx],
        val_y=raw.train_y[val_idx],
        test_x=raw.test_x,
        test_y=raw.test_y,
        mean=mean,
        std=std,
        identity=identity,
        info=dict(raw.info),
    )


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and population std of uint8 images ``[N, C, H, W]``, in [0, 1] units.

    Uses a 256-bin histogram per channel, so no float copy of the images is made.
    """
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"x must be a uint8 [N, C, H, W] tensor, got {x.dtype} of shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x has no images; cannot compute channel statistics")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1).cpu(), minlength=256).to(torch.float64)
        n = counts.sum()
        m = (counts * values).sum() / n
        var = (counts * (values - m) ** 2).sum() / n
        means.append(float(m))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


def stratified_holdout(
    y: torch.Tensor, num_classes: int, fraction: float, seed: int
) -> tuple[torch.Tensor, ...]:
    """(keep, held) index tensors: ``round(n_c * fraction)`` of each class held out, seeded."""
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in range(num_classes):
        idx = torch.nonzero(y == c, as_tuple=True)[0]
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_held = math.floor(idx.numel() * fraction + 0.5)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values
