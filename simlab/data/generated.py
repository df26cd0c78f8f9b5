"""Dataset sources built in code: scikit-learn's digits (upsampled) and seeded synthetic images."""

from __future__ import annotations

import logging
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from simlab.data.cache import cached_raw
from simlab.data.files import check_channels, check_image_size
from simlab.data.splits import RawImages, stratified_holdout

logger = logging.getLogger(__name__)

DIGITS_TEST_SEED = 0  # the digits test split is fixed, independent of the training seed
_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def read_digits(
    *, data_dir: str | os.PathLike | None, cache_dir: Path, test_fraction: float = 0.2, image_size: int = 32
) -> RawImages:
    """scikit-learn's 8x8 digits upsampled to ``image_size`` (1 channel); a fixed stratified test split.

    Decoded once into the dataset cache (keyed by the scikit-learn version): a later load, e.g. in a
    fresh sweep trial process, neither imports scikit-learn (seconds) nor re-parses its CSV.
    """
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    check_image_size(image_size)
    if data_dir is not None:
        logger.warning("digits ships with scikit-learn; data_dir=%r is not used", str(data_dir))
    source = (
        f"digits|sklearn={version('scikit-learn')}|image_size={image_size}"
        f"|test_fraction={float(test_fraction)!r}"
    )

    def build() -> RawImages:
        from sklearn.datasets import load_digits  # seconds to import; only on a cache miss

        bunch = load_digits()
        x = (
            torch.from_numpy(np.asarray(bunch.images, dtype=np.float32))[:, None] / 16.0
        )  # (N, 1, 8, 8), 0..16 -> [0, 1]
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
        y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
        keep, held = stratified_holdout(y, 10, float(test_fraction), DIGITS_TEST_SEED)
        return RawImages(list(_DIGIT_NAMES), x[keep], y[keep], x[held], y[held], source=source)

    return cached_raw(cache_dir, "digits", source, build)


def read_synthetic(
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
    check_channels(channels)
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
