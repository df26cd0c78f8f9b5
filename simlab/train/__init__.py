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
rank)`` (`simlab.seeds`); each epoch re-derives its generators, so a resumed run draws exactly what the
uninterrupted run would have drawn. The global torch RNG is only touched inside
`torch.random.fork_rng` (for layers that draw from it, e.g. dropout) and is restored when `fit` returns.

Modules: `fit` (the straight-line `fit`), `state` (the run's state, built before the first epoch, and
its checkpoint), `epoch` (one training epoch), `schedule` (batches per epoch, lr schedules),
`evaluation` (metrics, recalibration, OOD scores), `artifacts` (files and figures), `distributed` (DDP
set-up and collectives).
Shape letters: ``N`` samples, ``K`` classes, ``B`` batch, ``C, H, W`` image channels/height/width.
"""

from simlab.checkpoint import CHECKPOINT_VERSION
from simlab.targets import TrainingTargets, training_targets
from simlab.train.artifacts import ood_confidence_figure, ood_confidence_panels
from simlab.train.epoch import NonFiniteLossError
from simlab.train.evaluation import (
    METRIC_NAMES,
    TEST_ACCURACY,
    best_test_accuracy,
    evaluate_ood,
    split_metrics,
)
from simlab.train.fit import EpochReport, FitResult, fit

__all__ = [
    "CHECKPOINT_VERSION",
    "METRIC_NAMES",
    "TEST_ACCURACY",
    "EpochReport",
    "FitResult",
    "NonFiniteLossError",
    "TrainingTargets",
    "best_test_accuracy",
    "evaluate_ood",
    "fit",
    "ood_confidence_figure",
    "ood_confidence_panels",
    "split_metrics",
    "training_targets",
]
