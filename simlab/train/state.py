"""The state of one `fit` call: everything the epochs train with, built in one place before the first
epoch (`build_state`), including what a resumed run restores from its checkpoint, and written back to a
checkpoint after each epoch (`save_state`).

After `build_state` no field is reassigned (the dataclass is frozen): training mutates the model,
optimizer and scheduler in place, and `history` grows by one dict per epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simlab.checkpoint import (
    check_training_checkpoint,
    checkpoint_paths,
    load_latest,
    save_checkpoint,
    training_checkpoint,
)
from simlab.config import TrainConfig
from simlab.data import ImageData, load_split
from simlab.losses import LOSSES
from simlab.models import build_model
from simlab.precision import ResolvedPrecision, resolve_precision
from simlab.seeds import derive_seed
from simlab.similarity.store import SimilarityStore
from simlab.targets import needs_source_matrix, training_targets
from simlab.train.distributed import World, barrier, broadcast_from_rank0, wrap_ddp
from simlab.train.schedule import make_scheduler, steps_per_epoch

__all__ = ["RunState", "build_state", "save_state"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RunState:
    """What one `fit` call trains and evaluates. Images stay uint8 on the training device (batches are
    converted there, no host round trips); labels and label matrices are on the CPU."""

    cfg: TrainConfig
    world: World  # this process's rank and the number of ranks
    device: torch.device  # the training device of this rank
    data: ImageData  # the splits as given/loaded (class names, mean/std, the held-out splits)
    train_x: torch.Tensor  # uint8 [N, C, H, W] on device: the samples trained on
    train_targets: torch.Tensor  # float32 [N, K] on device: their target rows (simlab.targets)
    val_x: torch.Tensor  # uint8 [N_val, C, H, W] on device
    val_y: torch.Tensor  # int64 [N_val] on the CPU
    test_x: torch.Tensor  # uint8 [N_test, C, H, W] on device
    test_y: torch.Tensor  # int64 [N_test] on the CPU
    label_matrix: torch.Tensor  # float64 [K, K]: row k = target of a (non-trusted) sample labelled k
    trusted_label_matrix: torch.Tensor  # float64 [K, K]: row k = target of a trusted sample of class k
    precision: ResolvedPrecision  # what runs (bf16 autocast, channels_last); a resume keeps the saved one
    model: nn.Module  # the plain module: state dicts, evaluation
    net: nn.Module  # what the training step calls: model, DDP-wrapped and/or compiled
    loss_fn: Any  # simlab.losses.LOSSES[cfg.loss]: (logits [B, K] float32, targets [B, K]) -> loss
    optimizer: torch.optim.Optimizer  # SGD over model's parameters
    scheduler: Any  # LambdaLR (cosine, stepped per batch), ReduceLROnPlateau (per evaluation) or None
    steps_per_epoch: int
    start_epoch: int  # epochs completed before this process started (0, or the checkpoint's epoch)
    history: list[dict[str, float]]  # one metrics dict per completed epoch (the checkpoint's, then ours)

    @property
    def n_train(self) -> int:
        """Training samples (the trusted set alone for label ``trusted_only``)."""
        return int(self.train_x.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.data.class_names)


def build_state(
    cfg: TrainConfig,
    *,
    data: ImageData | None,
    source_matrix: np.ndarray | torch.Tensor | None,
    checkpoint_dir: Path | None,
    world: World,
    device: torch.device,
) -> RunState:
    """Load the data (and the similarity source the labels need), build the per-sample targets, the
    model, optimizer and schedule, and restore the newest checkpoint in ``checkpoint_dir`` if any."""
    # ---- data and targets ------------------------------------------------------------------
    if data is None:
        data = load_split(cfg)
    if len(data.val_y) == 0:
        raise ValueError(
            "data: the validation split is empty; the metrics and recalibration need it "
            "(set val_fraction > 0)"
        )
    if source_matrix is None and needs_source_matrix(cfg):
        store = SimilarityStore(Path(cfg.resolved_cache_dir) / "similarity")
        source_matrix, meta = store.get(data, cfg.source, cfg.similarity_args)
        log.info("similarity %s from %s (computed=%s)", cfg.source, meta.get("path"), meta.get("computed"))
    targets = training_targets(cfg, data.train_y, data.class_names, source_matrix)
    train_x = data.train_x.to(device)
    train_targets = targets.rows.to(device, torch.float32)
    if targets.train_indices is not None:  # e.g. "trusted_only": train on these samples alone
        train_x = train_x[targets.train_indices.to(device)]
        train_targets = train_targets[targets.train_indices.to(device)]
        log.info("label %s: training on %d samples (the trusted set)", cfg.label, int(train_x.shape[0]))
    if cfg.noise_kind != "none" or cfg.trusted_size:
        log.info(
            "label noise %s rate %.2f: %d of %d training labels flipped, %d trusted",
            cfg.noise_kind,
            cfg.noise_rate,
            int((targets.noisy_labels != data.train_y.cpu()).sum()),
            int(train_x.shape[0]),
            int(targets.trusted.sum()),
        )

    # ---- model, precision, and the checkpoint to resume from --------------------------------
    model = build_model(
        cfg.model,
        len(data.class_names),
        in_channels=int(data.train_x.shape[1]),
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "init")),
        **cfg.model_args,
    ).to(device)
    precision = _resolve_precision(cfg, world, device)
    found = _read_checkpoint(checkpoint_dir, world, device)
    if found is not None:
        saved, path = found
        saved = {**saved, "config": _current_spelling(saved.get("config", {}))}
        check_training_checkpoint(saved, path, config=cfg.to_dict(), class_names=data.class_names)
        saved_precision = saved.get("precision")
        if cfg.precision == "auto" and saved_precision and saved_precision != precision.label:
            # Keep what the interrupted run resolved: one run, one precision (the probe may differ now).
            precision = ResolvedPrecision.from_label(saved_precision, "precision='auto': from the checkpoint")
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = wrap_ddp(model, world, device)
    if cfg.compile:
        net = torch.compile(net)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
    )
    steps = steps_per_epoch(int(train_x.shape[0]), cfg.batch_size, world.size)
    if steps == 0:
        raise ValueError(
            f"batch_size: {cfg.batch_size} leaves no batch for {int(train_x.shape[0])} training samples"
        )
    scheduler = make_scheduler(cfg, optimizer, steps)
    start_epoch, history = 0, []
    if found is not None:
        saved, path = found
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        start_epoch, history = int(saved["epoch"]), [dict(h) for h in saved["history"]]
        log.info("resumed from %s at epoch %d", path, start_epoch)

    return RunState(
        cfg=cfg,
        world=world,
        device=device,
        data=data,
        train_x=train_x,
        train_targets=train_targets,
        val_x=data.val_x.to(device),
        val_y=data.val_y.to("cpu", torch.long),
        test_x=data.test_x.to(device),
        test_y=data.test_y.to("cpu", torch.long),
        label_matrix=targets.label_matrix,
        trusted_label_matrix=targets.trusted_label_matrix,
        precision=precision,
        model=model,
        net=net,
        loss_fn=LOSSES[cfg.loss],
        optimizer=optimizer,
        scheduler=scheduler,
        steps_per_epoch=steps,
        start_epoch=start_epoch,
        history=history,
    )


def save_state(
    state: RunState, epoch: int, rng_states: dict[str, torch.Tensor], checkpoint_dir: Path | None
) -> None:
    """Write the checkpoint of ``epoch`` (rank 0; a no-op without ``checkpoint_dir``), then wait for all
    ranks: ``on_epoch_end`` may read the checkpoint on any rank."""
    if checkpoint_dir is None:
        return
    if state.world.rank == 0:
        checkpoint = training_checkpoint(
            epoch=epoch,
            model=state.model.state_dict(),
            optimizer=state.optimizer.state_dict(),
            scheduler=state.scheduler.state_dict() if state.scheduler is not None else {},
            rng={"seed": state.cfg.seed, "world_size": state.world.size, "states": rng_states},
            config=state.cfg.to_dict(),
            precision=state.precision.label,
            history=state.history,
            class_names=state.data.class_names,
        )
        save_checkpoint(checkpoint, checkpoint_paths(checkpoint_dir)[0])
    barrier(state.world)


def _resolve_precision(cfg: TrainConfig, world: World, device: torch.device) -> ResolvedPrecision:
    kw = dict(amp=cfg.amp, channels_last=cfg.channels_last, cache_dir=cfg.resolved_cache_dir)
    if not (world.distributed and device.type == "cpu" and cfg.precision == "auto"):
        return resolve_precision(cfg.precision, device, **kw)
    # CPU DDP: rank 0's probe decides for every rank, so all ranks train in the same precision.
    label = resolve_precision(cfg.precision, device, **kw).label if world.rank == 0 else None
    label = broadcast_from_rank0(label, world, device)
    return ResolvedPrecision.from_label(str(label), "precision='auto': rank 0's probe")


def _read_checkpoint(
    checkpoint_dir: Path | None, world: World, device: torch.device
) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint and its path, on every rank (None: start from scratch).

    Only rank 0 is guaranteed to see the folder (ranks may be on other nodes): it reads and sends it.
    """
    if checkpoint_dir is None:
        return None
    found = load_latest(checkpoint_dir, map_location="cpu") if world.rank == 0 else None
    return broadcast_from_rank0(found, world, device)


def _current_spelling(config: Any) -> Any:
    """A checkpoint's saved config in this version's spelling (`TrainConfig.from_dict` reads the old one:
    confidence runs once named their score source in ``similarity``), so a resume across the rename is
    not refused; a config with a key this version does not know stays as saved, and the check names it."""
    try:
        return TrainConfig.from_dict(dict(config), validate=False).to_dict()
    except (TypeError, ValueError):
        return config
