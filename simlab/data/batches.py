"""Device-resident batches: seeded index batches, normalisation and crop/flip augmentation as tensor ops."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import torch
from torch.nn import functional as F


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


def resize_images(images_uint8: torch.Tensor, size: Sequence[int], *, batch_size: int = 1024) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` bilinearly resized to ``size`` = (H', W') (``align_corners=False``, on
    float32 pixel values, rounded and clamped back to 0..255); returned as is when already that size."""
    if (
        not isinstance(images_uint8, torch.Tensor)
        or images_uint8.dtype != torch.uint8
        or images_uint8.dim() != 4
    ):
        raise ValueError("images_uint8: expected a uint8 [N, C, H, W] tensor")
    out_size = tuple(size)
    if len(out_size) != 2 or not all(isinstance(s, int) and s > 0 for s in out_size):
        raise ValueError(f"size must be (H, W) of positive ints, got {size!r}")
    if tuple(images_uint8.shape[2:]) == out_size:
        return images_uint8
    parts = [
        F.interpolate(chunk.float(), size=out_size, mode="bilinear", align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in images_uint8.split(batch_size)
    ]
    if not parts:
        return images_uint8.new_empty((0, images_uint8.shape[1], *out_size))
    return torch.cat(parts)
