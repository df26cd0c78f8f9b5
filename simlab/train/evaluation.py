"""What `fit` measures: the SPEC §6 metrics of logits, the recalibrated metrics, paper B's best-epoch
test accuracy, and the out-of-distribution confidences of paper A §6.4.

`METRIC_NAMES` (`simlab.metric_names`, torch-free) is the one list of metric names, and the key list
of the metric table `split_metrics` computes (checked at import), so a metric added there is logged,
checkpointed and recalibrated everywhere. Logits are predicted in batches; under DDP every rank
predicts its shard and the shards are all-gathered, so the metrics are on the whole split and equal on
all ranks.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from simlab.calibration import accuracy, brier, confidence_gap, hist_ece, kde_ece, nll
from simlab.data import (
    DATASETS,
    check_dataset_args,
    dataset_channels,
    load_dataset,
    prepare_images,
    resize_images,
    uniform_noise_images,
)
from simlab.metric_names import METRIC_NAMES
from simlab.seeds import derive_seed
from simlab.train.distributed import (
    SINGLE,
    World,
    all_gather_rows,
    broadcast_from_rank0,
    shard_bounds,
    sync_buffers,
)

if TYPE_CHECKING:
    from simlab.train.state import RunState

__all__ = [
    "METRIC_NAMES",
    "TEST_ACCURACY",
    "best_test_accuracy",
    "check_ood_dataset",
    "epoch_test_accuracy",
    "evaluate_ood",
    "ood_dataset_confidences",
    "ood_dataset_images",
    "ood_dataset_key",
    "ood_noise_confidences",
    "ood_scores",
    "predict_logits",
    "predict_splits",
    "prob_metrics",
    "recalibrate",
    "split_metrics",
]

log = logging.getLogger(__name__)

EVAL_BATCH = 512
# SPEC §6 metrics of probabilities ``[N, K]`` float64 against labels ``[N]``: name -> fn(probs, labels,
# n_bins). Computed on the test split (no prefix), validation (``val_``) and, for the recalibrated test
# predictions, with the recalibrator's key as prefix (``ts_``, ``ets_``, ``dir_``).
_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], Any]] = {
    "accuracy": lambda p, y, n_bins: accuracy(p, y),
    "nll": lambda p, y, n_bins: nll(p, y),
    "brier": lambda p, y, n_bins: brier(p, y),
    "ece_hist_prediction": lambda p, y, n_bins: hist_ece(p, y, n_bins=n_bins, scope="prediction"),
    "ece_hist_output": lambda p, y, n_bins: hist_ece(p, y, n_bins=n_bins, scope="output"),
    "ece_kde_prediction": lambda p, y, n_bins: kde_ece(p, y, scope="prediction"),
    "ece_kde_output": lambda p, y, n_bins: kde_ece(p, y, scope="output"),
    "confidence_gap": lambda p, y, n_bins: confidence_gap(p, y),
}
if tuple(_METRICS) != METRIC_NAMES:  # the sweep spec checks objectives against the torch-free list
    raise ImportError(
        f"simlab.train.evaluation: metric table {tuple(_METRICS)} != METRIC_NAMES {METRIC_NAMES}"
    )
# Per-epoch test accuracy (step = epoch), for paper B's best-epoch protocol; see best_test_accuracy.
TEST_ACCURACY = "test_accuracy"


def split_metrics(
    logits: torch.Tensor, labels: torch.Tensor, *, n_bins: int = 15, prefix: str = ""
) -> dict[str, float]:
    """SPEC §6 metrics of ``logits [N, K]`` against ``labels [N]``, keys ``prefix + METRIC_NAMES``."""
    return prob_metrics(torch.softmax(logits.double(), dim=1), labels, n_bins=n_bins, prefix=prefix)


def prob_metrics(probs: torch.Tensor, labels: torch.Tensor, *, n_bins: int, prefix: str) -> dict[str, float]:
    """`split_metrics` of probabilities ``[N, K]`` (renormalised in float64 first)."""
    probs = probs.detach().to("cpu", torch.float64)
    probs = probs / probs.sum(dim=1, keepdim=True)  # float32 round-off of recalibrated outputs
    labels = labels.to("cpu", torch.long)
    return {prefix + name: float(fn(probs, labels, n_bins)) for name, fn in _METRICS.items()}


def best_test_accuracy(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``{"test_accuracy_best", "best_epoch"}``: the highest per-epoch ``test_accuracy`` in ``history``
    (the first epoch reaching it). Paper B's protocol: it selects the epoch on the test set, so it is
    an optimistic number (beside the last-epoch one, never used to select). Empty without any."""
    scored = [(h[TEST_ACCURACY], int(h["epoch"])) for h in history if TEST_ACCURACY in h]
    if not scored:
        return {}
    value, epoch = max(scored, key=lambda t: (t[0], -t[1]))
    return {"test_accuracy_best": float(value), "best_epoch": float(epoch)}


# ---------------------------------------------------------------------------------------------
# logits of a split
@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x_uint8: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    amp: bool,
    channels_last: bool,
    world: World,
    batch_size: int = EVAL_BATCH,
) -> torch.Tensor:
    """Logits ``[N, K]`` float32 on the CPU. Under DDP each rank runs a contiguous shard and the padded
    shards are all-gathered, so every rank returns the logits of all N images in order."""
    was_training = model.training
    model.eval()
    n = int(x_uint8.shape[0])
    lo, hi, _ = shard_bounds(n, world)
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
    num_cols = int(local.shape[1]) if local is not None else _num_outputs(model)
    logits = all_gather_rows(local, n=n, num_cols=num_cols, world=world, device=device)
    model.train(was_training)
    return logits.cpu()


def _num_outputs(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("model: cannot tell the number of classes of a model without a final nn.Linear")
    return int(last[-1].out_features)


def _predict(state: RunState, x_uint8: torch.Tensor) -> torch.Tensor:
    return predict_logits(
        state.model,
        x_uint8,
        mean=state.data.mean,
        std=state.data.std,
        device=state.device,
        amp=state.precision.autocast,
        channels_last=state.precision.channels_last,
        world=state.world,
    )


def predict_splits(state: RunState) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, K]`` (float32, CPU) of the whole validation and test splits, on every rank."""
    sync_buffers(state.model, state.world)
    return _predict(state, state.val_x), _predict(state, state.test_x)


def epoch_test_accuracy(state: RunState) -> float:
    """Test accuracy of the current model (a test-split forward only, on every rank)."""
    sync_buffers(state.model, state.world)
    logits = _predict(state, state.test_x)
    # The same rule as split_metrics' "accuracy" (softmax in float64, then argmax).
    return float(accuracy(torch.softmax(logits.double(), dim=1), state.test_y))


# ---------------------------------------------------------------------------------------------
# post-hoc recalibration
def recalibrate(
    state: RunState,
    val_logits: torch.Tensor,
    test_logits: torch.Tensor,
    recalibrators: Mapping[str, Callable[[], Any]],
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Fit each recalibrator on the validation logits, score it on the test logits.

    Returns ``(metrics, probs)``: ``<key>_<metric>`` for every recalibrator that fitted (on every rank:
    fitted once on rank 0, the fits being iterative, and broadcast) and its test probabilities ``[N, K]``
    float32 (rank 0 only; empty elsewhere). A recalibrator that fails is logged and skipped.
    """
    metrics: dict[str, float] = {}
    probs: dict[str, torch.Tensor] = {}
    if state.world.rank == 0:
        for key, factory in recalibrators.items():
            t = time.perf_counter()
            try:
                recal = factory()
                recal.fit(val_logits.double(), state.val_y)
                p = recal(test_logits.double()).float()
                got = prob_metrics(p, state.test_y, n_bins=state.cfg.n_bins, prefix=f"{key}_")
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
    return broadcast_from_rank0(metrics, state.world, state.device), probs


# ---------------------------------------------------------------------------------------------
# out-of-distribution confidences (paper A §6.4)
@torch.no_grad()
def evaluate_ood(
    model: nn.Module,
    images_uint8: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = EVAL_BATCH,
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
    logits = predict_logits(
        model,
        images_uint8.to(dev),
        mean=mean,
        std=std,
        device=dev,
        amp=False,
        channels_last=False,
        world=SINGLE,
        batch_size=batch_size,
    )
    return torch.softmax(logits.double(), dim=1).max(dim=1).values.float()


def ood_noise_confidences(state: RunState) -> tuple[torch.Tensor, dict[str, float]]:
    """Paper A §6.4: max-softmax confidences ``[cfg.ood_samples]`` on i.i.d. uniform-noise images
    shaped like the training images, and their mean and median (``ood_noise_confidence_*``).

    One fixed set of images (its seed does not depend on the config), so every run is scored on the
    same images.
    """
    gen = torch.Generator().manual_seed(derive_seed(0, "ood-noise"))
    images = uniform_noise_images(
        state.cfg.ood_samples, tuple(int(s) for s in state.data.test_x.shape[1:]), generator=gen
    )
    conf = evaluate_ood(state.model, images, mean=state.data.mean, std=state.data.std, device=state.device)
    metrics = {
        "ood_noise_confidence_mean": float(conf.double().mean()),
        "ood_noise_confidence_median": float(conf.double().median()),
    }
    return conf, metrics


def ood_dataset_key(name: str) -> str:
    """The name a real OOD dataset's scores go under: ``ood_<key>_confidence_mean`` and the OOD
    artifact's array ``ood_<key>`` (the `DATASETS` key, lower-case, other characters as ``_``)."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "dataset"


def check_ood_dataset(cfg: Any, train_channels: int) -> None:
    """Cheap checks (nothing decoded) of ``cfg.ood_dataset`` before training: a `DATASETS` key, its
    ``ood_dataset_args`` known to its loader, and images with ``train_channels`` channels."""
    if cfg.ood_dataset is None:
        return
    if cfg.ood_dataset not in DATASETS:
        raise ValueError(f"ood_dataset: unknown dataset {cfg.ood_dataset!r}; valid: {', '.join(DATASETS)}")
    check_dataset_args(cfg.ood_dataset, cfg.ood_dataset_args, field="ood_dataset_args")
    channels = dataset_channels(cfg.ood_dataset, cfg.ood_dataset_args)
    if channels != train_channels:
        raise ValueError(
            f"ood_dataset: {cfg.ood_dataset!r} gives {channels}-channel images but the model is trained on "
            f"{train_channels}-channel images ({cfg.dataset!r}); choose an OOD dataset with "
            f"{train_channels} channels"
        )


def ood_dataset_images(cfg: Any, image_shape: Sequence[int]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]``: the test split of ``cfg.ood_dataset`` (`load_dataset` with ``ood_data_dir``,
    ``ood_dataset_args`` and the run's cache folder), at the training images' ``(C, H, W)``.

    Resized where needed: through the loader's own ``image_size`` option when it has one and the
    images are square (decoding at that size, cached), else bilinearly with `resize_images`.
    """
    c, h, w = (int(s) for s in image_shape)
    check_ood_dataset(cfg, c)
    args = dict(cfg.ood_dataset_args)
    if "image_size" in DATASETS[cfg.ood_dataset].options and "image_size" not in args and h == w:
        args["image_size"] = h
    data = load_dataset(
        cfg.ood_dataset, data_dir=cfg.ood_data_dir, cache_dir=cfg.resolved_cache_dir, val_fraction=0.0, **args
    )
    if data.test_x.shape[1] != c:
        raise ValueError(
            f"ood_dataset: {cfg.ood_dataset!r} has {data.test_x.shape[1]}-channel images, the training "
            f"images {c}"
        )
    return resize_images(data.test_x, (h, w))


def ood_dataset_confidences(state: RunState) -> tuple[torch.Tensor, dict[str, float]]:
    """Paper A §6.4 on a real unseen dataset: max-softmax confidences on ``cfg.ood_dataset``'s test
    split (`ood_dataset_images`), normalised as the training images, and their mean and median
    (``ood_<key>_confidence_*``, key = `ood_dataset_key`)."""
    images = ood_dataset_images(state.cfg, tuple(state.data.test_x.shape[1:]))
    conf = evaluate_ood(state.model, images, mean=state.data.mean, std=state.data.std, device=state.device)
    key = ood_dataset_key(state.cfg.ood_dataset)
    log.info("OOD: %d %s test images scored", len(conf), state.cfg.ood_dataset)
    metrics = {
        f"ood_{key}_confidence_mean": float(conf.double().mean()),
        f"ood_{key}_confidence_median": float(conf.double().median()),
    }
    return conf, metrics


def ood_scores(state: RunState) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every OOD score the config asks for: uniform noise (``cfg.ood_samples`` > 0; array
    ``confidences``) and the real dataset (``cfg.ood_dataset``; array ``ood_<key>``), with their
    metrics. The arrays are the OOD artifact's (``ood_noise_confidences.npz``)."""
    arrays: dict[str, torch.Tensor] = {}
    metrics: dict[str, float] = {}
    if state.cfg.ood_samples > 0:
        arrays["confidences"], noise_metrics = ood_noise_confidences(state)
        metrics.update(noise_metrics)
    if state.cfg.ood_dataset is not None:
        conf, dataset_metrics = ood_dataset_confidences(state)
        arrays[f"ood_{ood_dataset_key(state.cfg.ood_dataset)}"] = conf
        metrics.update(dataset_metrics)
    return arrays, metrics
