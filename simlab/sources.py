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
classes mostly by their own spread (see `_energy` and docs/similarity_results.md).

Only ``data.train_x``/``data.train_y`` (the training split minus the validation split) are read, never
validation or test images.

Each compute also takes ``info`` (a dict or None), a reserved keyword that is not a parameter: the
source records extra metadata there (the autoencoder's loss curve, the checkpoint's epoch, ...), which
`simlab.store.SimilarityStore` keeps in the entry's JSON.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "REQUIRED",
    "SIMILARITIES",
    "SimilaritySource",
    "compute_similarity",
    "resolve_device",
    "resolve_params",
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
        k = _num_classes(data)
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
    """Compute ``SIMILARITIES[source]`` on ``data`` without caching (see `simlab.store` for the cache)."""
    if source not in SIMILARITIES:
        raise ValueError(
            f"source: unknown similarity {source!r}; valid sources are: {', '.join(SIMILARITIES)}"
        )
    return SIMILARITIES[source](data, params, info=info)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None → CUDA when available else CPU; ``"cuda"`` without CUDA is a ValueError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: got {device!r} but CUDA is not available")
    return dev


# ---------------------------------------------------------------------------------------------
# helpers


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


def _num_classes(data: Any) -> int:
    names = getattr(data, "class_names", None)
    if not isinstance(names, Sequence) or isinstance(names, str) or len(names) < 2:
        raise ValueError(f"data: expected an ImageData with at least 2 class_names, got {names!r}")
    return len(names)


def _train_xy(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = getattr(data, "train_x", None), getattr(data, "train_y", None)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() < 2:
        raise ValueError(
            "data.train_x: expected a uint8 tensor [N, C, H, W], got "
            f"{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}"
        )
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"data.train_y: expected integer labels [{x.shape[0]}], got {tuple(getattr(y, 'shape', ()))}"
        )
    return x, y.long()


def _check_optional_positive_int(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name}: expected a positive integer or None, got {value!r}")


def _check_seed(seed: Any) -> None:
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")


def _class_counts(y: torch.Tensor, k: int, max_per_class: int | None) -> np.ndarray:
    counts = torch.bincount(y.cpu(), minlength=k).numpy()
    return counts if max_per_class is None else np.minimum(counts, max_per_class)


def _energy(dist: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``D[k, j] - (W_k + W_j) / 2``: half Székely's energy distance between the two classes' images.

    ``W_k`` is the mean distance between *distinct* images of class k; eq. 15's diagonal averages over
    all ``n_k^2`` pairs including ``n_k`` zero self-pairs, hence ``W_k = D[k, k] n_k / (n_k - 1)``.
    Beyond the papers: eq. 15 alone is dominated by each class's own spread (on CIFAR-10 the tight
    classes deer and frog are every class's nearest, see docs/similarity_results.md); subtracting
    it leaves how far apart the two distributions are. The diagonal is 0.
    """
    n = counts.astype(np.float64)
    if (n < 2).any():
        few = [int(i) for i in np.flatnonzero(n < 2)]
        raise ValueError(f"energy: needs at least 2 images per class, classes {few} have fewer")
    within = np.diag(dist) * n / (n - 1)
    out = dist - (within[:, None] + within[None, :]) / 2
    np.fill_diagonal(out, 0.0)
    return out


def _put(info: dict[str, Any] | None, **values: Any) -> None:
    if info is not None:
        info.update(values)


# ---------------------------------------------------------------------------------------------
# image space (paper A §5.1)


def _lp(p: int) -> Callable[..., np.ndarray]:
    def compute(
        data: Any,
        *,
        max_per_class: int | None = None,
        seed: int = 0,
        energy: bool = False,
        device: str = "auto",
        info: dict[str, Any] | None = None,
    ) -> np.ndarray:
        from simlab.similarity import class_distance_matrix

        _check_optional_positive_int("max_per_class", max_per_class)
        _check_seed(seed)
        _check_bool("energy", energy)
        dev = resolve_device(device)
        x, y = _train_xy(data)
        k = _num_classes(data)
        # Raw uint8 pixels for both p: p=1 takes class_distance_matrix's exact per-class-histogram fast
        # path, p=2 is accumulated in float64 from exact integers (and the array stays 1 byte a pixel).
        feats = x.reshape(x.shape[0], -1).to(dev)
        generator = torch.Generator().manual_seed(seed) if max_per_class is not None else None
        dist = class_distance_matrix(
            feats, y.to(dev), k, p=float(p), max_per_class=max_per_class, generator=generator
        )
        # Report in [0, 1] pixel units (exact rescaling; eq. 17 z-normalises rows, so units never matter).
        dist = dist.detach().to("cpu", torch.float64).numpy() / 255.0
        if energy:
            dist = _energy(dist, _class_counts(y, k, max_per_class))
        _put(info, n_train=int(x.shape[0]), features=int(feats.shape[1]), device=str(dev))
        return dist

    compute.__name__ = f"l{p}_distances"
    compute.__doc__ = (
        f"Paper A eq. 13+15 with p={p}: D[k, j] = mean ||x - x'||_{p} over all pairs of training images of "
        "classes k and j (self-pairs included), in [0, 1] pixel units. ``max_per_class`` takes a seeded "
        "random subset of each class first (an approximation for very large sets; see BENCHMARKS.md). "
        "``energy=True`` returns the within-class-corrected variant (see `_energy`)."
    )
    return compute


# ---------------------------------------------------------------------------------------------
# representation space (paper A §5.2)


def _ae(
    data: Any,
    *,
    latent_dim: int = 256,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    width: int = 32,
    train_samples: int | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    energy: bool = False,
    device: str = "auto",
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Paper A eq. 14+15: mean L2 distance between autoencoder latent codes (see `simlab.autoencoder`).

    ``energy=True`` returns the within-class-corrected variant (see `_energy`).
    """
    from simlab.autoencoder import autoencoder_distances

    _check_bool("energy", energy)
    x, y = _train_xy(data)
    ae_info: dict[str, Any] = {}
    dist = autoencoder_distances(
        x,
        y,
        _num_classes(data),
        latent_dim=latent_dim,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        width=width,
        train_samples=train_samples,
        max_per_class=max_per_class,
        seed=seed,
        device=resolve_device(device),
        info=ae_info,
    )
    _put(info, **ae_info)
    dist = dist.detach().to("cpu", torch.float64).numpy()
    if energy:
        dist = _energy(dist, _class_counts(y, _num_classes(data), max_per_class))
    return dist


# ---------------------------------------------------------------------------------------------
# semantic space (paper A §5.3)


def _we(
    data: Any,
    *,
    vectors: str = REQUIRED,
    mapping: Mapping[str, str | Sequence[str]] | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Paper A eq. 16 on ``data.class_names`` with the word-vector file ``vectors``."""
    from simlab.word_vectors import word_vector_distances

    if not isinstance(vectors, (str, os.PathLike)):
        raise TypeError(f"vectors: expected a path to a word2vec/GloVe file, got {type(vectors).__name__}")
    we_info: dict[str, Any] = {}
    dist = word_vector_distances(list(data.class_names), vectors, mapping=mapping, info=we_info)
    _put(info, **we_info)
    return dist.detach().to("cpu", torch.float64).numpy()


def _wordnet(
    data: Any,
    *,
    wnids: str | Sequence[str] | None = None,
    root: str | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """1 - Wu-Palmer similarity of the classes' WordNet 3.0 noun synsets."""
    from simlab.wordnet import wordnet_distances

    wn_info: dict[str, Any] = {}
    dist = wordnet_distances(list(data.class_names), wnids=wnids, root=root, info=wn_info)
    _put(info, **wn_info)
    return dist.detach().to("cpu", torch.float64).numpy()


# ---------------------------------------------------------------------------------------------
# paper B scores


def _predictions(
    data: Any,
    *,
    checkpoint: str = REQUIRED,
    batch_size: int = 512,
    device: str = "auto",
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Paper B §4.2.2: S[a] = mean softmax output of a trained model over training images labelled a.

    The model is rebuilt from the checkpoint's ``config`` (a `TrainConfig` dict) and ``model`` state,
    and run over ``data.train_x`` without augmentation, normalised with ``data.mean``/``data.std``
    as the trainer does. Returns the scores; the trainer derives τ from them (SPEC §2
    `prediction_similarity`: mean + population std of each row).
    """
    from simlab.checkpoint import load_checkpoint
    from simlab.config import TrainConfig
    from simlab.data import prepare_images
    from simlab.labels import prediction_similarity
    from simlab.models import build_model

    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint: expected a path to a simlab checkpoint, got {type(checkpoint).__name__}"
        )
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0):
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    dev = resolve_device(device)
    x, y = _train_xy(data)
    k = _num_classes(data)
    state = load_checkpoint(checkpoint, map_location="cpu")
    for key in ("config", "model"):
        if key not in state:
            raise ValueError(
                f"checkpoint: {os.fspath(checkpoint)!r} has no {key!r} entry (keys: {sorted(state)})"
            )
    saved_names = state.get("class_names")
    if saved_names is not None and list(saved_names) != list(data.class_names):
        raise ValueError(
            f"checkpoint: trained on classes {list(saved_names)}, but data has {list(data.class_names)}"
        )
    cfg = TrainConfig.from_dict(state["config"], validate=False)
    # Any seeded generator: the weights are overwritten by the checkpoint, and the global RNG is untouched.
    model = build_model(
        cfg.model,
        k,
        in_channels=int(x.shape[1]),
        generator=torch.Generator().manual_seed(0),
        **cfg.model_args,
    )
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    probs = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            # The trainer's own normalisation, without augmentation.
            xb = prepare_images(
                x[start : start + batch_size].to(dev),
                mean=data.mean,
                std=data.std,
                augment=False,
                generator=None,
            )
            probs.append(torch.softmax(model(xb).to(torch.float64), dim=1).cpu())
    scores, _tau = prediction_similarity(torch.cat(probs), y, k)
    _put(info, checkpoint_epoch=state.get("epoch"), model=cfg.model, n_train=int(x.shape[0]))
    return scores.detach().to("cpu", torch.float64).numpy()


def _pairs(
    data: Any,
    *,
    pairs: Sequence[Sequence[str]] | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Paper B §4.1 hand-made pairs as a symmetric 0/1 matrix.

    ``M[a, b] = 1`` when classes a != b form a pair, else 0 (diagonal 0). The trainer builds the
    labels from `simlab.labels.class_pairs` and the config's own/other values (`pair_confidence_labels`);
    this matrix records which pairs those are (recover them as ``{(a, b) : a < b, M[a, b] == 1}``).
    ``pairs``: a list of ``[name_a, name_b]``; None means `simlab.labels.class_pairs`' default for the
    class names (for CIFAR-10 the pairs truck-automobile, bird-airplane, deer-horse, cat-dog,
    frog-ship), which is also what the trainer uses.
    """
    names = list(data.class_names)
    k = len(names)
    from simlab.labels import class_pairs

    if pairs is not None and (isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence)):
        raise TypeError(f"pairs: expected a list of [class_a, class_b] names, got {type(pairs).__name__}")
    if pairs is not None:
        bad = [p for p in pairs if isinstance(p, str) or not isinstance(p, Sequence) or len(p) != 2]
        if bad:
            raise ValueError(f"pairs: expected [class_a, class_b] entries, got {bad}")
    index_pairs = [
        (int(a), int(b)) for a, b in class_pairs(names, None if pairs is None else [tuple(p) for p in pairs])
    ]
    matrix = np.zeros((k, k), dtype=np.float64)
    seen: set[int] = set()
    for a, b in index_pairs:
        if a == b:
            raise ValueError(f"pairs: a class cannot pair with itself, got {names[a]!r}")
        if a in seen or b in seen:
            raise ValueError(
                f"pairs: each class may be in one pair only; {names[a]!r}-{names[b]!r} repeats one"
            )
        seen.update((a, b))
        matrix[a, b] = matrix[b, a] = 1.0
    _put(info, pairs=[[names[a], names[b]] for a, b in index_pairs])
    return matrix


# ---------------------------------------------------------------------------------------------

_LP_DEFAULTS = {"max_per_class": None, "seed": 0, "energy": False, "device": "auto"}

SIMILARITIES: dict[str, SimilaritySource] = {
    "l1": SimilaritySource(
        "l1",
        "distance",
        _lp(1),
        "1",
        dict(_LP_DEFAULTS),
        frozenset({"device"}),
        description="mean L1 distance between training images of two classes (paper A eq. 13, 15)",
    ),
    "l2": SimilaritySource(
        "l2",
        "distance",
        _lp(2),
        "1",
        dict(_LP_DEFAULTS),
        frozenset({"device"}),
        description="mean L2 distance between training images of two classes (paper A eq. 13, 15)",
    ),
    "ae": SimilaritySource(
        "ae",
        "distance",
        _ae,
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
        _we,
        "1",
        {"vectors": REQUIRED, "mapping": None},
        frozenset(),
        frozenset({"vectors"}),
        description="L2 distance between class-name word vectors (paper A eq. 16)",
    ),
    "wordnet": SimilaritySource(
        "wordnet",
        "distance",
        _wordnet,
        "1",
        {"wnids": None, "root": None},
        frozenset({"root"}),
        frozenset({"wnids"}),
        description="1 - Wu-Palmer similarity of the classes' WordNet 3.0 synsets",
    ),
    "predictions": SimilaritySource(
        "predictions",
        "score",
        _predictions,
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
        _pairs,
        "1",
        {"pairs": None},
        description="0/1 matrix of paper B's hand-made class pairs (§4.1)",
    ),
}
