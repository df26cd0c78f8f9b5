"""The distance sources of `SIMILARITIES` (paper A §5.1-5.3, + WordNet): ``compute(data, **params)``
→ float64 numpy ``[K, K]`` class distances ``D``, read from ``data.train_x``/``train_y`` or the class
names only.

- image space (§5.1): ``l1``/``l2`` (`lp_source`), `class_distance_matrix` on the raw uint8 pixels,
  reported in [0, 1] pixel units;
- representation space (§5.2): ``ae`` (`ae_source`), `autoencoder_distances`;
- semantic space (§5.3): ``we`` (`we_source`), `word_vector_distances`; ``wordnet`` (`wordnet_source`,
  beyond the papers), `wordnet_distances`.

``energy=True`` (``l1``, ``l2``, ``ae``) subtracts each class's mean within-class distance
(`energy_corrected`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from simlab._validate import check_num_classes
from simlab.similarity.autoencoder import autoencoder_distances
from simlab.similarity.distances import class_distance_matrix
from simlab.similarity.inputs import num_classes, put_info, resolve_device, train_xy
from simlab.similarity.word_vectors import word_vector_distances
from simlab.similarity.wordnet import wordnet_distances

__all__ = ["ae_source", "energy_corrected", "lp_source", "we_source", "wordnet_source"]


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")


def _class_counts(y: torch.Tensor, k: int, max_per_class: int | None) -> np.ndarray:
    counts = torch.bincount(y.cpu(), minlength=k).numpy()
    return counts if max_per_class is None else np.minimum(counts, max_per_class)


def energy_corrected(dist: np.ndarray, counts: np.ndarray) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# image space (paper A §5.1)


def lp_source(p: int) -> Callable[..., np.ndarray]:
    def compute(
        data: Any,
        *,
        max_per_class: int | None = None,
        seed: int = 0,
        energy: bool = False,
        device: str = "auto",
        info: dict[str, Any] | None = None,
    ) -> np.ndarray:
        if max_per_class is not None:
            check_num_classes("max_per_class", max_per_class)
        check_num_classes("seed", seed, minimum=0)
        _check_bool("energy", energy)
        dev = resolve_device(device)
        x, y = train_xy(data)
        k = num_classes(data)
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
            dist = energy_corrected(dist, _class_counts(y, k, max_per_class))
        put_info(info, n_train=int(x.shape[0]), features=int(feats.shape[1]), device=str(dev))
        return dist

    compute.__name__ = f"l{p}_distances"
    compute.__doc__ = (
        f"Paper A eq. 13+15 with p={p}: D[k, j] = mean ||x - x'||_{p} over all pairs of training images of "
        "classes k and j (self-pairs included), in [0, 1] pixel units. ``max_per_class`` takes a seeded "
        "random subset of each class first (an approximation for very large sets; see BENCHMARKS.md). "
        "``energy=True`` returns the within-class-corrected variant (see `energy_corrected`)."
    )
    return compute


# ---------------------------------------------------------------------------------------------
# representation space (paper A §5.2)


def ae_source(
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
    """Paper A eq. 14+15: mean L2 distance between autoencoder latent codes (`simlab.similarity.autoencoder`).

    ``energy=True`` returns the within-class-corrected variant (see `energy_corrected`).
    """
    _check_bool("energy", energy)
    x, y = train_xy(data)
    ae_info: dict[str, Any] = {}
    dist = autoencoder_distances(
        x,
        y,
        num_classes(data),
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
    put_info(info, **ae_info)
    dist = dist.detach().to("cpu", torch.float64).numpy()
    if energy:
        dist = energy_corrected(dist, _class_counts(y, num_classes(data), max_per_class))
    return dist


# ---------------------------------------------------------------------------------------------
# semantic space (paper A §5.3)


def we_source(
    data: Any,
    *,
    vectors: str,
    mapping: Mapping[str, str | Sequence[str]] | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Paper A eq. 16 on ``data.class_names`` with the word-vector file ``vectors``."""
    if not isinstance(vectors, (str, os.PathLike)):
        raise TypeError(f"vectors: expected a path to a word2vec/GloVe file, got {type(vectors).__name__}")
    we_info: dict[str, Any] = {}
    dist = word_vector_distances(list(data.class_names), vectors, mapping=mapping, info=we_info)
    put_info(info, **we_info)
    return dist.detach().to("cpu", torch.float64).numpy()


def wordnet_source(
    data: Any,
    *,
    wnids: str | Sequence[str] | None = None,
    root: str | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """1 - Wu-Palmer similarity of the classes' WordNet 3.0 noun synsets."""
    wn_info: dict[str, Any] = {}
    dist = wordnet_distances(list(data.class_names), wnids=wnids, root=root, info=wn_info)
    put_info(info, **wn_info)
    return dist.detach().to("cpu", torch.float64).numpy()
