"""Autoencoder class distances (paper A §5.2, eq. 14-15).

A small convolutional autoencoder is trained to reconstruct the training images (pixels in [0, 1],
mean squared error); its latent codes ``r(x)`` then give ``D[k, j] = mean ||r(x) - r(x')||_2`` over all
pairs of training images of classes k and j (`simlab.similarity.class_distance_matrix`, p=2).

The paper does not describe its autoencoder beyond the latent size (256 for CIFAR-100, 1024 for
Tiny-ImageNet). Ours: three stride-2 3x3 convolutions (``width``, ``2 width``, ``4 width`` channels,
ReLU) and a linear layer to ``latent_dim``; the decoder mirrors it with transposed convolutions and a
sigmoid. Training is Adam, seeded (initialisation, shuffling and the optional training subset all draw
from one ``torch.Generator``), and each epoch's mean loss is logged and returned in ``info``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simlab._validate import check_num_classes
from simlab.progress import Progress
from simlab.similarity.distances import class_distance_matrix

logger = logging.getLogger(__name__)

__all__ = ["ConvAutoencoder", "autoencoder_distances", "encode", "train_autoencoder"]


class ConvAutoencoder(nn.Module):
    """``[B, C, H, W]`` images in [0, 1] → ``[B, latent_dim]`` codes → ``[B, C, H, W]`` reconstructions."""

    def __init__(
        self, in_channels: int, image_size: tuple[int, int], latent_dim: int = 256, width: int = 32
    ) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        chans = (in_channels, width, 2 * width, 4 * width)
        enc = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            enc += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*enc)
        h, w = self.image_size
        for _ in range(3):  # each stride-2 conv with padding 1: ceil(size / 2)
            h, w = (h + 1) // 2, (w + 1) // 2
        self.code_shape = (chans[-1], h, w)
        self.to_code = nn.Linear(chans[-1] * h * w, latent_dim)
        self.from_code = nn.Linear(latent_dim, chans[-1] * h * w)
        dec = []
        rev = chans[::-1]
        for i, (cin, cout) in enumerate(zip(rev[:-1], rev[1:], strict=True)):
            dec.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))  # doubles the size
            if i < 2:
                dec.append(nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.features(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.upsample(F.relu(self.from_code(z)).view(-1, *self.code_shape))
        if tuple(out.shape[-2:]) != self.image_size:  # sizes that are not multiples of 8
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _init(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default init (kaiming-uniform, a = sqrt(5)), drawn from ``generator``, not the global RNG."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def _to_unit(x_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x_uint8.to(device, non_blocking=True).to(torch.float32).div_(255.0)


def train_autoencoder(
    images_uint8: torch.Tensor,
    *,
    latent_dim: int = 256,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    width: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[ConvAutoencoder, list[float]]:
    """Train a `ConvAutoencoder` on uint8 ``[N, C, H, W]`` images; returns ``(model, loss per epoch)``."""
    _check_images(images_uint8)
    check_num_classes("latent_dim", latent_dim)
    check_num_classes("epochs", epochs)
    check_num_classes("batch_size", batch_size)
    check_num_classes("width", width)
    check_num_classes("seed", seed, minimum=0)
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a positive finite number, got {lr!r}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = images_uint8.shape
    model = ConvAutoencoder(c, (h, w), latent_dim, width)
    _init(model, gen)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    images = images_uint8.to(device) if device.type == "cuda" else images_uint8
    losses: list[float] = []
    progress = Progress(epochs * -(-n // batch_size), "autoencoder training", logger=logger, unit="batches")
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            progress.update()
            xb = _to_unit(images[order[start : start + batch_size].to(images.device)], device)
            loss = F.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * xb.shape[0]
        losses.append(total / n)
        logger.info("autoencoder epoch %d/%d: train MSE %.6f", epoch + 1, epochs, losses[-1])
    progress.close()
    model.eval()
    return model, losses


@torch.inference_mode()
def encode(model: ConvAutoencoder, images_uint8: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Latent codes ``[N, latent_dim]`` (float32, on the model's device) of uint8 ``[N, C, H, W]`` images."""
    _check_images(images_uint8)
    device = next(model.parameters()).device
    model.eval()
    return torch.cat(
        [
            model.encode(_to_unit(images_uint8[i : i + batch_size], device))
            for i in range(0, images_uint8.shape[0], batch_size)
        ]
    )


def autoencoder_distances(
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    latent_dim: int = 256,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    width: int = 32,
    train_samples: int | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    info: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Paper A eq. 14+15: float64 ``[K, K]`` mean L2 distances between autoencoder codes of two classes.

    Args:
        images_uint8: training images ``[N, C, H, W]``, uint8.
        labels: ``[N]`` integer classes in ``[0, K)``.
        num_classes: ``K``.
        latent_dim: size of the code (paper A: 256 for CIFAR-100, 1024 for Tiny-ImageNet).
        epochs, lr, batch_size, width: training of the autoencoder (Adam, MSE).
        train_samples: train the autoencoder on a seeded random subset of this many images (to bound
            the cost); the distances still use the codes of all N images.
        max_per_class: passed to `class_distance_matrix` (seeded subset per class; an approximation).
        seed: seeds initialisation, shuffling and both subsets.
        device: where to train and encode; None → CUDA when available, else CPU.
        info: if a dict, receives ``train_loss`` (mean MSE per epoch), ``final_train_loss``,
            ``n_train_ae`` and ``device``.

    Returns:
        float64 ``[K, K]`` on the CPU.
    """
    _check_images(images_uint8)
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images_uint8.shape[0]:
        raise ValueError(
            f"labels: expected an integer tensor [{images_uint8.shape[0]}], "
            f"got {tuple(getattr(labels, 'shape', ()))}"
        )
    check_num_classes("num_classes", num_classes)
    if train_samples is not None:
        check_num_classes("train_samples", train_samples)
    if max_per_class is not None:
        check_num_classes("max_per_class", max_per_class)
    check_num_classes("seed", seed, minimum=0)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)

    gen = torch.Generator().manual_seed(seed)
    train_images = images_uint8
    if train_samples is not None and train_samples < images_uint8.shape[0]:
        pick = torch.randperm(images_uint8.shape[0], generator=gen)[:train_samples]
        train_images = images_uint8[pick]
    model, losses = train_autoencoder(
        train_images,
        latent_dim=latent_dim,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        width=width,
        seed=seed,
        device=device,
    )
    codes = encode(model, images_uint8)
    dist = class_distance_matrix(
        codes,
        labels.to(codes.device),
        num_classes,
        p=2.0,
        max_per_class=max_per_class,
        generator=gen if max_per_class is not None else None,
    )
    if info is not None:
        info.update(
            train_loss=losses,
            final_train_loss=losses[-1],
            n_train_ae=int(train_images.shape[0]),
            device=str(device),
        )
    return dist.detach().to("cpu", torch.float64)


def _check_images(x: Any) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(
            "images_uint8: expected a non-empty uint8 tensor [N, C, H, W], got "
            f"{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}"
        )
