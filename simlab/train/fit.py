"""`fit(cfg) -> FitResult`: set-up, resume, the epoch loop, the final evaluation, the artifacts.

Read top to bottom: `fit` checks its arguments, then `_fit` builds the run's state (`simlab.train.state`,
checkpoint restored), trains epoch after epoch (`simlab.train.epoch`), evaluating on the scheduled
epochs (`simlab.train.evaluation`), checkpointing and reporting after each, and ends with the final
metrics, the post-hoc recalibration, the OOD scores and the files (`simlab.train.artifacts`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simlab._validate import check_choice
from simlab.calibration import RECALIBRATORS
from simlab.config import TrainConfig
from simlab.data import DATASETS, ImageData, check_dataset_args, dataset_channels
from simlab.losses import LOSSES
from simlab.models import MODELS
from simlab.progress import format_seconds
from simlab.similarity.sources import SIMILARITIES
from simlab.tracking import NullTracker, Tracker, flat_params
from simlab.train.artifacts import write_artifacts
from simlab.train.distributed import World, resolve_device
from simlab.train.epoch import train_epoch
from simlab.train.evaluation import (
    METRIC_NAMES,
    TEST_ACCURACY,
    best_test_accuracy,
    check_ood_dataset,
    epoch_test_accuracy,
    ood_scores,
    predict_splits,
    recalibrate,
    split_metrics,
)
from simlab.train.state import RunState, build_state, save_state

__all__ = ["EpochReport", "FitResult", "fit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """What `fit` hands to ``on_epoch_end`` after each epoch's checkpoint is written (on every rank)."""

    epoch: int  # 1-based number of completed epochs
    metrics: dict[str, float]  # train_loss, lr, epoch (+ val_* and test metrics on evaluation epochs)
    checkpoint_dir: Path | None  # holds checkpoint.pt for this epoch (None when not checkpointing)


@dataclass
class FitResult:
    """The outcome of `fit`. Probabilities are float32 ``[N, K]`` on the CPU, labels int64 ``[N]``."""

    # final: last evaluation + recalibrated test metrics (ts_*, ets_*, dir_*), and test accuracy at the
    # last epoch (``test_accuracy``) and at its best epoch (``test_accuracy_best``, ``best_epoch``). The
    # best-epoch number is paper B's protocol, which selects the epoch ON THE TEST SET: an optimistic
    # estimate, reported next to the last-epoch one, never used to select anything.
    metrics: dict[str, float]
    history: list[dict[str, float]]  # one dict per epoch (the metrics of that epoch)
    test_probs: torch.Tensor
    test_labels: torch.Tensor
    val_probs: torch.Tensor
    val_labels: torch.Tensor
    label_matrix: torch.Tensor  # [K, K] float64: row k = target of a (non-trusted) sample labelled k
    artifacts: dict[str, Path] = field(default_factory=dict)  # name -> file (rank 0 only)
    precision: str = ""  # what ran: fp32 | bf16 [+channels_last] (cfg.precision resolved)


def fit(
    cfg: TrainConfig,
    *,
    data: Any = None,
    source_matrix: np.ndarray | torch.Tensor | None = None,
    tracker: Tracker | None = None,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    artifact_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    recalibrators: Mapping[str, Callable[[], Any]] | None = None,
) -> FitResult:
    """Train, evaluate, checkpoint and recalibrate one configuration.

    Args:
        cfg: the configuration (validated here, registries included).
        data: a `simlab.data.ImageData`; None loads ``cfg.dataset`` with the config's data options.
        source_matrix: ``[K, K]`` similarity source matrix (distances for ``label="similarity"``,
            scores for confidence labels); None fetches it from the `SimilarityStore` under
            ``<cache_dir>/similarity`` when the labels need one.
        tracker: where params, metrics and artifacts are logged (rank 0 only); None = `NullTracker`.
        on_epoch_end: called with an `EpochReport` on every rank after each epoch's checkpoint.
        checkpoint_dir: where ``checkpoint.pt`` is written each epoch; a checkpoint already there is
            resumed from. None: no checkpoints.
        artifact_dir: where the final artifacts are written; None: a fresh temporary folder.
        device: the training device; None follows ``cfg.device`` (``auto``: CUDA when available).
        recalibrators: key -> factory of a post-hoc recalibrator (``fit(logits, labels)``, then
            ``__call__(logits) -> probs``); metrics get the key as prefix. None =
            `simlab.calibration.RECALIBRATORS` (ts, ets, dir). Ignored when ``cfg.recalibrate`` is False.

    Returns:
        `FitResult` (the same metrics on every rank).

    Raises:
        NonFiniteLossError: the training loss became NaN/inf (at that step).
    """
    _check_arguments(
        cfg, data, source_matrix, tracker, on_epoch_end, checkpoint_dir, artifact_dir, recalibrators
    )
    world = World.current()
    if cfg.batch_size < world.size:
        raise ValueError(
            f"batch_size: the global batch must give every one of the {world.size} ranks a sample, "
            f"got {cfg.batch_size}"
        )
    dev = resolve_device(cfg.device, device)
    # Everything that draws from the global RNG (dropout) does so inside this fork, seeded per epoch;
    # the caller's global RNG state is left as it was.
    fork_devices = (
        [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=fork_devices):
        return _fit(
            cfg,
            data=data,
            source_matrix=source_matrix,
            # Only rank 0 logs: one run, one record.
            tracker=(NullTracker() if tracker is None else tracker) if world.rank == 0 else NullTracker(),
            on_epoch_end=on_epoch_end,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
            artifact_dir=artifact_dir,
            recalibrators=recalibrators or RECALIBRATORS,
            world=world,
            device=dev,
        )


def _fit(
    cfg: TrainConfig,
    *,
    data: ImageData | None,
    source_matrix: np.ndarray | torch.Tensor | None,
    tracker: Tracker,
    on_epoch_end: Callable[[EpochReport], None] | None,
    checkpoint_dir: Path | None,
    artifact_dir: str | os.PathLike | None,
    recalibrators: Mapping[str, Callable[[], Any]],
    world: World,
    device: torch.device,
) -> FitResult:
    t0 = time.perf_counter()
    # ---- set-up and resume -------------------------------------------------------------------
    state = build_state(
        cfg, data=data, source_matrix=source_matrix, checkpoint_dir=checkpoint_dir, world=world, device=device
    )
    if state.start_epoch == 0:
        # train_samples: the samples trained on (the trusted set alone for label "trusted_only").
        tracker.log_params(flat_params(cfg.to_dict()) | {"train_samples": state.n_train})
    # A tag, set at every start (params are written once): the run says what it actually used.
    tracker.set_tags(
        {
            "simlab.precision_resolved": state.precision.label,
            "simlab.device": device.type,  # what `device: auto` became
            "simlab.world_size": str(world.size),  # DDP processes (1: no DDP)
        }
    )
    log.info("precision %s (%s)", state.precision.label, state.precision.reason)
    log.info(
        "fit: %s on %s (%d train / %d val / %d test, K=%d), %s labels, loss %s, %d epochs from %d, "
        "device %s, world %d",
        cfg.model,
        state.data.name,
        state.n_train,
        len(state.val_y),
        len(state.test_y),
        state.num_classes,
        cfg.label,
        cfg.loss,
        cfg.epochs,
        state.start_epoch,
        device,
        world.size,
    )

    # ---- the epochs --------------------------------------------------------------------------
    last_logits: tuple[torch.Tensor, torch.Tensor] | None = None  # (val, test) of the last evaluation
    t_loop = time.perf_counter()
    for epoch in range(state.start_epoch + 1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        train_loss, rng_states = train_epoch(state, epoch)
        metrics: dict[str, float] = {"epoch": float(epoch), "train_loss": train_loss}
        scheduled = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
        # Also the first epoch this process runs: a per-epoch reporter (Ray Tune) then has the
        # objective in every report, from the start and after a resume.
        if scheduled or epoch == state.start_epoch + 1:
            val_logits, test_logits = predict_splits(state)
            metrics.update(split_metrics(val_logits, state.val_y, n_bins=cfg.n_bins, prefix="val_"))
            metrics.update(split_metrics(test_logits, state.test_y, n_bins=cfg.n_bins))
            last_logits = (val_logits, test_logits)
            metrics[TEST_ACCURACY] = metrics["accuracy"]
            if cfg.scheduler == "plateau" and scheduled:  # a resume must not add a step
                # paper B §4.1.1: halve the lr when validation accuracy stops improving.
                state.scheduler.step(metrics["val_accuracy"])
        elif cfg.test_accuracy_every and epoch % cfg.test_accuracy_every == 0:
            # Paper B's protocol needs test accuracy every epoch; a test forward only (no val_*).
            metrics[TEST_ACCURACY] = epoch_test_accuracy(state)
        metrics["lr"] = float(state.optimizer.param_groups[0]["lr"])
        state.history.append(metrics)
        tracker.log_metrics(metrics, step=epoch)
        save_state(state, epoch, rng_states, checkpoint_dir)
        _log_epoch(state, epoch, metrics, time.perf_counter() - t_epoch, time.perf_counter() - t_loop)
        if on_epoch_end is not None:
            on_epoch_end(EpochReport(epoch, dict(metrics), checkpoint_dir))

    # ---- final evaluation ----------------------------------------------------------------------
    # Resumed from a finished run: evaluate the restored weights.
    val_logits, test_logits = last_logits if last_logits is not None else predict_splits(state)
    final = dict(state.history[-1]) if state.history else {}
    if not any(k in final for k in METRIC_NAMES):
        final.update(split_metrics(val_logits, state.val_y, n_bins=cfg.n_bins, prefix="val_"))
        final.update(split_metrics(test_logits, state.test_y, n_bins=cfg.n_bins))
    end_metrics = best_test_accuracy(state.history)  # paper B's best epoch (selected on test)
    recal_probs: dict[str, torch.Tensor] = {}
    if cfg.recalibrate:
        recal_metrics, recal_probs = recalibrate(state, val_logits, test_logits, recalibrators)
        end_metrics.update(recal_metrics)
    if end_metrics:
        final.update(end_metrics)
        tracker.log_metrics(end_metrics, step=cfg.epochs)
    test_probs = torch.softmax(test_logits.double(), dim=1).float()
    val_probs = torch.softmax(val_logits.double(), dim=1).float()

    # ---- OOD scores and artifacts (rank 0) ------------------------------------------------------
    artifacts: dict[str, Path] = {}
    ood_conf = None
    if (cfg.ood_samples > 0 or cfg.ood_dataset is not None) and world.rank == 0:
        ood_conf, ood_metrics = ood_scores(state)
        final.update(ood_metrics)
        tracker.log_metrics(ood_metrics, step=cfg.epochs)
    if world.rank == 0:
        artifacts = write_artifacts(
            artifact_dir,
            cfg=cfg,
            test_probs=test_probs,
            test_labels=state.test_y,
            recal_probs=recal_probs,
            label_matrix=state.label_matrix,
            trusted_label_matrix=state.trusted_label_matrix,
            class_names=state.data.class_names,
            ood_confidences=ood_conf,
            tracker=tracker,
        )
    log.info(
        "fit done in %.1f s: %s",
        time.perf_counter() - t0,
        " ".join(
            f"{k}={final[k]:.4f}"
            for k in ("accuracy", "ece_hist_prediction", "ts_ece_hist_prediction")
            if k in final
        ),
    )
    return FitResult(
        metrics=final,
        history=[dict(h) for h in state.history],
        test_probs=test_probs,
        test_labels=state.test_y.clone(),
        val_probs=val_probs,
        val_labels=state.val_y.clone(),
        label_matrix=state.label_matrix.clone(),
        artifacts=artifacts,
        precision=state.precision.label,
    )


def _log_epoch(
    state: RunState, epoch: int, metrics: Mapping[str, float], took: float, elapsed: float
) -> None:
    """One line per epoch (INFO on rank 0, DEBUG elsewhere), with the ETA of the remaining epochs."""
    epochs = state.cfg.epochs
    log.log(
        logging.INFO if state.world.rank == 0 else logging.DEBUG,
        "epoch %d/%d train_loss=%.4f lr=%.4g%s (%.1f s, ETA %s)",
        epoch,
        epochs,
        metrics["train_loss"],
        metrics["lr"],
        "".join(
            f" {k}={metrics[k]:.4f}"
            for k in ("val_accuracy", "val_ece_hist_prediction", "accuracy")
            if k in metrics
        ),
        took,
        format_seconds(elapsed / (epoch - state.start_epoch) * (epochs - epoch)),
    )


def _check_arguments(
    cfg, data, source_matrix, tracker, on_epoch_end, checkpoint_dir, artifact_dir, recalibrators
) -> None:
    """Reject bad arguments before any expensive work (`fit`'s Args say what each may be)."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a simlab.config.TrainConfig, got {type(cfg).__name__}")
    cfg.validate()
    _check_registry_keys(cfg)
    if cfg.nesterov and cfg.momentum <= 0:
        raise ValueError(f"nesterov: needs momentum > 0, got momentum={cfg.momentum}")
    if data is not None:
        if not isinstance(data, ImageData):
            raise TypeError(f"data: expected a simlab.data.ImageData or None, got {type(data).__name__}")
        if data.name != cfg.dataset:
            log.warning(
                "data.name=%r differs from cfg.dataset=%r; training on the data given", data.name, cfg.dataset
            )
    if source_matrix is not None and not isinstance(source_matrix, (np.ndarray, torch.Tensor)):
        raise TypeError(
            f"source_matrix: expected a numpy array, torch.Tensor or None, got {type(source_matrix).__name__}"
        )
    if tracker is not None and not isinstance(tracker, Tracker):
        raise TypeError(
            "tracker: expected a simlab.tracking.Tracker (log_params, log_metrics, log_artifact, set_tags), "
            f"got {type(tracker).__name__}"
        )
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end: expected a callable or None, got {type(on_epoch_end).__name__}")
    for name, value in (("checkpoint_dir", checkpoint_dir), ("artifact_dir", artifact_dir)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name}: expected a str, os.PathLike or None, got {type(value).__name__}")
    if recalibrators is not None and not (
        isinstance(recalibrators, Mapping)
        and all(isinstance(k, str) and callable(v) for k, v in recalibrators.items())
    ):
        raise TypeError(
            "recalibrators: expected a mapping of str key -> recalibrator factory (callable), "
            f"got {type(recalibrators).__name__}"
        )
    # The OOD dataset's channels against the training images', before anything is trained.
    train_channels = (
        data.image_shape[0]
        if isinstance(data, ImageData)
        else dataset_channels(cfg.dataset, cfg.dataset_args)
    )
    check_ood_dataset(cfg, train_channels)


def _check_registry_keys(cfg: TrainConfig) -> None:
    """The config's registry keys, before any expensive work (`TrainConfig.validate` is torch-free)."""
    check_choice("dataset", cfg.dataset, tuple(DATASETS))
    check_dataset_args(cfg.dataset, cfg.dataset_args)
    check_choice("model", cfg.model, tuple(MODELS))
    check_choice("loss", cfg.loss, tuple(LOSSES))
    if cfg.similarity is not None:
        check_choice("similarity", cfg.similarity, tuple(SIMILARITIES))
