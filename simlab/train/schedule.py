"""How `fit` cuts an epoch into optimizer steps and moves the learning rate over them.

An epoch is the shuffled global batches of `global_batches` (the same on every rank, each rank training
its shard); `steps_per_epoch` counts them by the same rule, and `make_scheduler` builds the lr schedule
over that many steps per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from simlab.config import TrainConfig
from simlab.data import epoch_batches

__all__ = ["global_batches", "make_scheduler", "steps_per_epoch"]


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps in an epoch of ``n`` samples (a last batch smaller than the world is dropped)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= world_size else 0)


def global_batches(
    n: int, batch_size: int, world_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Shuffled index batches of ``batch_size`` (the last one smaller), the same on every rank.

    A last batch with fewer samples than ranks is dropped, so every rank always gets a sample.
    """
    for idx in epoch_batches(n, batch_size, generator=generator):
        if idx.numel() >= world_size:
            yield idx


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """The lr schedule of ``cfg.scheduler``: ``cosine`` (stepped per batch, linear warm-up over
    ``cfg.warmup_epochs``), ``plateau`` (stepped by `fit` on validation accuracy), or None."""
    if cfg.scheduler == "cosine":
        total = cfg.epochs * steps_per_epoch
        warm = cfg.warmup_epochs * steps_per_epoch

        def factor(step: int) -> float:
            # LambdaLR evaluates factor(k) before update k+1: linear warm-up to lr, then cosine to 0.
            if step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    return None
