"""Datasets as uint8 tensors, a seeded stratified validation split, and device-resident batches.

``load_dataset(name, ...)`` returns an :class:`ImageData` whose images are uint8 ``[N, C, H, W]``
tensors: the training split minus a held-out validation split (stratified, seeded by ``seed``,
``val_fraction`` of the training set), optionally reduced to ``subset_per_class`` images per class,
and the official test split. The trainer keeps them on its device and builds each batch with
:func:`epoch_batches` (index batches of a seeded permutation) and :func:`prepare_images` (normalise,
and random crop with 4-pixel zero padding + horizontal flip as tensor ops, no per-sample Python).

Datasets (``DATASETS``):

- ``cifar10``: from ``data_dir`` = an image-folder zip (``.../{train,test}/<class>/*.jpg``, e.g.
  ``../shared/data/cifar10-jpeg.zip``), an extracted folder with that layout, or a torchvision root
  (``cifar-10-batches-py``; ``download=True`` fetches it when missing, ``data_dir=None`` uses
  ``<cache_dir>/torchvision``).
- ``cifar100``: the same two options: an image-folder zip/folder (100 class folders named as
  torchvision's fine labels, e.g. ``aquarium_fish``) or a torchvision root (``cifar-100-python``).
- ``tinyimagenet``: the standard ``tiny-imagenet-200`` folder or zip (``train/<wnid>/images/*.JPEG``,
  ``val/images`` + ``val/val_annotations.txt``); its labelled ``val`` set is our test split. Class names
  are the wnids in sorted order; ``info["words"]`` holds ``words.txt``'s names when present.
- ``imagefolder``: any ``train/`` + ``test/`` (or ``val/``) ImageFolder layout, folder or zip, classes
  in sorted folder-name order (as torchvision's ImageFolder).
- ``digits``: scikit-learn's 1,797 8x8 digits, bilinearly upsampled to 32x32, one channel; the offline
  default. It has no official test split, so ``test_fraction`` (0.2) of it, stratified, is held out with
  the fixed seed ``DIGITS_TEST_SEED`` — the same test set for every ``seed``.
- ``synthetic``: seeded images with a known two-level class hierarchy (for tests): ``num_classes``
  classes in ``num_superclasses`` superclasses; class prototype = superclass prototype + a smaller class
  offset (both smooth, low-resolution patterns); sample = prototype + pixel noise. So class distances
  reflect the hierarchy; ``info["superclass"]`` gives each class's superclass.

Decoded images (the zip/folder/Tiny-ImageNet sources) are cached once under
``<cache_dir>/datasets/`` as an uncompressed ``.npz`` with a sha256 checksum of its arrays, keyed by the
source's identity (the zip's sha256, or the folder's file list with sizes and mtimes), written
atomically; a cache that fails its checksum is rebuilt. torchvision's CIFAR pickles (already uint8
arrays, md5-verified by torchvision), digits and synthetic are cheap to build and are not cached.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simlab._validate import did_you_mean
from simlab.class_names import CIFAR10_CLASSES
from simlab.config import default_cache_dir
from simlab.data.batches import epoch_batches, prepare_images, resize_images, uniform_noise_images
from simlab.data.cache import CACHE_VERSION
from simlab.data.generated import DIGITS_TEST_SEED, read_digits, read_synthetic
from simlab.data.readers import read_cifar10, read_cifar100, read_imagefolder, read_tinyimagenet
from simlab.data.splits import (
    SPLIT_VERSION,
    ImageData,
    RawImages,
    channel_stats,
    check_split_args,
    split_dataset,
)

logger = logging.getLogger(__name__)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    subset_per_class: int | None = None,
    seed: int = 0,
    **kw: Any,
) -> ImageData:
    """Load dataset ``name`` (a ``DATASETS`` key), split off a stratified validation set, optionally subset.

    ``kw`` are the dataset's own options (e.g. ``download`` for torchvision sources, ``num_classes``
    for ``synthetic``); an unknown one is a ``ValueError`` listing the valid ones.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"dataset: unknown name {name!r}{did_you_mean(name, DATASETS)}; "
            f"valid names are: {', '.join(DATASETS)}"
        )
    return DATASETS[name](
        data_dir=data_dir,
        cache_dir=cache_dir,
        val_fraction=val_fraction,
        subset_per_class=subset_per_class,
        seed=seed,
        **kw,
    )


def _make_loader(name: str, raw_fn: Callable[..., RawImages]) -> Callable[..., ImageData]:
    params = inspect.signature(raw_fn).parameters
    options = [p for p in params if p not in ("data_dir", "cache_dir")]

    def load(
        *,
        data_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        val_fraction: float = 0.1,
        subset_per_class: int | None = None,
        seed: int = 0,
        **kw: Any,
    ) -> ImageData:
        # Validate everything before any decoding.
        check_split_args(val_fraction, subset_per_class, seed)
        unknown = sorted(k for k in kw if k not in options)
        if unknown:
            raise ValueError(
                f"dataset {name!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"valid options are: {', '.join(options) or '(none)'}"
            )
        for arg, value in (("data_dir", data_dir), ("cache_dir", cache_dir)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(
                    f"{arg} must be a path (str or os.PathLike) or None, got {type(value).__name__}"
                )
        raw = raw_fn(data_dir=data_dir, cache_dir=_resolve_cache_dir(cache_dir), **kw)
        return split_dataset(
            raw, name=name, val_fraction=val_fraction, subset_per_class=subset_per_class, seed=seed
        )

    # read by check_dataset_args / dataset_channels (cheap: no decoding)
    load.options = tuple(options)  # type: ignore[attr-defined]
    load.defaults = {p: params[p].default for p in options}  # type: ignore[attr-defined]
    load.__name__ = load.__qualname__ = f"load_{name}"
    load.__doc__ = raw_fn.__doc__
    return load


def _resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        cache_dir = default_cache_dir()
    return Path(cache_dir)


def check_dataset_args(name: str, args: Any, *, field: str = "dataset_args") -> None:
    """Cheap check (no decoding) of a dataset's own options ``args`` against its loader: an unknown
    dataset or option is the loaders' ``ValueError`` (naming ``field``, the config field)."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"dataset: unknown name {name!r}{did_you_mean(str(name), DATASETS)}; "
            f"valid names are: {', '.join(DATASETS)}"
        )
    options = DATASETS[name].options  # type: ignore[attr-defined]
    unknown = sorted(k for k in args if k not in options)
    if unknown:
        raise ValueError(
            f"{field}: dataset {name!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options are: {', '.join(options) or '(none)'}"
        )


# Image channels of the datasets whose readers have no ``channels`` option (digits: grey; others RGB).
_CHANNELS: dict[str, int] = {"digits": 1}


def dataset_channels(name: str, args: Any = None) -> int:
    """The number of image channels dataset ``name`` gives with loader options ``args``, without loading
    it: its ``channels`` option (given or default) where it has one, else the dataset's fixed count."""
    check_dataset_args(name, args or {})
    loader = DATASETS[name]
    if "channels" in loader.options:  # type: ignore[attr-defined]
        return int({**loader.defaults, **(args or {})}["channels"])  # type: ignore[attr-defined]
    return _CHANNELS.get(name, 3)


def load_split(cfg: Any) -> ImageData:
    """The data split a training config (`simlab.config.TrainConfig`) names: `load_dataset` with its
    ``dataset``, ``data_dir``, ``resolved_cache_dir``, ``val_fraction``, ``subset_per_class``, ``seed``
    and ``dataset_args`` (the loader's own options) — the one place a config becomes a dataset (fit,
    the sweep driver, the trials)."""
    check_dataset_args(cfg.dataset, cfg.dataset_args)
    return load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        cache_dir=cfg.resolved_cache_dir,
        val_fraction=cfg.val_fraction,
        subset_per_class=cfg.subset_per_class,
        seed=cfg.seed,
        **cfg.dataset_args,
    )


DATASETS: dict[str, Callable[..., ImageData]] = {
    "cifar10": _make_loader("cifar10", read_cifar10),
    "cifar100": _make_loader("cifar100", read_cifar100),
    "tinyimagenet": _make_loader("tinyimagenet", read_tinyimagenet),
    "imagefolder": _make_loader("imagefolder", read_imagefolder),
    "digits": _make_loader("digits", read_digits),
    "synthetic": _make_loader("synthetic", read_synthetic),
}

__all__ = [
    "CACHE_VERSION",
    "CIFAR10_CLASSES",
    "DATASETS",
    "DIGITS_TEST_SEED",
    "SPLIT_VERSION",
    "ImageData",
    "RawImages",
    "channel_stats",
    "check_dataset_args",
    "dataset_channels",
    "epoch_batches",
    "load_dataset",
    "load_split",
    "prepare_images",
    "resize_images",
    "split_dataset",
    "uniform_noise_images",
]
