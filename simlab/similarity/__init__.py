"""Class similarity (SPEC §1, paper A §5, paper B §4): distances between classes, the sources that
compute them, and the store that caches them.

Modules, each importing only those listed before it (plus `simlab._validate`, `simlab.progress`,
`simlab.config`, `simlab.class_names`, and `simlab.data` and the model/label modules the
``predictions`` source needs); none imports this package's ``__init__``:

- `exact_l2`: exact L2 pair sums of uint8 features (the run-time choice of an exact Gram product);
- `distances`: `class_distance_matrix` (paper A eq. 13-15) and `similarity_from_distances` (eq. 17);
- `autoencoder`: `autoencoder_distances` (eq. 14); `word_vectors`: `word_vector_distances` (eq. 16);
  `wordnet`: `wordnet_distances` (beyond the papers);
- `inputs`: what a source reads from an ``ImageData`` and where it runs;
- `distance_sources`, `score_sources`: the computations of the registry's entries;
- `sources`: the `SIMILARITIES` registry; `store`: `SimilarityStore`, the checksummed cache.

The public names below are loaded on first use (PEP 562), not when the package is imported: the
sweep's word-vector check imports `word_vectors` and must not pull in torch (T11: a bad config is
rejected in well under 2 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and readers
    from simlab.similarity.autoencoder import autoencoder_distances
    from simlab.similarity.distances import class_distance_matrix, similarity_from_distances
    from simlab.similarity.sources import SIMILARITIES, SimilaritySource, compute_similarity
    from simlab.similarity.store import SimilarityStore
    from simlab.similarity.word_vectors import word_vector_distances
    from simlab.similarity.wordnet import wordnet_distances

_EXPORTS = {
    "SIMILARITIES": "sources",
    "SimilaritySource": "sources",
    "SimilarityStore": "store",
    "autoencoder_distances": "autoencoder",
    "class_distance_matrix": "distances",
    "compute_similarity": "sources",
    "similarity_from_distances": "distances",
    "word_vector_distances": "word_vectors",
    "wordnet_distances": "wordnet",
}

__all__ = [
    "SIMILARITIES",
    "SimilaritySource",
    "SimilarityStore",
    "autoencoder_distances",
    "class_distance_matrix",
    "compute_similarity",
    "similarity_from_distances",
    "word_vector_distances",
    "wordnet_distances",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
