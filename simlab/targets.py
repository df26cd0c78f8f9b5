"""Training targets: which label matrix a `TrainConfig` trains with, and the target row of every sample.

`label_matrices` turns the config's label method (and, for similarity/confidence labels, the source
matrix from `simlab.similarity.sources`) into two ``[K, K]`` matrices whose row k is the target of a sample
labelled k: one for ordinary (possibly noisy) samples, one for the trusted set of paper B §4.1.
`training_targets` applies them per sample: the trusted set, the label noise and the relaxation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from simlab.config import TrainConfig
from simlab.labels import (
    class_pairs,
    confidence_labels,
    pair_confidence_labels,
    smooth_labels,
    uniform_smooth_labels,
)
from simlab.losses import relax
from simlab.noise import make_noisy_labels, trusted_mask
from simlab.seeds import derive_seed
from simlab.similarity import similarity_from_distances

__all__ = [
    "LABEL_BUILDERS",
    "LABEL_REGISTRY",
    "LabelMethod",
    "TrainingTargets",
    "confidence_pairs",
    "label_matrices",
    "needs_source_matrix",
    "prediction_tau",
    "training_targets",
]


def needs_source_matrix(cfg: TrainConfig) -> bool:
    """Whether `label_matrices` needs a source matrix for this config (paper A distances or paper B scores).

    The hand-made pair labels of paper B §4.1 are built from the class names alone.
    """
    return cfg.label == "similarity" or (cfg.label == "confidence" and cfg.confidence_source != "pairs")


def prediction_tau(scores: torch.Tensor) -> torch.Tensor:
    """Per-class threshold of paper B §4.2.2 (SPEC §2): ``tau[a] = mean(scores[a]) + std(scores[a])``.

    ``scores`` ``[K, K]``; returns ``[K]``. Population std (``correction=0``) as SPEC §2 fixes it.
    """
    return scores.mean(dim=1) + scores.std(dim=1, correction=0)


def _onehot(cfg: TrainConfig, names: Sequence[str], source: torch.Tensor | None):
    eye = torch.eye(len(names), dtype=torch.float64)
    return eye, eye.clone()


def _uniform(cfg: TrainConfig, names: Sequence[str], source: torch.Tensor | None):
    labels = uniform_smooth_labels(len(names), cfg.alpha)
    return labels, labels.clone()


def _similarity(cfg: TrainConfig, names: Sequence[str], source: torch.Tensor | None):
    # paper A eq. 17 (similarity from z-scored distances), then eq. 18 (smoothing with it).
    labels = smooth_labels(
        similarity_from_distances(source, cfg.beta, normalise=cfg.similarity_normalise), cfg.alpha
    )
    return labels, labels.clone()


def confidence_pairs(
    cfg: TrainConfig, class_names: Sequence[str], source_matrix: np.ndarray | torch.Tensor | None = None
) -> list[tuple[int, int]]:
    """The class pairs ``(a, b)`` of paper B §4.1 for this config: labels and asymmetric noise share them.

    From the ``pairs`` source's 0/1 matrix when given (``{(a, b) : a < b, M[a, b] = 1}``), else from the
    names in ``cfg.similarity_args["pairs"]``, else `simlab.labels.class_pairs` defaults (the CIFAR-10
    pairs truck-automobile, bird-airplane, deer-horse, cat-dog, frog-ship).
    """
    if source_matrix is not None:
        m = torch.as_tensor(source_matrix)
        k = len(class_names)
        if tuple(m.shape) != (k, k):
            raise ValueError(f"source_matrix: expected shape ({k}, {k}) pair matrix, got {tuple(m.shape)}")
        return [(a, b) for a in range(k) for b in range(a + 1, k) if float(m[a, b]) == 1.0]
    name_pairs = cfg.similarity_args.get("pairs") if cfg.confidence_source == "pairs" else None
    return class_pairs(list(class_names), None if name_pairs is None else [tuple(p) for p in name_pairs])


def _confidence(cfg: TrainConfig, names: Sequence[str], source: torch.Tensor | None):
    if cfg.confidence_source == "pairs":
        # paper B §4.1: 0.6/0.4 for (possibly noisy) samples, 0.95/0.05 for the trusted set.
        pairs = confidence_pairs(cfg, names, source)
        labels = pair_confidence_labels(len(names), pairs, cfg.confidence_own, cfg.confidence_other)
        trusted = pair_confidence_labels(len(names), pairs, cfg.trusted_own, cfg.trusted_other)
        return labels, trusted
    # paper B eq. 1-3 with the per-class threshold of §4.2.2.
    labels = confidence_labels(source, prediction_tau(source))
    return labels, labels.clone()


@dataclass(frozen=True)
class LabelMethod:
    """A label method: how its ``[K, K]`` label matrices are built and which samples it trains on.

    ``build(cfg, class_names, source) -> (labels, trusted_labels)``; ``train_on="trusted"`` trains on
    the trusted set alone (`training_targets` then returns its indices).
    """

    build: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    train_on: Literal["all", "trusted"] = "all"


LABEL_REGISTRY: dict[str, LabelMethod] = {
    "onehot": LabelMethod(_onehot),
    "uniform": LabelMethod(_uniform),
    "similarity": LabelMethod(_similarity),
    "confidence": LabelMethod(_confidence),
    # Paper B's controls for the trusted set (SimLab addition; issue 12): does a method beat what the
    # clean trusted images give on their own, or mixed clean into the noisy set with one-hot labels?
    "trusted_only": LabelMethod(_onehot, train_on="trusted"),  # one-hot clean labels, trusted set only
    "onehot_trusted": LabelMethod(_onehot),  # one-hot: noisy labels elsewhere, clean on the trusted set
}
LABEL_BUILDERS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    name: method.build for name, method in LABEL_REGISTRY.items()
}


def label_matrices(
    cfg: TrainConfig,
    class_names: Sequence[str],
    source_matrix: np.ndarray | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels [K, K], trusted_labels [K, K])`` in float64 on the CPU.

    Row k of ``labels`` is the target of a (possibly noisy) training sample labelled k; row k of
    ``trusted_labels`` the target of a trusted sample of class k (paper B §4.1). They differ only for
    the hand-made pair labels; otherwise both are the same matrix.

    ``source_matrix`` ``[K, K]``: class distances D for ``label="similarity"`` (paper A eq. 13-16), or
    class scores S for ``label="confidence"`` with a score source (paper B §4.2.2), or the ``pairs``
    source's 0/1 pair matrix (optional: without it the pairs come from `confidence_pairs`). Ignored
    for one-hot and uniform labels.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names: expected a sequence of str, got {type(class_names).__name__}")
    if len(class_names) < 2 or not all(isinstance(n, str) for n in class_names):
        raise ValueError(f"class_names: expected at least 2 class names (str), got {list(class_names)!r}")
    num_classes = len(class_names)
    source: torch.Tensor | None = None
    if needs_source_matrix(cfg) and source_matrix is None:
        raise ValueError(
            f"source_matrix: label={cfg.label!r} with source {cfg.source!r} needs a [K, K] "
            "source matrix, got None"
        )
    if needs_source_matrix(cfg) or (cfg.label == "confidence" and source_matrix is not None):
        if isinstance(source_matrix, np.ndarray):
            source = torch.from_numpy(np.asarray(source_matrix, dtype=np.float64))
        elif isinstance(source_matrix, torch.Tensor):
            source = source_matrix.detach().to("cpu", torch.float64)
        else:
            raise TypeError(
                f"source_matrix: expected a numpy array or torch.Tensor, got {type(source_matrix).__name__}"
            )
        if tuple(source.shape) != (num_classes, num_classes):
            raise ValueError(
                f"source_matrix: expected shape ({num_classes}, {num_classes}) for {num_classes} classes, "
                f"got {tuple(source.shape)}"
            )
        if not bool(torch.isfinite(source).all()):
            raise ValueError("source_matrix: expected finite values, got NaN/inf entries")
    builder = LABEL_BUILDERS.get(cfg.label)
    if builder is None:  # TrainConfig.validate already rejects this; kept for configs built unvalidated
        raise ValueError(f"label: unknown value {cfg.label!r}; valid values are: {', '.join(LABEL_BUILDERS)}")
    labels, trusted = builder(cfg, list(class_names), source)
    return labels.to(torch.float64), trusted.to(torch.float64)


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
    `confidence_pairs`). A non-trusted sample gets ``labels[noisy_label]`` ("when the
    wrong class is selected, the confidence label of the wrong class is used"), a trusted one
    ``trusted_labels[true_label]``; then ``relax(rows, cfg.relaxation, trusted)`` (eq. 9-10: trusted rows
    are never relaxed). The noise and the mask come from generators seeded by ``cfg.seed`` alone, so
    every DDP rank and every resumed run sees the same noisy labels.

    ``train_labels`` int ``[N]`` (clean); returns `TrainingTargets`.
    """
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
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "noise"))
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
