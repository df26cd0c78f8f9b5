"""The class-similarity sources of paper A §5 and paper B §4 (+ WordNet): the `SIMILARITIES` registry.

Every source is ``compute(data: ImageData, **params) -> float64 numpy [K, K]`` (K classes, in
``data.class_names`` order) of one of two kinds:

- ``"distance"`` — paper A's class distance ``D[k, j]`` (eq. 13-16). β is applied later, after a
  per-row z-normalisation (`simlab.similarity.similarity_from_distances`, eq. 17), so the scale of
  ``D`` does not matter.
- ``"score"`` — paper B's class score ``S[a, b]`` for confidence labels (eq. 1-3).

==============  ========  ===================================================================
``l1``          distance  mean L1 distance between the training images of two classes (eq. 13, 15)
``l2``          distance  mean L2 distance between the training images of two classes (eq. 13, 15)
``ae``          distance  mean L2 distance between convolutional-autoencoder codes (eq. 14, 15)
``we``          distance  L2 distance between the class names' word vectors (eq. 16)
``wordnet``     distance  1 - Wu-Palmer similarity of the classes' WordNet synsets (beyond the papers)
``predictions`` score     mean softmax of a trained model per labelled class (paper B §4.2.2)
``pairs``       score     0/1 matrix of paper B's hand-made CIFAR-10 pairs (§4.1)
==============  ========  ===================================================================

Pixel units: ``l1`` and ``l2`` are computed on the raw uint8 pixels 0..255 (for p=1 this is
`class_distance_matrix`'s exact per-class-histogram fast path; for p=2 it accumulates exact integers in
float64) and divided by 255 afterwards, so both are reported in units of pixel values in [0, 1]. The
scale is irrelevant to the labels: eq. 17 is applied after a per-row z-normalisation.

``energy=True`` (``l1``, ``l2``, ``ae``; beyond the papers, default off) subtracts each class's mean
within-class distance, ``D[k, j] - (W_k + W_j) / 2`` (half the energy distance): eq. 15 alone ranks
classes mostly by their own spread (see `distance_sources.energy_corrected` and
docs/similarity_results.md).

Only ``data.train_x``/``data.train_y`` (the training split minus the validation split) are read, never
validation or test images.

Each compute also takes ``info`` (a dict or None), a reserved keyword that is not a parameter: the
source records extra metadata there (the autoencoder's loss curve, the checkpoint's epoch, ...), which
`simlab.similarity.store.SimilarityStore` keeps in the entry's JSON.

The computations live in `simlab.similarity.distance_sources` (paper A) and
`simlab.similarity.score_sources` (paper B); this module is the registry and its contract.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from simlab.similarity.distance_sources import ae_source, lp_source, we_source, wordnet_source
from simlab.similarity.inputs import num_classes
from simlab.similarity.score_sources import pairs_source, predictions_source

logger = logging.getLogger(__name__)

__all__ = [
    "REQUIRED",
    "SIMILARITIES",
    "SimilaritySource",
    "compute_similarity",
    "resolve_params",
    "source_named",
]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()  # a default meaning "this parameter has no default"


@dataclass(frozen=True)
class SimilaritySource:
    """One entry of `SIMILARITIES`.

    Attributes:
        name: the registry key.
        kind: ``"distance"`` (paper A D, β applied later) or ``"score"`` (paper B S, τ applied later).
        compute: ``compute(data, *, info=None, **params) -> float64 numpy [K, K]``.
        version: bumped whenever the computation changes; part of the store's cache key.
        defaults: every accepted parameter and its default (`REQUIRED` when it has none).
        runtime_params: parameters that do not change the result (``device``, ``batch_size`` of
            inference); left out of the cache key.
        file_params: parameters naming files whose *contents* go into the cache key.
        symmetric: whether ``D[k, j] == D[j, k]`` (checked on every result).
        description: one line for ``--help`` and docs.
    """

    name: str
    kind: Literal["distance", "score"]
    compute: Callable[..., np.ndarray]
    version: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    runtime_params: frozenset[str] = frozenset()
    file_params: frozenset[str] = frozenset()
    symmetric: bool = True
    description: str = ""

    def __call__(
        self, data: Any, params: Mapping[str, Any] | None = None, *, info: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Validate ``params``, compute, and check the result is a finite float64 ``[K, K]``."""
        resolved = resolve_params(self, params or {})
        k = num_classes(data)
        matrix = self.compute(data, info=info, **resolved)
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu().numpy()
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (k, k):
            raise RuntimeError(f"source {self.name!r} returned shape {matrix.shape}, expected ({k}, {k})")
        if not np.isfinite(matrix).all():
            raise RuntimeError(f"source {self.name!r} returned non-finite values")
        if self.symmetric:
            scale = max(float(np.abs(matrix).max()), 1e-300)
            asym = float(np.abs(matrix - matrix.T).max()) / scale
            if asym > 1e-5:
                raise RuntimeError(f"source {self.name!r} should be symmetric; relative asymmetry {asym:.3g}")
        return matrix

    def file_fingerprints(self, params: Mapping[str, Any]) -> dict[str, str | None]:
        """sha256 of the contents of each file parameter (so a changed file never hits a stale entry)."""
        out: dict[str, str | None] = {}
        for name in sorted(self.file_params):
            value = params.get(name)
            if value is None or isinstance(value, (list, tuple)):
                out[name] = None
                continue
            path = os.fspath(value)
            if not os.path.isfile(path):
                raise ValueError(f"{name}: expected an existing file for source {self.name!r}, got {path!r}")
            out[name] = _file_sha256(path)
        return out


def resolve_params(source: SimilaritySource, params: Mapping[str, Any]) -> dict[str, Any]:
    """``{**defaults, **params}``; unknown names and missing required ones are a ValueError."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params: expected a mapping of parameter names to values, got {type(params).__name__}"
        )
    unknown = sorted(str(k) for k in params if k not in source.defaults)
    if unknown:
        valid = ", ".join(sorted(source.defaults)) or "(none)"
        raise ValueError(
            f"params: unknown parameter(s) {', '.join(repr(u) for u in unknown)} for similarity source "
            f"{source.name!r}; valid parameters are: {valid}"
        )
    resolved = {**source.defaults, **params}
    missing = sorted(k for k, v in resolved.items() if v is REQUIRED)
    if missing:
        raise ValueError(
            f"params: similarity source {source.name!r} needs parameter(s) {', '.join(missing)}, got none"
        )
    return resolved


def compute_similarity(
    data: Any, source: str, params: Mapping[str, Any] | None = None, *, info: dict[str, Any] | None = None
) -> np.ndarray:
    """Compute ``SIMILARITIES[source]`` on ``data`` without caching (`simlab.similarity.store` caches)."""
    return source_named(source)(data, params, info=info)


def source_named(source: str) -> SimilaritySource:
    """``SIMILARITIES[source]``; an unknown name is a ValueError listing the valid ones."""
    if source not in SIMILARITIES:
        raise ValueError(
            f"source: unknown similarity {source!r}; valid sources are: {', '.join(SIMILARITIES)}"
        )
    return SIMILARITIES[source]


# ---------------------------------------------------------------------------------------------


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[memo] = h.hexdigest()
    return _SHA_CACHE[memo]


# ---------------------------------------------------------------------------------------------

_LP_DEFAULTS = {"max_per_class": None, "seed": 0, "energy": False, "device": "auto"}

SIMILARITIES: dict[str, SimilaritySource] = {
    "l1": SimilaritySource(
        "l1",
        "distance",
        lp_source(1),
        "1",
        dict(_LP_DEFAULTS),
        frozenset({"device"}),
        description="mean L1 distance between training images of two classes (paper A eq. 13, 15)",
    ),
    "l2": SimilaritySource(
        "l2",
        "distance",
        lp_source(2),
        "1",
        dict(_LP_DEFAULTS),
        frozenset({"device"}),
        description="mean L2 distance between training images of two classes (paper A eq. 13, 15)",
    ),
    "ae": SimilaritySource(
        "ae",
        "distance",
        ae_source,
        "1",
        {
            "latent_dim": 256,
            "epochs": 10,
            "lr": 1e-3,
            "batch_size": 128,
            "width": 32,
            "train_samples": None,
            "max_per_class": None,
            "seed": 0,
            "energy": False,
            "device": "auto",
        },
        frozenset({"device"}),
        description="mean L2 distance between autoencoder latent codes (paper A eq. 14, 15)",
    ),
    "we": SimilaritySource(
        "we",
        "distance",
        we_source,
        "1",
        {"vectors": REQUIRED, "mapping": None},
        frozenset(),
        frozenset({"vectors"}),
        description="L2 distance between class-name word vectors (paper A eq. 16)",
    ),
    "wordnet": SimilaritySource(
        "wordnet",
        "distance",
        wordnet_source,
        "1",
        {"wnids": None, "root": None},
        frozenset({"root"}),
        frozenset({"wnids"}),
        description="1 - Wu-Palmer similarity of the classes' WordNet 3.0 synsets",
    ),
    "predictions": SimilaritySource(
        "predictions",
        "score",
        predictions_source,
        "1",
        {"checkpoint": REQUIRED, "batch_size": 512, "device": "auto"},
        frozenset({"batch_size", "device"}),
        frozenset({"checkpoint"}),
        symmetric=False,
        description="mean softmax output of a trained model per labelled class (paper B §4.2.2)",
    ),
    "pairs": SimilaritySource(
        "pairs",
        "score",
        pairs_source,
        "1",
        {"pairs": None},
        description="0/1 matrix of paper B's hand-made class pairs (§4.1)",
    ),
}
