"""The keys under which trials share a data split and a similarity matrix (`sweeps.trial_context`)."""

from __future__ import annotations

from simlab.config import TrainConfig
from sweeps.trial_context import DATA_FIELDS, SOURCE_FIELDS, data_key, matrix_key

L2 = TrainConfig(label="similarity", similarity="l2", beta=1.0)
# One changed value a field, each a different data split or matrix than `L2`'s.
CHANGED = {
    "dataset": "synthetic",
    "data_dir": "/elsewhere",
    "cache_dir": "/another/cache",
    "val_fraction": 0.2,
    "subset_per_class": 7,
    "seed": 11,
    "dataset_args": {"image_size": 16},
    "similarity_args": {"latent_dim": 8},
}


def test_every_data_field_changes_the_split_key_and_the_matrix_key():
    assert set(DATA_FIELDS) <= set(CHANGED)
    for name in DATA_FIELDS:
        other = L2.replace(**{name: CHANGED[name]})
        assert data_key(other) != data_key(L2), name
        assert matrix_key(other) != matrix_key(L2), name


def test_the_source_and_its_arguments_change_only_the_matrix_key():
    assert SOURCE_FIELDS == ("source", "similarity_args")
    for other in (L2.replace(similarity="l1"), L2.replace(similarity_args=CHANGED["similarity_args"])):
        assert data_key(other) == data_key(L2)
        assert matrix_key(other) != matrix_key(L2)


def test_an_unset_cache_folder_is_the_resolved_default():
    assert L2.cache_dir is None
    resolved = L2.replace(cache_dir=str(L2.resolved_cache_dir))
    assert data_key(resolved) == data_key(L2)
    assert matrix_key(resolved) == matrix_key(L2)


def test_confidence_labels_are_keyed_by_their_score_source():
    scores = TrainConfig(label="confidence", confidence_source="predictions", trusted_size=20)
    # the same split and the same name in the `similarity` field: still another matrix than a distance's
    assert matrix_key(scores) != matrix_key(L2.replace(similarity="l2"))
    assert '"source": "predictions"' in matrix_key(scores)
    # label methods that need no matrix: one-hot, uniform, hand-made pairs
    assert matrix_key(TrainConfig()) is None
    assert matrix_key(scores.replace(confidence_source="pairs")) is None
