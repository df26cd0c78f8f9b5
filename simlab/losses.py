"""Losses on soft targets (SPEC §3, paper B §3.2).

Inputs: ``logits [B, K]``, ``targets [B, K]`` (rows of a label matrix, possibly relaxed by `relax`);
``P = softmax(logits)``; every loss returns the mean over the batch (a 0-d tensor).

Half-precision logits (fp16/bf16, e.g. under autocast) are computed in float32, as autocast does for
``cross_entropy``; the loss is then float32. Only shapes and dtypes are checked here (no host sync in
the training loop): NaN/inf inputs give a NaN/inf loss, which the trainer reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from simlab._validate import check_choice, check_float_tensor, check_rows_stochastic, check_tensor

logger = logging.getLogger(__name__)

__all__ = [
    "LOSSES",
    "RELAXATIONS",
    "get_loss",
    "l1_loss",
    "log_projection_loss",
    "mse_loss",
    "projection_loss",
    "relax",
    "soft_cross_entropy",
]

RELAXATIONS: tuple[str, ...] = ("none", "l2")


def relax(
    targets: torch.Tensor, mode: Literal["none", "l2"], trusted: torch.Tensor | None = None
) -> torch.Tensor:
    """Relaxed targets ``T_r = r(T)`` (paper B eq. 8-10).

    Args:
        targets: ``[B, K]`` label rows (non-negative, summing to 1).
        mode: ``"none"`` (``T``) or ``"l2"`` (``||T_i||_2 T_i`` per row, eq. 9).
        trusted: optional bool ``[B]``; rows marked True are never relaxed (eq. 10).

    Returns:
        ``[B, K]`` like ``targets``.
    """
    targets = check_float_tensor("targets", targets, ndim=2)
    mode = check_choice("mode", mode, RELAXATIONS)
    if trusted is not None:
        trusted = check_tensor("trusted", trusted)
        if trusted.dtype != torch.bool:
            raise TypeError(f"trusted: expected a bool mask, got dtype {trusted.dtype}")
        if trusted.shape != targets.shape[:1]:
            raise ValueError(f"trusted: expected shape [B]=[{targets.shape[0]}], got {tuple(trusted.shape)}")
    if not bool(torch.isfinite(targets).all()):
        raise ValueError("targets: expected finite values, got NaN/inf")
    check_rows_stochastic("targets", targets)
    if mode == "none":
        return targets
    relaxed = torch.linalg.vector_norm(targets, ord=2, dim=1, keepdim=True) * targets  # eq. 9
    if trusted is None:
        return relaxed
    return torch.where(trusted.to(targets.device)[:, None], targets, relaxed)  # eq. 10


def _prepare(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = check_float_tensor("logits", logits, ndim=2)
    targets = check_float_tensor("targets", targets, ndim=2)
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets: expected the shape of logits {tuple(logits.shape)} ([B, K]), "
            f"got {tuple(targets.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("logits: expected a non-empty batch, got B=0")
    dtype = torch.promote_types(logits.dtype, targets.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # softmax/log in half precision loses the small probabilities
    return logits.to(dtype), targets.to(dtype)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i -sum_k T_ik log P_ik`` (with relaxed targets: pCE, paper B eq. 11)."""
    logits, targets = _prepare(logits, targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def projection_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i max(0, <T,T> - <T,P>)`` (paper B eq. 4)."""
    logits, targets = _prepare(logits, targets)
    tt = (targets * targets).sum(1)
    tp = (targets * torch.softmax(logits, dim=1)).sum(1)
    return torch.clamp(tt - tp, min=0.0).mean()


def log_projection_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``mean_i max(0, log((<T,T> + eps) / (<T,P> + eps)))`` (paper B eq. 6, eps as in §3.2)."""
    logits, targets = _prepare(logits, targets)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps!r}")
    tt = (targets * targets).sum(1)
    tp = (targets * torch.softmax(logits, dim=1)).sum(1)
    return torch.clamp(torch.log(tt + eps) - torch.log(tp + eps), min=0.0).mean()


def l1_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_k |P_ik - T_ik|``."""
    logits, targets = _prepare(logits, targets)
    return (torch.softmax(logits, dim=1) - targets).abs().sum(1).mean()


def mse_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_k (P_ik - T_ik)^2``."""
    logits, targets = _prepare(logits, targets)
    return (torch.softmax(logits, dim=1) - targets).square().sum(1).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": soft_cross_entropy,
    "projection": projection_loss,
    "log_projection": log_projection_loss,
    "l1": l1_loss,
    "mse": mse_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The `LOSSES` entry ``name``; an unknown name is a ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss: unknown name {name!r}; valid names are: {', '.join(LOSSES)}")
    return LOSSES[name]
