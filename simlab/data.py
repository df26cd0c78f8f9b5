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
- ``cifar100``: a torchvision root (downloaded when missing, as above).
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

import dataclasses
import difflib
import fcntl
import functools
import hashlib
import inspect
import io
import json
import logging
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when decoding changes: old cache files are then ignored
SPLIT_VERSION = 1  # bump when the validation/subset split algorithm changes (part of ImageData.identity)
DIGITS_TEST_SEED = 0  # the digits test split is fixed, independent of the training seed
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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


# ---------------------------------------------------------------------------------------------
# Public entry point
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
        close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"dataset: unknown name {name!r}{hint}; valid names are: {', '.join(DATASETS)}")
    return DATASETS[name](
        data_dir=data_dir,
        cache_dir=cache_dir,
        val_fraction=val_fraction,
        subset_per_class=subset_per_class,
        seed=seed,
        **kw,
    )


def _make_loader(name: str, raw_fn: Callable[..., RawImages]) -> Callable[..., ImageData]:
    options = [p for p in inspect.signature(raw_fn).parameters if p not in ("data_dir", "cache_dir")]

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
        _check_split_args(val_fraction, subset_per_class, seed)
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

    load.__name__ = load.__qualname__ = f"load_{name}"
    load.__doc__ = raw_fn.__doc__
    return load


def _resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        from simlab.config import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir)


def _check_split_args(val_fraction: Any, subset_per_class: Any, seed: Any) -> None:
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


# ---------------------------------------------------------------------------------------------
# Splitting
def split_dataset(
    raw: RawImages, *, name: str, val_fraction: float, subset_per_class: int | None, seed: int
) -> ImageData:
    """Stratified validation split of ``raw``'s training set, then an optional class-balanced subset.

    Per class c with n_c training images, a ``torch.randperm`` (generator seeded by ``seed``, classes in
    label order) sends the first ``round(n_c * val_fraction)`` to validation and, of the rest, keeps the
    first ``subset_per_class`` (all when None) for training. Indices are kept in their original order.
    """
    _check_split_args(val_fraction, subset_per_class, seed)
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


def _stratified_holdout(
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


# ---------------------------------------------------------------------------------------------
# Device-resident batches
def epoch_batches(
    n: int,
    batch_size: int,
    *,
    generator: torch.Generator | None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Index batches (int64 ``[B]``) of one epoch over ``n`` samples, on ``device``.

    With a ``generator`` the order is ``torch.randperm(n, generator=generator)``; with ``None`` it is
    ``0..n-1`` (evaluation). ``drop_last`` drops a final batch shorter than ``batch_size``.
    """
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is None:
        order = torch.arange(n, device=device)
    else:
        # Drawn on the generator's device, then moved once: a CPU generator can drive a CUDA epoch.
        order = torch.randperm(n, generator=generator, device=generator.device).to(device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def prepare_images(
    x: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool,
    generator: torch.Generator | None,
    channels_last: bool = False,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """uint8 images ``[B, C, H, W]`` -> normalised float32 ``[B, C, H, W]`` on the same device.

    With ``augment``: each image is zero-padded by ``padding`` pixels, cropped back to ``H x W`` at a
    uniformly random offset in ``[0, 2 * padding]^2`` and, with ``flip``, mirrored left-right with
    probability 1/2 — torchvision's ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()`` — as two
    vectorised gathers (no per-sample Python). Draws (row offsets, column offsets, flips, ``[B]`` each)
    come from ``generator`` on its own device, so the result is deterministic given the generator.
    Padding happens on the uint8 image, so padded pixels normalise to ``-mean / std`` exactly as
    torchvision's pipeline does.
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a uint8 tensor [B, C, H, W], got {got}")
    b, c, h, w = x.shape
    mean_f = _channel_floats("mean", mean, c)
    std_f = _channel_floats("std", std, c)
    if not all(v > 0 for v in std_f):
        raise ValueError(f"std must be > 0 for every channel, got {std_f}")
    if augment:
        if not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator: augment=True needs a torch.Generator, got {type(generator).__name__}"
            )
        if not (isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0):
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
        x = _random_crop_flip(x, padding=padding, flip=flip, generator=generator)  # (B, C, H, W)
    # (x / 255 - mean) / std as one multiply-add.
    scale, shift = _normalisation(mean_f, std_f, x.device)  # (1, C, 1, 1) each, cached per device
    out = x.to(torch.float32) * scale - shift
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return out.contiguous(memory_format=fmt)


def _random_crop_flip(
    x: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    b, c, h, w = x.shape
    p = padding
    gdev = generator.device
    top = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=gdev).to(x.device)
    left = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=gdev).to(x.device)
    if flip:
        mirrored = torch.randint(0, 2, (b,), generator=generator, device=gdev).to(x.device).bool()
    else:
        mirrored = torch.zeros(b, dtype=torch.bool, device=x.device)
    padded = F.pad(x, (p, p, p, p)) if p > 0 else x  # (B, C, H+2p, W+2p), zeros around
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = top[:, None] + ar_h  # (B, H)
    # Flipping the crop = reading its columns right to left.
    cols = left[:, None] + torch.where(mirrored[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    # Two gathers (rows, then columns) beat one 3-index advanced-indexing gather on CPU and need no
    # NHWC copy; the result is NCHW-contiguous.
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))  # (B, C, H, W+2p)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)


def _channel_floats(name: str, values: Sequence[float], channels: int) -> tuple[float, ...]:
    """Validated per-channel constants as a tuple of floats (checked in Python: no device sync)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a sequence of {channels} floats, got {values!r}") from err
    if len(out) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {len(out)}: {out}")
    return out


@functools.lru_cache(maxsize=64)
def _normalisation(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # (x / 255 - mean) / std == x * scale - shift; made once per (mean, std, device), not per batch.
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=device)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32, device=device)
    return scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)


def uniform_noise_images(n: int, image_shape: Sequence[int], *, generator: torch.Generator) -> torch.Tensor:
    """uint8 ``[n, C, H, W]`` with i.i.d. uniform pixels in 0..255 — paper A §6.4's random-noise OOD set."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {image_shape!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8, device=generator.device)


# ---------------------------------------------------------------------------------------------
# Sources: a zip file or a folder, read by relative posix path
class _FileSource:
    """Read-only view of the files in a zip or a directory tree (listed and opened lazily)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._names: list[str] | None = None

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as err:
                raise ValueError(f"data_dir: {str(self.path)!r} is not a readable zip file ({err})") from err
        return self._zip

    @property
    def names(self) -> list[str]:
        """Relative posix paths of every file."""
        if self._names is None:
            if self.is_zip:
                self._names = [n for n in self._open().namelist() if not n.endswith("/")]
            else:
                names = []
                for root, _dirs, files in os.walk(self.path):
                    rel = Path(root).relative_to(self.path).as_posix()
                    names.extend(f if rel == "." else f"{rel}/{f}" for f in files)
                self._names = sorted(names)
        return self._names

    def read(self, name: str) -> bytes:
        if self.is_zip:
            return self._open().read(name)
        return (self.path / name).read_bytes()

    def identity(self, memo_dir: Path | None = None) -> str:
        """The zip's sha256, or a hash of the folder's (path, size, mtime) listing.

        A zip's sha256 is remembered in ``memo_dir`` under its (absolute path, size, mtime), so an
        unchanged zip is hashed once; any change to the file changes the memo key.
        """
        h = hashlib.sha256()
        if not self.is_zip:
            for n in self.names:
                st = (self.path / n).stat()
                h.update(f"{n}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            return f"folder-listing-sha256={h.hexdigest()}"
        st = self.path.stat()
        memo = None
        if memo_dir is not None:
            stamp = f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
            memo = memo_dir / f"{hashlib.sha256(stamp).hexdigest()[:32]}.sha256"
            if memo.is_file():
                digest = memo.read_text().strip()
                if len(digest) == 64:
                    return f"zip-sha256={digest}"
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if memo is not None:
            _atomic_write_bytes(memo, h.hexdigest().encode())
        return f"zip-sha256={h.hexdigest()}"

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _decode_images(
    source: _FileSource, names: Sequence[str], *, channels: int, image_size: int | None
) -> torch.Tensor:
    """Decode ``names`` with PIL into one uint8 ``[N, C, H, W]`` tensor (all of one size, or resized)."""
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[channels]
    out: np.ndarray | None = None
    for i, n in enumerate(names):
        with Image.open(io.BytesIO(source.read(n))) as im:
            if im.mode != mode:
                im = im.convert(mode)
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            a = np.asarray(im)
        if out is None:
            out = np.empty((len(names), *a.shape), dtype=np.uint8)
        if a.shape != out.shape[1:]:
            raise ValueError(
                f"image {n!r} in {str(source.path)!r} has shape {a.shape}, expected {out.shape[1:]} "
                "like the first image; pass image_size=... to resize"
            )
        out[i] = a
        if (i + 1) % 20000 == 0:
            logger.info("decoded %d / %d images from %s", i + 1, len(names), source.path)
    if out is None:
        raise ValueError(f"no images to decode in {str(source.path)!r}")
    if out.ndim == 3:  # grayscale (N, H, W)
        out = out[..., None]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _check_channels(channels: Any) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def _check_image_size(image_size: Any) -> None:
    if image_size is not None and not (isinstance(image_size, int) and image_size > 0):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")


def _image_folder_raw(
    path: Path, cache_dir: Path, *, kind: str, channels: int = 3, image_size: int | None = None
) -> RawImages:
    """``{train,test}/<class>/<image>`` (under one prefix) in a zip or folder, decoded once, cached."""
    source = _FileSource(path)
    try:
        source_id = source.identity(cache_dir / "datasets" / "sources")
        key_source = f"{kind}|{source_id}|channels={channels}|image_size={image_size}"

        def build() -> RawImages:
            layout = _find_split_layout(source)
            classes = sorted({cls for _, cls, _ in layout["train"]})
            unknown = sorted({cls for _, cls, _ in layout["test"]} - set(classes))
            if unknown:
                raise ValueError(f"data_dir: test classes {unknown} of {str(path)!r} have no training folder")
            logger.info("decoding %s from %s (once; cached under %s)", kind, path, cache_dir)
            index = {c: k for k, c in enumerate(classes)}
            parts = {}
            for split in ("train", "test"):
                entries = layout[split]
                x = _decode_images(
                    source, [n for _, _, n in entries], channels=channels, image_size=image_size
                )
                y = torch.tensor([index[cls] for _, cls, _ in entries], dtype=torch.int64)
                parts[split] = (x, y)
            return RawImages(classes, *parts["train"], *parts["test"], source=key_source)

        return _cached(cache_dir, kind, key_source, build)
    finally:
        source.close()


def _find_split_layout(source: _FileSource) -> dict[str, list[tuple[str, str, str]]]:
    """Group image paths ``<root>/<split>/<class>/<file>`` by split: ``{split: [(root, class, path)]}``.

    ``test`` falls back to ``val`` when there is no ``test`` folder. Exactly one ``root`` may hold them.
    """
    found: dict[str, dict[str, list[tuple[str, str, str]]]] = {}
    for n in source.names:
        parts = n.split("/")
        if len(parts) >= 3 and parts[-3] in ("train", "test", "val") and _is_image(n):
            root = "/".join(parts[:-3])
            found.setdefault(root, {}).setdefault(parts[-3], []).append((root, parts[-2], n))
    roots = sorted(
        r for r, splits in found.items() if "train" in splits and ("test" in splits or "val" in splits)
    )
    where = str(source.path)
    if not roots:
        raise FileNotFoundError(
            f"data_dir: no '<root>/train/<class>/<image>' + '<root>/test/<class>/<image>' layout in {where!r}"
        )
    if len(roots) > 1:
        raise ValueError(
            f"data_dir: several train/test layouts in {where!r} (under {roots}); point to one of them"
        )
    splits = found[roots[0]]
    test = splits.get("test", splits.get("val"))
    return {"train": sorted(splits["train"]), "test": sorted(test)}


# ---------------------------------------------------------------------------------------------
# The decoded-image cache
def _cached(cache_dir: Path, kind: str, key_source: str, build: Callable[[], RawImages]) -> RawImages:
    key = hashlib.sha256(f"{key_source}|cache=v{CACHE_VERSION}".encode()).hexdigest()[:24]
    path = cache_dir / "datasets" / f"{kind}-{key}.npz"
    raw = _try_cache(path, kind, key_source)
    if raw is not None:
        return raw
    # Several trials starting at once would each decode the same source: the first one to take the
    # lock decodes, the others wait and then read its cache file.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            raw = _try_cache(path, kind, key_source, quiet=True)
            if raw is None:
                raw = build()
                _write_cache(path, raw)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return raw


def _try_cache(path: Path, kind: str, key_source: str, *, quiet: bool = False) -> RawImages | None:
    """The cached dataset at ``path``, or None when it is missing, unreadable, corrupt or stale."""
    if not path.exists():
        return None
    try:
        raw = _read_cache(path)
        if raw.source != key_source:
            raise ValueError(f"source mismatch ({raw.source!r})")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        if not quiet:
            logger.warning("dataset cache %s is unreadable or corrupt (%s); rebuilding it", path, err)
        return None
    logger.debug("loaded %s from cache %s", kind, path)
    return raw


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def _array_checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in _ARRAYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _write_cache(path: Path, raw: RawImages) -> None:
    arrays = {k: getattr(raw, k).numpy() for k in _ARRAYS}
    meta = {
        "version": CACHE_VERSION,
        "class_names": list(raw.class_names),
        "source": raw.source,
        "info": raw.info,
        "sha256": _array_checksum(arrays),
    }
    _atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))
    logger.info("cached decoded dataset at %s", path)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` via a temp file in the same folder, fsync, ``os.replace``: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    _atomic_write(path, lambda f: f.write(payload))


def _read_cache(path: Path) -> RawImages:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in _ARRAYS}
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"cache version {meta.get('version')!r} != {CACHE_VERSION}")
    if _array_checksum(arrays) != meta["sha256"]:
        raise ValueError("array checksum mismatch")
    return RawImages(
        list(meta["class_names"]),
        *(torch.from_numpy(arrays[k]) for k in _ARRAYS),
        source=meta["source"],
        info=meta.get("info", {}),
    )


# ---------------------------------------------------------------------------------------------
# Dataset sources (each returns RawImages; DATASETS wraps them with the split)
def _torchvision_cifar(which: str, root: Path, download: bool) -> RawImages:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[which]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as err:
        action = "download it there" if download else "find it there (download=False)"
        raise FileNotFoundError(
            f"{which}: could not {action}: data_dir={str(root)!r} ({err}). Without internet access, pass "
            f"--data-dir / data_dir pointing to a torchvision root that holds the extracted CIFAR archive"
            + (
                " or to an image-folder zip/folder such as ../shared/data/cifar10-jpeg.zip"
                if which == "cifar10"
                else ""
            )
        ) from err

    def to_tensor(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    # torchvision verifies the archive's md5, so the content is fixed by the name.
    return RawImages(list(train.classes), *to_tensor(train), *to_tensor(test), source=f"torchvision-{which}")


def _cifar10(*, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> RawImages:
    """CIFAR-10 from an image-folder zip or folder, or a torchvision root (see the module docstring)."""
    if data_dir is None:
        return _torchvision_cifar("cifar10", cache_dir / "torchvision", download)
    path = Path(data_dir).expanduser()
    if path.suffix.lower() == ".zip" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"data_dir: no such file {str(path)!r}")
        raw = _image_folder_raw(path, cache_dir, kind="cifar10")
    elif path.is_dir() and (_has_split_folders(path) or any(_has_split_folders(p) for p in _subdirs(path))):
        raw = _image_folder_raw(path, cache_dir, kind="cifar10")
    else:
        return _torchvision_cifar("cifar10", path, download)
    if tuple(raw.class_names) != CIFAR10_CLASSES:
        raise ValueError(
            f"data_dir: {str(path)!r} has classes {raw.class_names}, "
            f"expected CIFAR-10's {list(CIFAR10_CLASSES)}"
        )
    return raw


def _cifar100(*, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> RawImages:
    """CIFAR-100 from a torchvision root (``data_dir``; default ``<cache_dir>/torchvision``)."""
    root = cache_dir / "torchvision" if data_dir is None else Path(data_dir).expanduser()
    return _torchvision_cifar("cifar100", root, download)


def _has_split_folders(path: Path) -> bool:
    return (path / "train").is_dir() and ((path / "test").is_dir() or (path / "val").is_dir())


def _subdirs(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir()]


def _imagefolder(
    *, data_dir: str | os.PathLike | None, cache_dir: Path, channels: int = 3, image_size: int | None = None
) -> RawImages:
    """Any ``train/<class>/*`` + ``test/<class>/*`` (or ``val/``) layout, as a folder or a zip."""
    _check_channels(channels)
    _check_image_size(image_size)
    if data_dir is None:
        raise ValueError(
            "data_dir: the 'imagefolder' dataset needs data_dir (a folder or zip with train/ and test/)"
        )
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data_dir: no such file or folder {str(path)!r}")
    return _image_folder_raw(path, cache_dir, kind="imagefolder", channels=channels, image_size=image_size)


def _tinyimagenet(
    *, data_dir: str | os.PathLike | None, cache_dir: Path, image_size: int | None = None
) -> RawImages:
    """Tiny-ImageNet-200 from its standard folder or zip; the labelled ``val`` set is the test split."""
    _check_image_size(image_size)
    if data_dir is None:
        raise ValueError("data_dir: 'tinyimagenet' needs data_dir (the tiny-imagenet-200 folder or zip)")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data_dir: no such file or folder {str(path)!r}")
    source = _FileSource(path)
    try:
        train: list[tuple[str, str]] = []  # (wnid, path)
        roots = set()
        for n in source.names:
            parts = n.split("/")
            if len(parts) >= 4 and parts[-4] == "train" and parts[-2] == "images" and _is_image(n):
                train.append((parts[-3], n))
                roots.add("/".join(parts[:-4]))
        if not train:
            raise FileNotFoundError(f"data_dir: no 'train/<wnid>/images/<image>' files in {str(path)!r}")
        if len(roots) > 1:
            raise ValueError(f"data_dir: several Tiny-ImageNet roots in {str(path)!r}: {sorted(roots)}")
        prefix = next(iter(roots))
        prefix = prefix + "/" if prefix else ""
        ann_name = f"{prefix}val/val_annotations.txt"
        if ann_name not in set(source.names):
            raise FileNotFoundError(f"data_dir: missing {ann_name!r} in {str(path)!r}")
        test: list[tuple[str, str]] = []
        for line in source.read(ann_name).decode().splitlines():
            if line.strip():
                fields = line.split("\t")
                test.append((fields[1], f"{prefix}val/images/{fields[0]}"))
        wnids = sorted({w for w, _ in train})
        unknown = sorted({w for w, _ in test} - set(wnids))
        if unknown:
            raise ValueError(
                f"data_dir: val_annotations.txt names wnids with no training images: {unknown[:5]}"
            )
        words_name = f"{prefix}words.txt"
        info: dict[str, Any] = {}
        if words_name in set(source.names):
            table = dict(
                line.split("\t", 1) for line in source.read(words_name).decode().splitlines() if "\t" in line
            )
            info["words"] = [table.get(w, w).strip() for w in wnids]
        train.sort(key=lambda t: t[1])
        test.sort(key=lambda t: t[1])
        key_source = (
            f"tinyimagenet|{source.identity(cache_dir / 'datasets' / 'sources')}|image_size={image_size}"
        )

        def build() -> RawImages:
            logger.info("decoding Tiny-ImageNet from %s (once; cached under %s)", path, cache_dir)
            index = {w: k for k, w in enumerate(wnids)}
            xs = [
                _decode_images(source, [n for _, n in s], channels=3, image_size=image_size)
                for s in (train, test)
            ]
            ys = [torch.tensor([index[w] for w, _ in s], dtype=torch.int64) for s in (train, test)]
            return RawImages(wnids, xs[0], ys[0], xs[1], ys[1], source=key_source, info=info)

        return _cached(cache_dir, "tinyimagenet", key_source, build)
    finally:
        source.close()


_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _digits(
    *, data_dir: str | os.PathLike | None, cache_dir: Path, test_fraction: float = 0.2, image_size: int = 32
) -> RawImages:
    """scikit-learn's 8x8 digits upsampled to ``image_size`` (1 channel); a fixed stratified test split."""
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    _check_image_size(image_size)
    if data_dir is not None:
        logger.warning("digits ships with scikit-learn; data_dir=%r is not used", str(data_dir))
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (
        torch.from_numpy(np.asarray(bunch.images, dtype=np.float32))[:, None] / 16.0
    )  # (N, 1, 8, 8), 0..16 -> [0, 1]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    keep, held = _stratified_holdout(y, 10, float(test_fraction), DIGITS_TEST_SEED)
    import sklearn

    source = (
        f"digits|sklearn={sklearn.__version__}|image_size={image_size}|test_fraction={float(test_fraction)!r}"
    )
    return RawImages(list(_DIGIT_NAMES), x[keep], y[keep], x[held], y[held], source=source)


def _synthetic(
    *,
    data_dir: str | os.PathLike | None,
    cache_dir: Path,
    num_classes: int = 10,
    num_superclasses: int = 2,
    samples_per_class: int = 60,
    test_samples_per_class: int = 20,
    image_size: int = 32,
    channels: int = 3,
    class_scale: float = 0.5,
    noise: float = 0.5,
    data_seed: int = 0,
) -> RawImages:
    """Seeded images with a two-level hierarchy: class k belongs to superclass ``k * G // K``.

    Prototypes are smooth (a 4x4 Gaussian pattern upsampled bilinearly): superclass pattern with unit
    scale plus a class offset scaled by ``class_scale`` (< 1 keeps classes of one superclass closer to
    each other than to other superclasses); a sample adds i.i.d. Gaussian pixel noise of scale ``noise``.
    Intensities map to uint8 as ``128 + 32 * value``, clipped.
    """
    for arg, value in (
        ("num_classes", num_classes),
        ("num_superclasses", num_superclasses),
        ("samples_per_class", samples_per_class),
        ("test_samples_per_class", test_samples_per_class),
        ("image_size", image_size),
    ):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if num_superclasses > num_classes:
        raise ValueError(f"num_superclasses must be <= num_classes ({num_classes}), got {num_superclasses}")
    _check_channels(channels)
    for arg, value in (("class_scale", class_scale), ("noise", noise)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{arg} must be a number >= 0, got {value!r}")
    if not (isinstance(data_seed, int) and data_seed >= 0):
        raise ValueError(f"data_seed must be a non-negative integer, got {data_seed!r}")
    if data_dir is not None:
        logger.warning("synthetic data is generated; data_dir=%r is not used", str(data_dir))

    g = torch.Generator().manual_seed(data_seed)
    k, s, c = num_classes, num_superclasses, channels
    superclass = [i * s // k for i in range(k)]

    def smooth(n: int) -> torch.Tensor:  # (n, C, size, size) low-frequency patterns, unit variance at 4x4
        low = torch.randn(n, c, 4, 4, generator=g)
        return F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)

    super_protos = smooth(s)
    class_offsets = smooth(k)
    protos = super_protos[torch.tensor(superclass)] + class_scale * class_offsets  # (K, C, H, W)

    def sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(k).repeat_interleave(per_class)
        v = protos[y] + noise * torch.randn(len(y), c, image_size, image_size, generator=g)
        return (128.0 + 32.0 * v).round().clamp(0, 255).to(torch.uint8), y

    train_x, train_y = sample(samples_per_class)
    test_x, test_y = sample(test_samples_per_class)
    params = (
        f"K={k},G={s},n={samples_per_class},n_test={test_samples_per_class},size={image_size},C={c},"
        f"class_scale={float(class_scale)!r},noise={float(noise)!r},data_seed={data_seed}"
    )
    names = [f"s{superclass[i]}_c{i}" for i in range(k)]
    return RawImages(
        names, train_x, train_y, test_x, test_y, source=f"synthetic|{params}", info={"superclass": superclass}
    )


DATASETS: dict[str, Callable[..., ImageData]] = {
    "cifar10": _make_loader("cifar10", _cifar10),
    "cifar100": _make_loader("cifar100", _cifar100),
    "tinyimagenet": _make_loader("tinyimagenet", _tinyimagenet),
    "imagefolder": _make_loader("imagefolder", _imagefolder),
    "digits": _make_loader("digits", _digits),
    "synthetic": _make_loader("synthetic", _synthetic),
}

__all__ = [
    "DATASETS",
    "ImageData",
    "RawImages",
    "load_dataset",
    "split_dataset",
    "channel_stats",
    "epoch_batches",
    "prepare_images",
    "uniform_noise_images",
    "CIFAR10_CLASSES",
]
