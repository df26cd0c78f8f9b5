"""The trainer: ``fit(cfg) -> FitResult``, importable, with no Ray and no MLflow imports.

One call trains one model on one configuration (paper A: class-similarity label smoothing; paper B:
confidence labels, label noise with a trusted set, projective losses), evaluates it every
``cfg.eval_every`` epochs (and at the first and last epoch it runs) on the validation and test splits
with the SPEC §6 metrics, checkpoints every epoch (and resumes from the checkpoint), and at the end fits
the post-hoc recalibrators on validation logits and writes the artifacts. Experiment tracking goes
through `simlab.tracking.Tracker`; the sweep layer (`sweeps/`) supplies the MLflow tracker, the Ray
reporting (``on_epoch_end``) and the process group. Under ``torch.distributed`` every rank trains its
shard of each global batch (DDP) and the evaluation gathers the logits of all ranks, so metrics are on
the whole split and equal on all ranks.

Randomness: every random stream is a `torch.Generator` derived from ``(cfg.seed, purpose, epoch,
rank)``; each epoch re-derives its generators, so a resumed run draws exactly what the uninterrupted
run would have drawn. The global torch RNG is only touched inside `torch.random.fork_rng` (for layers
that draw from it, e.g. dropout) and is restored when `fit` returns.

Shape letters: ``N`` samples, ``K`` classes, ``B`` batch, ``C, H, W`` image channels/height/width.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from simlab._validate import check_choice
from simlab.checkpoint import checkpoint_paths, load_latest, save_checkpoint
from simlab.config import TrainConfig
from simlab.metric_names import METRIC_NAMES
from simlab.precision import ResolvedPrecision, resolve_precision
from simlab.progress import format_seconds
from simlab.targets import LABEL_REGISTRY, confidence_pairs, label_matrices, needs_source_matrix
from simlab.tracking import NullTracker, Tracker

__all__ = [
    "CHECKPOINT_VERSION",
    "METRIC_NAMES",
    "EpochReport",
    "FitResult",
    "NonFiniteLossError",
    "evaluate_ood",
    "fit",
    "ood_confidence_figure",
    "split_metrics",
    "training_targets",
    "TrainingTargets",
    "best_test_accuracy",
]

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
# Config keys that may differ between a checkpoint and the run resuming it: where the data is and how
# the run executes, not what is trained.
_RESUME_FREE_KEYS = frozenset({"data_dir", "cache_dir", "device", "compile"})
_EVAL_BATCH = 512
# Per-epoch test accuracy (step = epoch), for paper B's best-epoch protocol; see best_test_accuracy.
TEST_ACCURACY = "test_accuracy"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch, the step and the value."""


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


# =============================================================================================
# public entry point
# =============================================================================================
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
            `simlab.recalibration.RECALIBRATORS` (ts, ets, dir). Ignored when ``cfg.recalibrate`` is False.

    Returns:
        `FitResult` (the same metrics on every rank).

    Raises:
        NonFiniteLossError: the training loss became NaN/inf (at that step).
    """
    # ---- validate, before any expensive work ----------------------------------------------
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a simlab.config.TrainConfig, got {type(cfg).__name__}")
    cfg.validate()
    _check_registry_keys(cfg)
    if cfg.nesterov and cfg.momentum <= 0:
        raise ValueError(f"nesterov: needs momentum > 0, got momentum={cfg.momentum}")
    if data is not None:
        from simlab.data import ImageData

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
    tracker = NullTracker() if tracker is None else tracker
    if not isinstance(tracker, Tracker):
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
    world = _World.current()
    if cfg.batch_size < world.size:
        raise ValueError(
            f"batch_size: the global batch must give every one of the {world.size} ranks a sample, "
            f"got {cfg.batch_size}"
        )
    dev = _resolve_device(cfg, device, world)

    # Everything that draws from the global RNG (dropout) does so inside this fork, seeded per epoch;
    # the caller's global RNG state is left as it was.
    fork_devices = (
        [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=fork_devices):
        run = _Run(cfg, data, source_matrix, tracker, on_epoch_end, checkpoint_dir, artifact_dir, dev, world)
        run.recalibrators = recalibrators
        return run.run()


# =============================================================================================
# the run
# =============================================================================================
@dataclass(frozen=True)
class _World:
    rank: int
    size: int

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def current(cls) -> _World:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls(0, 1)


class _Run:
    """State of one `fit` call; the methods are its phases."""

    def __init__(
        self, cfg, data, source_matrix, tracker, on_epoch_end, checkpoint_dir, artifact_dir, dev, world
    ):
        self.cfg: TrainConfig = cfg
        self.data = data
        self.source_matrix = source_matrix
        self.tracker: Tracker = tracker if world.rank == 0 else NullTracker()
        self.on_epoch_end = on_epoch_end
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.artifact_dir = artifact_dir
        self.dev: torch.device = dev
        self.world: _World = world
        self.history: list[dict[str, float]] = []
        self.recalibrators: Mapping[str, Callable[[], Any]] | None = None

    # ------------------------------------------------------------------------------------------
    def run(self) -> FitResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        self._load_data()
        self._build_targets()
        self._build_model()
        start_epoch = self._maybe_resume()
        if start_epoch == 0:
            # train_samples: the samples trained on (the trusted set alone for label "trusted_only").
            self.tracker.log_params(_flatten(cfg.to_dict()) | {"train_samples": self.n_train})
        # A tag, set at every start (params are written once): the run says what it actually used.
        self.tracker.set_tags({"simlab.precision_resolved": self.precision.label})
        log.info("precision %s (%s)", self.precision.label, self.precision.reason)
        log.info(
            "fit: %s on %s (%d train / %d val / %d test, K=%d), %s labels, loss %s, %d epochs from %d, "
            "device %s, world %d",
            cfg.model,
            self.data.name,
            self.n_train,
            len(self.data.val_y),
            len(self.data.test_y),
            self.k,
            cfg.label,
            cfg.loss,
            cfg.epochs,
            start_epoch,
            self.dev,
            self.world.size,
        )
        last_eval: tuple[int, torch.Tensor, torch.Tensor] | None = None
        t_loop = time.perf_counter()
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            metrics: dict[str, float] = {"epoch": float(epoch), "train_loss": train_loss}
            scheduled = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
            # Also the first epoch this process runs: a per-epoch reporter (Ray Tune) then has the
            # objective in every report, from the start and after a resume.
            if scheduled or epoch == start_epoch + 1:
                val_logits, test_logits = self._predict_splits()
                metrics.update(split_metrics(val_logits, self.val_y, n_bins=cfg.n_bins, prefix="val_"))
                metrics.update(split_metrics(test_logits, self.test_y, n_bins=cfg.n_bins))
                last_eval = (epoch, val_logits, test_logits)
                metrics[TEST_ACCURACY] = metrics["accuracy"]
                if cfg.scheduler == "plateau" and scheduled:  # a resume must not add a step
                    # paper B §4.1.1: halve the lr when validation accuracy stops improving.
                    self.scheduler.step(metrics["val_accuracy"])
            elif cfg.test_accuracy_every and epoch % cfg.test_accuracy_every == 0:
                # Paper B's protocol needs test accuracy every epoch; a test forward only (no val_*).
                metrics[TEST_ACCURACY] = self._test_accuracy()
            metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
            self.history.append(metrics)
            self.tracker.log_metrics(metrics, step=epoch)
            self._save_checkpoint(epoch)
            log.log(
                logging.INFO if self.world.rank == 0 else logging.DEBUG,
                "epoch %d/%d train_loss=%.4f lr=%.4g%s (%.1f s, ETA %s)",
                epoch,
                cfg.epochs,
                train_loss,
                metrics["lr"],
                "".join(
                    f" {k}={metrics[k]:.4f}"
                    for k in ("val_accuracy", "val_ece_hist_prediction", "accuracy")
                    if k in metrics
                ),
                time.perf_counter() - t_epoch,
                format_seconds((time.perf_counter() - t_loop) / (epoch - start_epoch) * (cfg.epochs - epoch)),
            )
            if self.on_epoch_end is not None:
                self.on_epoch_end(EpochReport(epoch, dict(metrics), self.checkpoint_dir))

        if last_eval is None:  # resumed from a finished run: evaluate the restored weights
            val_logits, test_logits = self._predict_splits()
        else:
            _, val_logits, test_logits = last_eval
        final = dict(self.history[-1]) if self.history else {}
        if not any(k in final for k in METRIC_NAMES):
            final.update(split_metrics(val_logits, self.val_y, n_bins=cfg.n_bins, prefix="val_"))
            final.update(split_metrics(test_logits, self.test_y, n_bins=cfg.n_bins))
        end_metrics = best_test_accuracy(self.history)  # paper B's best epoch (selected on test)
        recal_probs: dict[str, torch.Tensor] = {}
        if cfg.recalibrate:
            recal_metrics, recal_probs = self._recalibrate(val_logits, test_logits)
            end_metrics.update(recal_metrics)
        if end_metrics:
            final.update(end_metrics)
            self.tracker.log_metrics(end_metrics, step=cfg.epochs)
        test_probs = torch.softmax(test_logits.double(), dim=1).float()
        val_probs = torch.softmax(val_logits.double(), dim=1).float()
        artifacts: dict[str, Path] = {}
        ood_conf = None
        if cfg.ood_samples > 0 and self.world.rank == 0:
            ood_conf = self._ood_confidences()
            ood_metrics = {
                "ood_noise_confidence_mean": float(ood_conf.double().mean()),
                "ood_noise_confidence_median": float(ood_conf.double().median()),
            }
            final.update(ood_metrics)
            self.tracker.log_metrics(ood_metrics, step=cfg.epochs)
        if self.world.rank == 0:
            artifacts = self._write_artifacts(test_probs, recal_probs, ood_conf)
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
            history=[dict(h) for h in self.history],
            test_probs=test_probs,
            test_labels=self.test_y.clone(),
            val_probs=val_probs,
            val_labels=self.val_y.clone(),
            label_matrix=self.label_matrix.clone(),
            artifacts=artifacts,
            precision=self.precision.label,
        )

    # ------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        if self.data is None:
            from simlab.data import load_split

            self.data = load_split(cfg)
        data = self.data
        self.k = len(data.class_names)
        self.n_train = int(data.train_y.shape[0])
        if len(data.val_y) == 0:
            raise ValueError(
                "data: the validation split is empty; the metrics and recalibration need it "
                "(set val_fraction > 0)"
            )
        # Images stay uint8 on the training device; batches are converted there (no host round trips).
        self.train_x = data.train_x.to(self.dev)
        self.val_x = data.val_x.to(self.dev)
        self.test_x = data.test_x.to(self.dev)
        self.val_y = data.val_y.to("cpu", torch.long)
        self.test_y = data.test_y.to("cpu", torch.long)
        if self.source_matrix is None and needs_source_matrix(cfg):
            from simlab.similarity.store import SimilarityStore

            store = SimilarityStore(Path(cfg.resolved_cache_dir) / "similarity")
            self.source_matrix, meta = store.get(data, cfg.source, cfg.similarity_args)
            log.info(
                "similarity %s from %s (computed=%s)", cfg.source, meta.get("path"), meta.get("computed")
            )

    def _build_targets(self) -> None:
        cfg, data = self.cfg, self.data
        targets = training_targets(cfg, data.train_y, data.class_names, self.source_matrix)
        self.label_matrix = targets.label_matrix
        self.trusted_label_matrix = targets.trusted_label_matrix
        self.train_targets = targets.rows.to(self.dev, torch.float32)
        if targets.train_indices is not None:  # e.g. "trusted_only": train on these samples alone
            self.train_x = self.train_x[targets.train_indices.to(self.dev)]
            self.train_targets = self.train_targets[targets.train_indices.to(self.dev)]
            self.n_train = int(targets.train_indices.numel())
            log.info("label %s: training on %d samples (the trusted set)", cfg.label, self.n_train)
        if cfg.noise_kind != "none" or cfg.trusted_size:
            flipped = int((targets.noisy_labels != data.train_y.cpu()).sum())
            log.info(
                "label noise %s rate %.2f: %d of %d training labels flipped, %d trusted",
                cfg.noise_kind,
                cfg.noise_rate,
                flipped,
                self.n_train,
                int(targets.trusted.sum()),
            )

    def _build_model(self) -> None:
        from simlab.losses import LOSSES
        from simlab.models import build_model

        cfg = self.cfg
        gen = torch.Generator().manual_seed(_seed(cfg.seed, "init"))
        model = build_model(
            cfg.model, self.k, in_channels=int(self.data.train_x.shape[1]), generator=gen, **cfg.model_args
        )
        model = model.to(self.dev)
        self.precision = self._resolve_precision()
        self.channels_last = self.precision.channels_last
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the plain module: state dicts, evaluation
        net: nn.Module = model
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None
            )
        if cfg.compile:
            net = torch.compile(net)
        self.net = net  # what the training step calls
        self.loss_fn = LOSSES[cfg.loss]
        self.amp = self.precision.autocast  # bf16 autocast; losses and metrics take float32 logits
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
        self.steps_per_epoch = _steps_per_epoch(self.n_train, cfg.batch_size, self.world.size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size: {cfg.batch_size} leaves no batch for {self.n_train} training samples"
            )
        self.scheduler = _make_scheduler(cfg, self.optimizer, self.steps_per_epoch)

    def _resolve_precision(self) -> ResolvedPrecision:
        cfg = self.cfg
        kw = dict(amp=cfg.amp, channels_last=cfg.channels_last, cache_dir=cfg.resolved_cache_dir)
        if not (self.world.distributed and self.dev.type == "cpu" and cfg.precision == "auto"):
            return resolve_precision(cfg.precision, self.dev, **kw)
        # CPU DDP: rank 0's probe decides for every rank, so all ranks train in the same precision.
        box: list[str | None] = [None]
        if self.world.rank == 0:
            box = [resolve_precision(cfg.precision, self.dev, **kw).label]
        dist.broadcast_object_list(box, src=0)
        return ResolvedPrecision.from_label(str(box[0]), "precision='auto': rank 0's probe")

    # ------------------------------------------------------------------------------------------
    def _maybe_resume(self) -> int:
        if self.checkpoint_dir is None:
            return 0
        found = None
        if self.world.rank == 0:
            found = load_latest(self.checkpoint_dir, map_location="cpu")
        if self.world.distributed:
            # Only rank 0 is guaranteed to see the folder (ranks may be on other nodes): it sends the state.
            box = [found]
            dist.broadcast_object_list(box, src=0, device=self.dev if self.dev.type == "cuda" else None)
            found = box[0]
        if found is None:
            return 0
        state, path = found
        required = {"version", "epoch", "model", "optimizer", "scheduler", "config", "history"}
        missing = sorted(required - set(state))
        if missing or state["version"] != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint_dir: {path} is not a version-{CHECKPOINT_VERSION} training checkpoint "
                f"(version {state.get('version')!r}, missing keys {missing})"
            )
        saved = state.get("config", {})
        mine = self.cfg.to_dict()
        differ = sorted(
            k for k in set(saved) | set(mine) if k not in _RESUME_FREE_KEYS and saved.get(k) != mine.get(k)
        )
        if differ:
            raise ValueError(
                f"checkpoint_dir: {path} was written by a different config "
                f"(keys {', '.join(differ)} differ); use a fresh checkpoint_dir"
            )
        if list(state.get("class_names", [])) != list(self.data.class_names):
            raise ValueError(
                f"checkpoint_dir: {path} was trained on classes {state.get('class_names')}, "
                f"the data has {list(self.data.class_names)}"
            )
        saved_precision = state.get("precision")
        if self.cfg.precision == "auto" and saved_precision and saved_precision != self.precision.label:
            # Keep what the interrupted run resolved: one run, one precision (the probe may differ now).
            self.precision = ResolvedPrecision.from_label(
                saved_precision, "precision='auto': from the checkpoint"
            )
            self.amp, self.channels_last = self.precision.autocast, self.precision.channels_last
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            self.model.to(memory_format=fmt)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = [dict(h) for h in state["history"]]
        epoch = int(state["epoch"])
        log.info("resumed from %s at epoch %d", path, epoch)
        return epoch

    def _save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_dir is None:
            return
        if self.world.rank == 0:
            state = {
                "version": CHECKPOINT_VERSION,
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                # Each epoch re-derives its generators from (seed, purpose, epoch, rank), so resuming
                # needs only ``epoch``; the end-of-epoch states of rank 0 are kept for audit.
                "rng": {"seed": self.cfg.seed, "world_size": self.world.size, "states": self.rng_states},
                "config": self.cfg.to_dict(),
                "precision": self.precision.label,
                "history": [dict(h) for h in self.history],
                "class_names": list(self.data.class_names),
            }
            save_checkpoint(state, checkpoint_paths(self.checkpoint_dir)[0])
        if self.world.distributed:
            dist.barrier()  # on_epoch_end may read the checkpoint on any rank

    # ------------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> float:
        from simlab.data import prepare_images

        cfg, world, dev = self.cfg, self.world, self.dev
        # Shuffling is shared by all ranks (they cut the same global batches); augmentation, mixup and
        # the global RNG (dropout) are per rank.
        g_shuffle = torch.Generator().manual_seed(_seed(cfg.seed, "shuffle", epoch))
        g_aug = torch.Generator(device=dev).manual_seed(_seed(cfg.seed, "augment", epoch, world.rank))
        g_mix = torch.Generator().manual_seed(_seed(cfg.seed, "mixup", epoch, world.rank))
        # The global RNGs (dropout) of the CPU and of the training GPU only: fit's fork_rng restores them.
        global_seed = _seed(cfg.seed, "global", epoch, world.rank)
        torch.default_generator.manual_seed(global_seed)
        if dev.type == "cuda":
            with torch.cuda.device(dev):
                torch.cuda.manual_seed(global_seed)
        self.net.train()
        total = torch.zeros((), dtype=torch.float64, device=dev)
        count = 0
        for step, idx_global in enumerate(
            _global_batches(self.n_train, cfg.batch_size, world.size, g_shuffle), start=1
        ):
            n_global = int(idx_global.numel())
            idx = torch.tensor_split(idx_global, world.size)[world.rank].to(dev)
            n_local = int(idx.numel())
            x = prepare_images(
                self.train_x[idx],
                mean=self.data.mean,
                std=self.data.std,
                augment=cfg.augment,
                generator=g_aug,
                channels_last=self.channels_last,
            )
            targets = self.train_targets[idx]
            if cfg.mixup > 0:
                x, targets = _mixup(x, targets, cfg.mixup, g_mix)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.net(x)
            loss = self.loss_fn(logits.float(), targets)
            # The global mean loss, identical on every rank: all ranks stop at the same step.
            loss_sum = loss.detach().double() * n_local
            if world.distributed:
                dist.all_reduce(loss_sum)
            value = loss_sum.item() / n_global
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite training loss at epoch {epoch}, step {step}/{self.steps_per_epoch}: {value} "
                    f"(loss={cfg.loss}, lr={self.optimizer.param_groups[0]['lr']:.4g})"
                )
            # DDP averages gradients over ranks; weighting each rank's mean by its share of the global
            # batch makes that average the gradient of the global-batch mean even when shards differ.
            (loss * (n_local * world.size / n_global)).backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if cfg.scheduler == "cosine":
                self.scheduler.step()
            total += loss_sum
            count += n_global
        self.rng_states = {
            "shuffle": g_shuffle.get_state(),
            "augment": g_aug.get_state().cpu(),
            "mixup": g_mix.get_state(),
            "torch": torch.get_rng_state(),
        }
        return float(total.item() / count)

    # ------------------------------------------------------------------------------------------
    def _predict_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[N, K]`` (float32, CPU) of the whole validation and test splits, on every rank."""
        if self.world.distributed:
            # DDP broadcasts rank 0's buffers (BatchNorm running statistics) at every forward, after
            # which each rank updates them on its own shard: sync them so every rank evaluates the same
            # model, the one rank 0 checkpoints.
            for buf in self.model.buffers():
                dist.broadcast(buf, src=0)
        kw = dict(
            mean=self.data.mean,
            std=self.data.std,
            device=self.dev,
            amp=self.amp,
            channels_last=self.channels_last,
            world=self.world,
        )
        return _predict(self.model, self.val_x, **kw), _predict(self.model, self.test_x, **kw)

    def _test_accuracy(self) -> float:
        """Test accuracy of the current model (a test-split forward only, on every rank)."""
        from simlab.calibration import accuracy

        if self.world.distributed:
            for buf in self.model.buffers():  # as in _predict_splits
                dist.broadcast(buf, src=0)
        logits = _predict(
            self.model,
            self.test_x,
            mean=self.data.mean,
            std=self.data.std,
            device=self.dev,
            amp=self.amp,
            channels_last=self.channels_last,
            world=self.world,
        )
        # The same rule as split_metrics' "accuracy" (softmax in float64, then argmax).
        return float(accuracy(torch.softmax(logits.double(), dim=1), self.test_y))

    def _recalibrate(self, val_logits: torch.Tensor, test_logits: torch.Tensor):
        from simlab.calibration import RECALIBRATORS

        metrics: dict[str, float] = {}
        probs: dict[str, torch.Tensor] = {}
        if self.world.rank == 0:
            for key, factory in (self.recalibrators or RECALIBRATORS).items():
                t = time.perf_counter()
                try:
                    recal = factory()
                    recal.fit(val_logits.double(), self.val_y)
                    p = recal(test_logits.double()).float()
                    got = _prob_metrics(p, self.test_y, n_bins=self.cfg.n_bins, prefix=f"{key}_")
                except Exception as err:  # post-hoc: a recalibrator that cannot fit must not lose the run
                    log.warning(
                        "recalibration %s failed, skipped (its %s_* metrics are absent): %s", key, key, err
                    )
                    continue
                probs[key] = p
                metrics.update(got)
                log.info(
                    "recalibration %s: ece_hist_prediction %.4f (%.1f s)",
                    key,
                    metrics[f"{key}_ece_hist_prediction"],
                    time.perf_counter() - t,
                )
        if self.world.distributed:
            # Fitted once on rank 0 (the fits are iterative); every rank returns the same numbers.
            box = [metrics]
            dist.broadcast_object_list(box, src=0, device=self.dev if self.dev.type == "cuda" else None)
            metrics = box[0]
        return metrics, probs

    # ------------------------------------------------------------------------------------------
    def _ood_confidences(self) -> torch.Tensor:
        """Paper A §6.4: max-softmax confidences ``[cfg.ood_samples]`` on i.i.d. uniform-noise images
        shaped like the training images: one fixed set (its seed does not depend on the config), so
        every run is scored on the same images."""
        from simlab.data.batches import uniform_noise_images

        gen = torch.Generator().manual_seed(_seed(0, "ood-noise"))
        images = uniform_noise_images(
            self.cfg.ood_samples, tuple(int(s) for s in self.data.test_x.shape[1:]), generator=gen
        )
        return evaluate_ood(self.model, images, mean=self.data.mean, std=self.data.std, device=self.dev)

    def _write_artifacts(
        self,
        test_probs: torch.Tensor,
        recal_probs: Mapping[str, torch.Tensor],
        ood_conf: torch.Tensor | None = None,
    ) -> dict[str, Path]:
        from simlab.calibration import reliability_diagram

        cfg = self.cfg
        if self.artifact_dir is None:
            root = Path(tempfile.mkdtemp(prefix="simlab-artifacts-"))
        else:
            root = Path(self.artifact_dir)
            root.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}

        variants = {"raw": test_probs}
        if "ts" in recal_probs:
            variants["ts"] = recal_probs["ts"]
        for variant, probs in variants.items():
            for scope in ("prediction", "output"):
                name = f"reliability_{variant}_{scope}"
                fig = reliability_diagram(
                    probs,
                    self.test_y,
                    n_bins=cfg.n_bins,
                    scope=scope,
                    title=f"{cfg.model} {cfg.label} {variant.upper()} ({scope})",
                )
                out[name] = _atomic_write(
                    root / f"{name}.png", lambda fh, fig=fig: fig.savefig(fh, format="png", dpi=100)
                )
        matrix = self.label_matrix.numpy()
        out["label_matrix"] = _atomic_write(root / "label_matrix.npy", lambda fh: np.save(fh, matrix))
        out["label_matrix_png"] = _atomic_write(
            root / "label_matrix.png",
            lambda fh: _heatmap(matrix, self.data.class_names, f"label matrix ({cfg.label})").savefig(
                fh, format="png", dpi=100
            ),
        )
        if not torch.equal(self.trusted_label_matrix, self.label_matrix):
            trusted = self.trusted_label_matrix.numpy()
            out["trusted_label_matrix"] = _atomic_write(
                root / "trusted_label_matrix.npy", lambda fh: np.save(fh, trusted)
            )
        probs_np, labels_np = test_probs.numpy(), self.test_y.numpy()
        out["test_probs"] = _atomic_write(
            root / "test_probs.npz", lambda fh: np.savez(fh, probs=probs_np, labels=labels_np)
        )
        if ood_conf is not None:
            conf_np = ood_conf.numpy()
            out["ood_noise_confidences"] = _atomic_write(
                root / "ood_noise_confidences.npz", lambda fh: np.savez(fh, confidences=conf_np)
            )
        config_text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)
        out["config"] = _atomic_write(root / "config.json", lambda fh: fh.write(config_text.encode()))
        for path in out.values():
            self.tracker.log_artifact(path)
        return out


# =============================================================================================
# training targets (public)
# =============================================================================================
@dataclass(frozen=True)
class TrainingTargets:
    """Per-sample training targets of paper B §4.1 (all on the CPU)."""

    rows: torch.Tensor  # float64 [N, K]: the (relaxed) target row of every training sample
    noisy_labels: torch.Tensor  # int64 [N]: labels after noise injection (trusted samples never flip)
    trusted: torch.Tensor  # bool [N]: the class-balanced trusted set M
    label_matrix: torch.Tensor  # float64 [K, K]: row k = target of a non-trusted sample labelled k
    trusted_label_matrix: torch.Tensor  # float64 [K, K]: row k = target of a trusted sample of class k
    # int64 [M]: the samples trained on when the label method trains on a subset (LabelMethod.train_on
    # "trusted": the trusted set, ascending); None = all N.
    train_indices: torch.Tensor | None = None


def training_targets(
    cfg: TrainConfig,
    train_labels: torch.Tensor,
    class_names: Sequence[str],
    source_matrix: np.ndarray | torch.Tensor | None = None,
) -> TrainingTargets:
    """The target row of every training sample under ``cfg``'s labels, noise and trusted set.

    Paper B §4.1: a trusted mask of ``cfg.trusted_size`` class-balanced samples, then noise on the
    others (``cfg.noise_kind``/``cfg.noise_rate``; asymmetric noise flips within the pairs of
    `simlab.targets.confidence_pairs`). A non-trusted sample gets ``labels[noisy_label]`` ("when the
    wrong class is selected, the confidence label of the wrong class is used"), a trusted one
    ``trusted_labels[true_label]``; then ``relax(rows, cfg.relaxation, trusted)`` (eq. 9-10: trusted rows
    are never relaxed). The noise and the mask come from generators seeded by ``cfg.seed`` alone, so
    every DDP rank and every resumed run sees the same noisy labels.

    ``train_labels`` int ``[N]`` (clean); returns `TrainingTargets`.
    """
    from simlab.losses import relax
    from simlab.noise import make_noisy_labels, trusted_mask

    if (
        not isinstance(train_labels, torch.Tensor)
        or train_labels.dim() != 1
        or train_labels.is_floating_point()
    ):
        got = (
            f"{train_labels.dtype} tensor of shape {tuple(train_labels.shape)}"
            if isinstance(train_labels, torch.Tensor)
            else type(train_labels).__name__
        )
        raise ValueError(f"train_labels: expected an integer [N] tensor, got {got}")
    labels, trusted_labels = label_matrices(cfg, class_names, source_matrix)
    k = len(class_names)
    y = train_labels.to("cpu", torch.long)
    gen = torch.Generator().manual_seed(_seed(cfg.seed, "noise"))
    if cfg.trusted_size > 0:
        trusted = trusted_mask(y, k, cfg.trusted_size, generator=gen)
    else:
        trusted = torch.zeros_like(y, dtype=torch.bool)
    if cfg.noise_kind != "none":
        pairs = None
        if cfg.noise_kind == "asymmetric":
            pairs = confidence_pairs(
                cfg, class_names, source_matrix if cfg.confidence_source == "pairs" else None
            )
        noisy = make_noisy_labels(
            y, k, cfg.noise_rate, cfg.noise_kind, pairs=pairs, trusted=trusted, generator=gen
        )
    else:
        noisy = y.clone()
    rows = torch.where(trusted[:, None], trusted_labels[y], labels[noisy])
    rows = relax(rows, cfg.relaxation, trusted)  # paper B eq. 9-10
    indices = None
    if LABEL_REGISTRY[cfg.label].train_on == "trusted":
        indices = torch.nonzero(trusted).squeeze(1)
    return TrainingTargets(rows, noisy, trusted, labels, trusted_labels, indices)


def best_test_accuracy(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``{"test_accuracy_best", "best_epoch"}``: the highest per-epoch ``test_accuracy`` in ``history``
    (the first epoch reaching it). Paper B's protocol: it selects the epoch on the test set, so it is
    an optimistic number (beside the last-epoch one, never used to select). Empty without any."""
    scored = [(h[TEST_ACCURACY], int(h["epoch"])) for h in history if TEST_ACCURACY in h]
    if not scored:
        return {}
    value, epoch = max(scored, key=lambda t: (t[0], -t[1]))
    return {"test_accuracy_best": float(value), "best_epoch": float(epoch)}


# =============================================================================================
# evaluation helpers (public)
# =============================================================================================
def split_metrics(
    logits: torch.Tensor, labels: torch.Tensor, *, n_bins: int = 15, prefix: str = ""
) -> dict[str, float]:
    """SPEC §6 metrics of ``logits [N, K]`` against ``labels [N]``, keys ``prefix + METRIC_NAMES``."""
    return _prob_metrics(torch.softmax(logits.double(), dim=1), labels, n_bins=n_bins, prefix=prefix)


def _prob_metrics(probs: torch.Tensor, labels: torch.Tensor, *, n_bins: int, prefix: str) -> dict[str, float]:
    from simlab.calibration import accuracy, brier, hist_ece, kde_ece, nll

    probs = probs.detach().to("cpu", torch.float64)
    probs = probs / probs.sum(dim=1, keepdim=True)  # float32 round-off of recalibrated outputs
    labels = labels.to("cpu", torch.long)
    values = {
        "accuracy": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "brier": brier(probs, labels),
        "ece_hist_prediction": hist_ece(probs, labels, n_bins=n_bins, scope="prediction"),
        "ece_hist_output": hist_ece(probs, labels, n_bins=n_bins, scope="output"),
        "ece_kde_prediction": kde_ece(probs, labels, scope="prediction"),
        "ece_kde_output": kde_ece(probs, labels, scope="output"),
    }
    return {prefix + k: float(v) for k, v in values.items()}


@torch.no_grad()
def evaluate_ood(
    model: nn.Module,
    images_uint8: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = _EVAL_BATCH,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Max-softmax confidence ``[N]`` (float32, CPU) of ``model`` on out-of-distribution images.

    Paper A §6.4 / Fig. 3: the distribution of prediction confidences on unseen data or uniform noise
    (`simlab.data.uniform_noise_images`). ``images_uint8`` ``[N, C, H, W]`` uint8, normalised with the
    training ``mean``/``std`` exactly as in training. The model is put in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if (
        not isinstance(images_uint8, torch.Tensor)
        or images_uint8.dtype != torch.uint8
        or images_uint8.dim() != 4
    ):
        got = (
            f"{images_uint8.dtype} tensor of shape {tuple(images_uint8.shape)}"
            if isinstance(images_uint8, torch.Tensor)
            else type(images_uint8).__name__
        )
        raise ValueError(f"images_uint8: expected a uint8 [N, C, H, W] tensor, got {got}")
    if len(mean) != images_uint8.shape[1] or len(std) != images_uint8.shape[1]:
        raise ValueError(
            f"mean/std: expected {images_uint8.shape[1]} channel values each, got {len(mean)} and {len(std)}"
        )
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev)
    logits = _predict(
        model,
        images_uint8.to(dev),
        mean=mean,
        std=std,
        device=dev,
        amp=False,
        channels_last=False,
        world=_World(0, 1),
        batch_size=batch_size,
    )
    return torch.softmax(logits.double(), dim=1).max(dim=1).values.float()


def ood_confidence_figure(
    confidences: Mapping[str, torch.Tensor | np.ndarray], *, bins: int = 20, title: str | None = None
):
    """Histogram of max-softmax confidences per method, as in paper A Fig. 3 (matplotlib ``Figure``).

    ``confidences``: method name -> ``[N]`` confidences in [0, 1] (e.g. from `evaluate_ood`).
    Each histogram is normalised to a density so methods with different N compare.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(confidences, Mapping) or not confidences:
        raise ValueError("confidences: expected a non-empty mapping of method name -> [N] confidences")
    if not (isinstance(bins, int) and bins > 0):
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    fig = Figure(figsize=(5.0, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, conf in confidences.items():
        values = conf.detach().cpu().numpy() if isinstance(conf, torch.Tensor) else np.asarray(conf)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(
                f"confidences[{name!r}]: expected a non-empty [N] array, got shape {values.shape}"
            )
        ax.hist(values, bins=edges, density=True, histtype="step", linewidth=1.5, label=str(name))
    ax.set_xlim(0, 1)
    ax.set_xlabel("Confidence")
    ax.set_ylabel("Density")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


# =============================================================================================
# internals
# =============================================================================================
def _seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one purpose, derived from the config seed (independent streams per purpose)."""
    text = "/".join(map(str, (seed, *parts)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _resolve_device(cfg: TrainConfig, device: str | torch.device | None, world: _World) -> torch.device:
    if device is not None:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"device: expected a str, torch.device or None, got {type(device).__name__}")
        dev = torch.device(device)
    elif cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        dev = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise ValueError("device: cfg.device='cuda' but CUDA is not available")
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= world_size else 0)


def _global_batches(
    n: int, batch_size: int, world_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Shuffled index batches of ``batch_size`` (the last one smaller), the same on every rank.

    A last batch with fewer samples than ranks is dropped, so every rank always gets a sample.
    """
    from simlab.data import epoch_batches

    for idx in epoch_batches(n, batch_size, generator=generator):
        if idx.numel() >= world_size:
            yield idx


def _mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator):
    """Mixup (Zhang et al. 2018): ``lam x + (1 - lam) x[perm]``, the same for targets.

    ``lam ~ Beta(alpha, alpha)``, one per batch; ``x [B, C, H, W]``, ``targets [B, K]``.
    """
    from scipy.special import betaincinv

    u = float(torch.rand((), generator=generator))
    lam = float(betaincinv(alpha, alpha, u))  # inverse-CDF sample of Beta(alpha, alpha) from our generator
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
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


@torch.no_grad()
def _predict(
    model: nn.Module,
    x_uint8: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    amp: bool,
    channels_last: bool,
    world: _World,
    batch_size: int = _EVAL_BATCH,
) -> torch.Tensor:
    """Logits ``[N, K]`` float32 on the CPU. Under DDP each rank runs a contiguous shard and the padded
    shards are all-gathered, so every rank returns the logits of all N images in order."""
    from simlab.data import prepare_images

    was_training = model.training
    model.eval()
    n = int(x_uint8.shape[0])
    per_rank = -(-n // world.size)
    lo, hi = min(n, world.rank * per_rank), min(n, (world.rank + 1) * per_rank)
    chunks = []
    for start in range(lo, hi, batch_size):
        xb = prepare_images(
            x_uint8[start : min(hi, start + batch_size)],
            mean=mean,
            std=std,
            augment=False,
            generator=None,
            channels_last=channels_last,
        )
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            chunks.append(model(xb).float())
    local = torch.cat(chunks) if chunks else None
    if world.distributed:
        k = _num_outputs(model, local)
        padded = torch.zeros(per_rank, k, dtype=torch.float32, device=device)
        if local is not None:
            padded[: local.shape[0]] = local
        gathered = [torch.empty_like(padded) for _ in range(world.size)]
        dist.all_gather(gathered, padded)
        logits = torch.cat(gathered)[:n]
    else:
        logits = local if local is not None else torch.zeros(0, _num_outputs(model, None), device=device)
    model.train(was_training)
    return logits.cpu()


def _num_outputs(model: nn.Module, local: torch.Tensor | None) -> int:
    if local is not None:
        return int(local.shape[1])
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("model: cannot tell the number of classes of a model without a final nn.Linear")
    return int(last[-1].out_features)


def _check_registry_keys(cfg: TrainConfig) -> None:
    """The config's registry keys, before any expensive work (`TrainConfig.validate` is torch-free)."""
    from simlab.data import DATASETS
    from simlab.losses import LOSSES
    from simlab.models import MODELS
    from simlab.similarity.sources import SIMILARITIES

    check_choice("dataset", cfg.dataset, tuple(DATASETS))
    check_choice("model", cfg.model, tuple(MODELS))
    check_choice("loss", cfg.loss, tuple(LOSSES))
    if cfg.similarity is not None:
        check_choice("similarity", cfg.similarity, tuple(SIMILARITIES))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model_args": {"depth": 28}}`` -> ``{"model_args.depth": 28}`` (tracker params are flat)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _heatmap(matrix: np.ndarray, class_names: Sequence[str], title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = matrix.shape[0]
    size = min(12.0, 2.0 + 0.35 * k)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="viridis", vmin=0.0)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if k <= 30:
        ax.set_xticks(range(k), labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels=list(class_names), fontsize=7)
    ax.set_xlabel("target class")
    ax.set_ylabel("labelled class")
    ax.set_title(title)
    return fig


def _atomic_write(path: Path, write: Callable[[Any], object]) -> Path:
    """Write ``path`` through ``write(binary file)`` into a temp file in the same folder, then replace."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
