"""Label matrices (SPEC §2): row k of every ``[K, K]`` matrix is the training target of class k.

Paper A: class-similarity smoothing (eq. 18) and uniform smoothing. Paper B: confidence labels from
similarity scores (eq. 1-3), hand-made pair labels (§4.1) and scores from a model's predictions
(§4.2.2). ``K`` classes, ``N`` samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from simlab._validate import (
    check_float_tensor,
    check_labels,
    check_num_classes,
    check_pairs,
    check_real,
    check_rows_stochastic,
    check_square,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CIFAR10_PAIRS",
    "class_pairs",
    "confidence_labels",
    "pair_confidence_labels",
    "prediction_similarity",
    "smooth_labels",
    "uniform_smooth_labels",
]

# Paper B §4.1: the CIFAR-10 similarity groups (after refs. [13, 19]).
CIFAR10_PAIRS: tuple[tuple[str, str], ...] = (
    ("truck", "automobile"),
    ("bird", "airplane"),
    ("deer", "horse"),
    ("cat", "dog"),
    ("frog", "ship"),
)
_CIFAR10_NAMES = frozenset(name for pair in CIFAR10_PAIRS for name in pair)


def class_pairs(
    class_names: Sequence[str], name_pairs: Sequence[tuple[str, str]] | None = None
) -> list[tuple[int, int]]:
    """Index pairs ``(a, b)`` of similar classes, for `pair_confidence_labels` and asymmetric noise.

    With ``name_pairs`` given, each name is looked up in ``class_names``. Without, the CIFAR-10 class
    names get the paper B pairs (`CIFAR10_PAIRS`); any other class list gets consecutive classes
    ``(0, 1), (2, 3), ...`` (last class unpaired when K is odd) -- an arbitrary convention, not a
    similarity: pass ``name_pairs`` for meaningful pairs.
    """
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names: expected a sequence of str, got {type(class_names).__name__}")
    names = list(class_names)
    if not all(isinstance(c, str) for c in names):
        raise TypeError("class_names: expected a sequence of str, got non-str entries")
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ValueError(f"class_names: expected unique names, got duplicates {dupes}")
    if name_pairs is None:
        if set(names) == _CIFAR10_NAMES:
            name_pairs = CIFAR10_PAIRS
        else:
            return [(i, i + 1) for i in range(0, len(names) - 1, 2)]
    index = {c: i for i, c in enumerate(names)}
    if isinstance(name_pairs, str):
        raise TypeError("name_pairs: expected a sequence of (name, name) pairs, got str")
    missing = [c for pair in name_pairs for c in pair if c not in index]
    if missing:
        raise ValueError(f"name_pairs: names not in class_names: {missing}; class_names are {names}")
    pairs = [(index[a], index[b]) for a, b in name_pairs]
    return check_pairs("name_pairs", pairs, len(names))


def smooth_labels(similarity: torch.Tensor, alpha: float) -> torch.Tensor:
    """Class-similarity smooth labels ``(1 - alpha) I + alpha S`` (paper A eq. 18).

    Args:
        similarity: ``[K, K]`` float, non-negative rows summing to 1 (from `similarity_from_distances`).
        alpha: in ``[0, 1]``, the label mass moved to the other classes (0 gives one-hot).

    Returns:
        ``[K, K]`` in ``similarity``'s dtype and device.
    """
    similarity = check_square("similarity", similarity)
    check_rows_stochastic("similarity", similarity)
    alpha = check_real("alpha", alpha, low=0.0, high=1.0)
    eye = torch.eye(similarity.shape[0], dtype=similarity.dtype, device=similarity.device)
    return (1.0 - alpha) * eye + alpha * similarity


def uniform_smooth_labels(
    num_classes: int,
    alpha: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform label smoothing ``(1 - alpha) I + alpha / K`` on every entry, diagonal included.

    The convention of ``F.cross_entropy(label_smoothing=alpha)``. Returns ``[K, K]``.
    """
    k = check_num_classes("num_classes", num_classes)
    alpha = check_real("alpha", alpha, low=0.0, high=1.0)
    eye = torch.eye(k, dtype=torch.float64, device=device)
    return ((1.0 - alpha) * eye + alpha / k).to(dtype)


def confidence_labels(scores: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """Confidence labels from similarity scores (paper B eq. 1-3).

    ``G_a = {b : scores[a, b] > tau_a}`` (eq. 2); ``C[a, b] = softmax over b in G_a of scores[a, b]``
    and 0 outside ``G_a`` (eq. 3).

    Args:
        scores: ``[K, K]`` float, ``scores[a, b] = S_ab``.
        tau: a number or a ``[K]`` tensor of per-class thresholds.

    Returns:
        ``[K, K]`` in ``scores``' dtype and device (computed in float64).
    """
    scores = check_square("scores", scores)
    k = scores.shape[0]
    if isinstance(tau, torch.Tensor) and tau.dim() > 0:
        tau = check_float_tensor("tau", tau, ndim=1)
        if tau.shape[0] != k:
            raise ValueError(f"tau: expected a number or a [K]=[{k}] tensor, got shape {tuple(tau.shape)}")
        if not bool(torch.isfinite(tau).all()):
            raise ValueError("tau: expected finite thresholds, got NaN/inf")
        t = tau.to(device=scores.device, dtype=torch.float64)
    else:
        t = torch.full((k,), check_real("tau", tau), dtype=torch.float64, device=scores.device)
    s = scores.to(torch.float64)
    group = s > t[:, None]  # eq. 2
    empty = (~group.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"scores/tau: the similarity group of class{'es' if len(empty) > 1 else ''} "
            f"{', '.join(map(str, empty))} is empty (no score above tau); lower tau for "
            f"{'them' if len(empty) > 1 else 'it'}"
        )
    c = torch.softmax(s.masked_fill(~group, float("-inf")), dim=1)  # eq. 3
    return c.to(scores.dtype)


def pair_confidence_labels(
    num_classes: int,
    pairs: Sequence[tuple[int, int]],
    own: float,
    other: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Hand-made confidence labels of paper B §4.1 (0.6/0.4 noisy, 0.95/0.05 trusted).

    Each pair ``(a, b)`` is symmetric: ``C[a, a] = C[b, b] = own``, ``C[a, b] = C[b, a] = other``.
    A class in no pair is one-hot; a class may be in at most one pair. ``own + other`` must be 1.
    Returns ``[K, K]``.
    """
    k = check_num_classes("num_classes", num_classes)
    pairs = check_pairs("pairs", pairs, k)
    own = check_real("own", own, low=0.0, high=1.0)
    other = check_real("other", other, low=0.0, high=1.0)
    if abs(own + other - 1.0) > 1e-9:
        raise ValueError(f"own + other: expected 1, got {own} + {other} = {own + other}")
    c = torch.eye(k, dtype=torch.float64)
    for a, b in pairs:
        c[a, a] = c[b, b] = own
        c[a, b] = c[b, a] = other
    return c.to(dtype=dtype, device=device)


def prediction_similarity(
    probs: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity scores and thresholds from a model's predicted probabilities (paper B §4.2.2).

    Args:
        probs: ``[N, K]`` predicted probabilities (rows sum to 1).
        labels: ``[N]`` integer labels; every class needs at least one sample.
        num_classes: ``K``.

    Returns:
        ``scores [K, K]`` with ``scores[a]`` the mean of ``probs[i]`` over samples labelled a, and
        ``tau [K]`` with ``tau[a] = scores[a].mean() + scores[a].std(correction=0)``; both in
        ``probs``' dtype (computed in float64).
    """
    k = check_num_classes("num_classes", num_classes)
    probs = check_float_tensor("probs", probs, ndim=2)
    if probs.shape[1] != k:
        raise ValueError(f"probs: expected shape [N, {k}] (num_classes={k}), got {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("probs: expected at least one sample, got shape (0, K)")
    labels = check_labels("labels", labels, k, n=probs.shape[0])
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("probs: expected finite values, got NaN/inf")
    check_rows_stochastic("probs", probs)
    labels = labels.to(device=probs.device, dtype=torch.long)
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"labels: class{'es' if len(empty) > 1 else ''} {', '.join(map(str, empty))} "
            f"of num_classes={k} ha{'ve' if len(empty) > 1 else 's'} no samples"
        )
    p = probs.to(torch.float64)
    scores = torch.zeros(k, k, dtype=torch.float64, device=p.device).index_add_(0, labels, p)
    scores /= counts[:, None].to(torch.float64)
    tau = scores.mean(1) + scores.std(1, correction=0)
    return scores.to(probs.dtype), tau.to(probs.dtype)
