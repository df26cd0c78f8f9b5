"""One training epoch: shuffled global batches, each rank's shard, augmentation, mixup, the loss, the
step.

Randomness: each epoch re-derives its generators from ``(cfg.seed, purpose, epoch, rank)``
(`simlab.seeds.derive_seed`), so a resumed run draws exactly what the uninterrupted run would have drawn.
Shuffling is shared by all ranks (they cut the same global batches); augmentation, mixup and the global
RNG (dropout) are per rank. The global RNG is re-seeded here only inside `fit`'s ``torch.random.fork_rng``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from simlab.data import prepare_images
from simlab.seeds import derive_seed
from simlab.train.distributed import all_reduce_sum
from simlab.train.schedule import global_batches

if TYPE_CHECKING:
    from simlab.train.state import RunState

__all__ = ["NonFiniteLossError", "mixup", "train_epoch"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch, the step and the value."""


def train_epoch(state: RunState, epoch: int) -> tuple[float, dict[str, torch.Tensor]]:
    """Train ``state.net`` for epoch ``epoch`` (1-based) and return ``(mean training loss, rng states)``.

    The loss is the global-batch mean averaged over the epoch's samples, identical on every rank. The
    rng states are rank 0's end-of-epoch generator states, kept in the checkpoint for audit.

    Raises:
        NonFiniteLossError: the loss of a step is NaN/inf (every rank stops at the same step).
    """
    cfg, world, dev = state.cfg, state.world, state.device
    g_shuffle = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle", epoch))
    g_aug = torch.Generator(device=dev).manual_seed(derive_seed(cfg.seed, "augment", epoch, world.rank))
    g_mix = torch.Generator().manual_seed(derive_seed(cfg.seed, "mixup", epoch, world.rank))
    # The global RNGs (dropout) of the CPU and of the training GPU only: fit's fork_rng restores them.
    global_seed = derive_seed(cfg.seed, "global", epoch, world.rank)
    torch.default_generator.manual_seed(global_seed)
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            torch.cuda.manual_seed(global_seed)
    state.net.train()
    amp, channels_last = state.precision.autocast, state.precision.channels_last
    total = torch.zeros((), dtype=torch.float64, device=dev)
    count = 0
    for step, idx_global in enumerate(
        global_batches(state.n_train, cfg.batch_size, world.size, g_shuffle), start=1
    ):
        n_global = int(idx_global.numel())
        idx = torch.tensor_split(idx_global, world.size)[world.rank].to(dev)
        n_local = int(idx.numel())
        x = prepare_images(
            state.train_x[idx],
            mean=state.data.mean,
            std=state.data.std,
            augment=cfg.augment,
            generator=g_aug,
            channels_last=channels_last,
        )
        targets = state.train_targets[idx]
        if cfg.mixup > 0:
            x, targets = mixup(x, targets, cfg.mixup, g_mix)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = state.net(x)
        loss = state.loss_fn(logits.float(), targets)
        # The global mean loss, identical on every rank: all ranks stop at the same step.
        loss_sum = all_reduce_sum(loss.detach().double() * n_local, world)
        value = loss_sum.item() / n_global
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {epoch}, step {step}/{state.steps_per_epoch}: {value} "
                f"(loss={cfg.loss}, lr={state.optimizer.param_groups[0]['lr']:.4g})"
            )
        # DDP averages gradients over ranks; weighting each rank's mean by its share of the global
        # batch makes that average the gradient of the global-batch mean even when shards differ.
        (loss * (n_local * world.size / n_global)).backward()
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        if cfg.scheduler == "cosine":
            state.scheduler.step()
        total += loss_sum
        count += n_global
    rng_states = {
        "shuffle": g_shuffle.get_state(),
        "augment": g_aug.get_state().cpu(),
        "mixup": g_mix.get_state(),
        "torch": torch.get_rng_state(),
    }
    return float(total.item() / count), rng_states


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator):
    """Mixup (Zhang et al. 2018): ``lam x + (1 - lam) x[perm]``, the same for targets.

    ``lam ~ Beta(alpha, alpha)``, one per batch; ``x [B, C, H, W]``, ``targets [B, K]``.
    """
    from scipy.special import betaincinv  # scipy: heavy, needed only with mixup

    u = float(torch.rand((), generator=generator))
    lam = float(betaincinv(alpha, alpha, u))  # inverse-CDF sample of Beta(alpha, alpha) from our generator
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]
