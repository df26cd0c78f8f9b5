"""Synthetic label noise and the trusted subset (SPEC §4, paper B §4.1).

``N`` samples, ``K`` classes. All randomness comes from the ``generator`` argument (a
``torch.Generator`` or an integer seed); random numbers are drawn on the generator's device (CPU
for a seed) and moved to the labels' device, so a seed gives the same result on every device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch

from simlab._validate import (
    as_generator,
    check_choice,
    check_labels,
    check_num_classes,
    check_pairs,
    check_real,
    check_tensor,
    generator_device,
)

logger = logging.getLogger(__name__)

__all__ = ["NOISE_KINDS", "make_noisy_labels", "trusted_mask"]

NOISE_KINDS: tuple[str, ...] = ("none", "symmetric", "asymmetric")


def make_noisy_labels(
    labels: torch.Tensor,
    num_classes: int,
    rate: float,
    kind: Literal["none", "symmetric", "asymmetric"],
    pairs: Sequence[tuple[int, int]] | None = None,
    trusted: torch.Tensor | None = None,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """Labels with injected noise.

    ``kind="symmetric"``: each non-trusted label flips with probability ``rate`` to a uniformly chosen
    different class (transition ``1 - rate`` on the diagonal, ``rate / (K - 1)`` elsewhere).
    ``kind="asymmetric"``: flips with probability ``rate`` to its partner in ``pairs`` (pairs are
    symmetric, each class in at most one; classes in no pair never flip). ``kind="none"``: a copy
    (``rate`` must be 0). Samples where the bool mask ``trusted`` is True never flip.

    Args:
        labels: ``[N]`` integer labels in ``[0, num_classes)``.
        trusted: optional bool ``[N]``.

    Returns:
        ``[N]`` noisy labels, same dtype and device as ``labels``.
    """
    k = check_num_classes("num_classes", num_classes)
    labels = check_labels("labels", labels, k)
    rate = check_real("rate", rate, low=0.0, high=1.0)
    kind = check_choice("kind", kind, NOISE_KINDS)
    gen = as_generator("generator", generator)
    n = labels.shape[0]
    if trusted is not None:
        trusted = check_tensor("trusted", trusted)
        if trusted.dtype != torch.bool:
            raise TypeError(f"trusted: expected a bool mask, got dtype {trusted.dtype}")
        if trusted.shape != (n,):
            raise ValueError(f"trusted: expected shape [N]=[{n}], got {tuple(trusted.shape)}")
    if kind == "none":
        if rate != 0:
            raise ValueError(f"rate: expected 0 with kind='none', got {rate}")
        return labels.clone()
    if kind == "symmetric":
        if pairs is not None:
            raise ValueError("pairs: only used with kind='asymmetric', got pairs with kind='symmetric'")
        if k < 2 and rate > 0:
            raise ValueError(f"num_classes: symmetric noise needs at least 2 classes, got {k}")
    else:
        if pairs is None:
            raise ValueError("pairs: required with kind='asymmetric' (e.g. simlab.labels.class_pairs(names))")
        pairs = check_pairs("pairs", pairs, k)

    dev = generator_device(gen)
    # Draw for every sample, trusted or not, so the noise of sample i does not depend on the mask.
    flip = torch.rand(n, generator=gen, device=dev) < rate
    y = labels.to(device=dev, dtype=torch.long)
    if kind == "symmetric":
        shift = torch.randint(1, max(k, 2), (n,), generator=gen, device=dev)  # uniform over the K-1 others
        target = (y + shift) % k
    else:
        partner = torch.arange(k, device=dev)
        for a, b in pairs:
            partner[a], partner[b] = b, a
        target = partner[y]  # unpaired classes map to themselves: never flip
    if trusted is not None:
        flip &= ~trusted.to(dev)
    noisy = torch.where(flip, target, y)
    logger.debug(
        "make_noisy_labels: kind=%s rate=%g flipped %d of %d", kind, rate, int((noisy != y).sum()), n
    )
    return noisy.to(device=labels.device, dtype=labels.dtype)


def trusted_mask(
    labels: torch.Tensor,
    num_classes: int,
    size: int,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """A class-balanced random subset of ``size`` samples: ``size / K`` per class (paper B's M).

    ``size`` must be a multiple of ``K`` and every class needs at least ``size / K`` samples.
    Returns a bool ``[N]`` mask on ``labels``' device.
    """
    k = check_num_classes("num_classes", num_classes)
    labels = check_labels("labels", labels, k)
    size = check_num_classes("size", size, minimum=0)
    gen = as_generator("generator", generator)
    if size % k:
        raise ValueError(f"size: expected a multiple of num_classes={k} (class-balanced), got {size}")
    per_class = size // k
    y = labels.to(dtype=torch.long)
    counts = torch.bincount(y, minlength=k).cpu()
    short = (counts < per_class).nonzero().flatten().tolist()
    if short:
        have = ", ".join(f"class {c}: {int(counts[c])}" for c in short)
        raise ValueError(f"size: {size} needs {per_class} samples per class, but only {have}")
    dev = generator_device(gen)
    keys = torch.rand(y.shape[0], generator=gen, device=dev).to(y.device)
    perm = torch.argsort(keys)
    by_class = perm[torch.argsort(y[perm], stable=True)]  # grouped by class, random order within
    starts = (torch.cumsum(counts, 0) - counts).to(y.device)
    rank = torch.arange(y.shape[0], device=y.device) - starts[y[by_class]]
    mask = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
    mask[by_class[rank < per_class]] = True
    return mask
