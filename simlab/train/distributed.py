"""`fit` under ``torch.distributed``: which rank this is, the device it trains on, the DDP wrapper, and
every collective the trainer makes (gathers, broadcasts from rank 0, the loss all-reduce, barriers).

Every helper is a no-op (or the identity) in a single process, so the trainer calls them unconditionally.
Rank 0 is the one that reads and writes files (checkpoints, artifacts) and fits the recalibrators;
what it decides reaches the other ranks through `broadcast_from_rank0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "World",
    "all_gather_rows",
    "all_reduce_sum",
    "barrier",
    "broadcast_from_rank0",
    "resolve_device",
    "shard_bounds",
    "sync_buffers",
    "wrap_ddp",
]


@dataclass(frozen=True)
class World:
    """This process's place in the process group (``rank 0 of 1`` without ``torch.distributed``)."""

    rank: int
    size: int

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def current(cls) -> World:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls(0, 1)


SINGLE = World(0, 1)


def resolve_device(cfg_device: str, device: str | torch.device | None) -> torch.device:
    """The training device: ``device`` when given, else ``cfg.device`` (``auto``: CUDA when available).

    A CUDA device without an index gets the current one (each rank's, under DDP).
    """
    if device is not None:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"device: expected a str, torch.device or None, got {type(device).__name__}")
        dev = torch.device(device)
    elif cfg_device == "cpu" or (cfg_device == "auto" and not torch.cuda.is_available()):
        dev = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise ValueError("device: cfg.device='cuda' but CUDA is not available")
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def wrap_ddp(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel under DDP (it averages gradients over ranks), else
    ``model`` itself."""
    if not world.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_from_rank0(obj: Any, world: World, device: torch.device) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; the other ranks' ``obj`` is ignored)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def sync_buffers(model: nn.Module, world: World) -> None:
    """Copy rank 0's buffers to every rank before an evaluation.

    DDP broadcasts rank 0's buffers (BatchNorm running statistics) at every forward, after which each
    rank updates them on its own shard: syncing them makes every rank evaluate the same model, the one
    rank 0 checkpoints.
    """
    if world.distributed:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def all_reduce_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """``value`` summed over ranks, in place (unchanged in a single process)."""
    if world.distributed:
        dist.all_reduce(value)
    return value


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shard_bounds(n: int, world: World) -> tuple[int, int, int]:
    """``(lo, hi, per_rank)``: this rank's contiguous shard ``[lo, hi)`` of ``n`` rows, ``per_rank`` =
    ceil(n / ranks) (the last shards are shorter, possibly empty)."""
    per_rank = -(-n // world.size)
    return min(n, world.rank * per_rank), min(n, (world.rank + 1) * per_rank), per_rank


def all_gather_rows(
    local: torch.Tensor | None, *, n: int, num_cols: int, world: World, device: torch.device
) -> torch.Tensor:
    """The ``[n, num_cols]`` float32 rows of all ranks in order, on every rank, from each rank's
    `shard_bounds` shard ``local`` (None for an empty shard): shards are zero-padded to ``per_rank``
    rows, all-gathered and cut back to ``n``."""
    if not world.distributed:
        return local if local is not None else torch.zeros(0, num_cols, device=device)
    per_rank = shard_bounds(n, world)[2]
    padded = torch.zeros(per_rank, num_cols, dtype=torch.float32, device=device)
    if local is not None:
        padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(gathered, padded)
    return torch.cat(gathered)[:n]
