"""Class similarity (SPEC §1, paper A §5, paper B §4): distances between classes, the sources that
compute them, and the store that caches them.

Modules, each importing only those listed before it (and `simlab._validate`, `simlab.progress`,
`simlab.config`, `simlab.data` and the model/label modules the ``predictions`` source needs):

- `exact_l2`: exact L2 pair sums of uint8 features (the run-time choice of an exact Gram product);
- `distances`: `class_distance_matrix` (paper A eq. 13-15) and `similarity_from_distances` (eq. 17);
- `autoencoder`: `autoencoder_distances` (eq. 14); `word_vectors`: `word_vector_distances` (eq. 16);
  `wordnet`: `wordnet_distances` (beyond the papers);
- `inputs`: what a source reads from an ``ImageData`` and where it runs;
- `distance_sources`, `score_sources`: the computations of the registry's entries;
- `sources`: the `SIMILARITIES` registry; `store`: `SimilarityStore`, the checksummed cache.
"""

from simlab.similarity.autoencoder import autoencoder_distances
from simlab.similarity.distances import class_distance_matrix, similarity_from_distances
from simlab.similarity.sources import SIMILARITIES, SimilaritySource, compute_similarity
from simlab.similarity.store import SimilarityStore
from simlab.similarity.word_vectors import word_vector_distances
from simlab.similarity.wordnet import wordnet_distances

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
