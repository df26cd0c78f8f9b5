"""simlab.targets: label_matrices against the formulas of SPEC §1-2 written out directly, and
training_targets (noise, trusted set, relaxation of paper B §4.1) against per-sample constructions."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simlab.config import TrainConfig
from simlab.targets import confidence_pairs, label_matrices, needs_source_matrix, training_targets

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict(kw, validate=False)


def _ref_similarity_labels(dist: np.ndarray, beta: float, alpha: float, normalise: str = "row") -> np.ndarray:
    """Paper A eq. 17 (SPEC §1 exact form) then eq. 18, one scalar at a time. ``normalise="row"``
    z-scores over the whole row (diagonal included, paper A §5.4), ``"off_diagonal"`` over j != k."""
    k = dist.shape[0]
    out = np.zeros((k, k))
    for a in range(k):
        others = [j for j in range(k) if j != a]
        over = [dist[a, j] for j in (range(k) if normalise == "row" else others)]
        mean = sum(over) / len(over)
        std = math.sqrt(sum((x - mean) ** 2 for x in over) / len(over))
        z = [(dist[a, j] - mean) / std if std > 0 else 0.0 for j in others]
        e = [math.exp(-beta * v) for v in z]
        for j, ej in zip(others, e, strict=True):
            out[a, j] = alpha * ej / sum(e)
        out[a, a] = 1 - alpha
    return out


def test_onehot_is_identity():
    labels, trusted = label_matrices(_cfg(label="onehot"), ["a", "b", "c"], None)
    np.testing.assert_array_equal(labels.numpy(), np.eye(3))
    np.testing.assert_array_equal(trusted.numpy(), np.eye(3))


def test_uniform_matches_cross_entropy_label_smoothing_convention():
    k, alpha = 4, 0.2
    labels, trusted = label_matrices(_cfg(label="uniform", alpha=alpha), list("abcd"), None)
    expected = np.full((k, k), alpha / k) + (1 - alpha) * np.eye(k)
    np.testing.assert_allclose(labels.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(trusted.numpy(), expected, atol=1e-12)
    # Training on these rows is F.cross_entropy(label_smoothing=alpha) on the class indices.
    logits = torch.randn(6, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    soft = -(labels[y] * logits.log_softmax(1)).sum(1).mean()
    ref = torch.nn.functional.cross_entropy(logits, y, label_smoothing=alpha)
    torch.testing.assert_close(soft, ref)


@pytest.mark.parametrize("normalise", [None, "row", "off_diagonal"])  # None: TrainConfig's default
@pytest.mark.parametrize("as_numpy", [True, False])
def test_similarity_labels_from_distances(as_numpy, normalise):
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(5, 3))
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + 0.3  # nonzero diagonal like eq. 15
    extra = {} if normalise is None else {"similarity_normalise": normalise}
    cfg = _cfg(label="similarity", similarity="l2", beta=2.5, alpha=0.15, **extra)
    source = dist if as_numpy else torch.tensor(dist)
    labels, trusted = label_matrices(cfg, list("abcde"), source)
    # SPEC §1 (second version): the default is the paper's whole-row normalisation
    expected = _ref_similarity_labels(dist, 2.5, 0.15, normalise or "row")
    np.testing.assert_allclose(labels.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(trusted.numpy(), expected, atol=1e-10)
    assert labels.dtype == torch.float64


def test_confidence_pairs_cifar10():
    cfg = _cfg(label="confidence", similarity="pairs")
    labels, trusted = label_matrices(cfg, CIFAR10, None)
    idx = {n: i for i, n in enumerate(CIFAR10)}
    pairs = [
        ("truck", "automobile"),
        ("bird", "airplane"),
        ("deer", "horse"),
        ("cat", "dog"),
        ("frog", "ship"),
    ]

    def expected(own, other):
        m = np.zeros((10, 10))
        for a, b in pairs:
            m[idx[a], idx[a]] = m[idx[b], idx[b]] = own
            m[idx[a], idx[b]] = m[idx[b], idx[a]] = other
        return m

    np.testing.assert_allclose(labels.numpy(), expected(0.6, 0.4), atol=1e-12)
    np.testing.assert_allclose(trusted.numpy(), expected(0.95, 0.05), atol=1e-12)
    assert not needs_source_matrix(cfg)


def test_confidence_pairs_custom_values():
    cfg = _cfg(label="confidence", similarity="pairs", confidence_own=0.7, confidence_other=0.3)
    labels, trusted = label_matrices(cfg, CIFAR10, None)
    assert labels[9, 9].item() == pytest.approx(0.7) and labels[9, 1].item() == pytest.approx(0.3)
    assert trusted[9, 9].item() == pytest.approx(0.95)


def test_confidence_from_prediction_scores():
    rng = np.random.default_rng(2)
    scores = rng.dirichlet(np.ones(6) * 0.5, size=6)
    cfg = _cfg(label="confidence", similarity="predictions")
    labels, trusted = label_matrices(cfg, list("abcdef"), scores)
    expected = np.zeros((6, 6))
    for a in range(6):
        tau = scores[a].mean() + scores[a].std()  # numpy std is the population std (ddof=0)
        group = [b for b in range(6) if scores[a, b] > tau]
        z = sum(math.exp(scores[a, b]) for b in group)
        for b in group:
            expected[a, b] = math.exp(scores[a, b]) / z
    np.testing.assert_allclose(labels.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(trusted.numpy(), expected, atol=1e-10)


def test_missing_or_bad_source_matrix():
    cfg = _cfg(label="similarity", similarity="l2", beta=1.0)
    with pytest.raises(ValueError, match="source_matrix.*needs a \\[K, K\\]"):
        label_matrices(cfg, list("abc"), None)
    with pytest.raises(ValueError, match=r"source_matrix: expected shape \(3, 3\).*\(2, 2\)"):
        label_matrices(cfg, list("abc"), np.ones((2, 2)))
    with pytest.raises(TypeError, match="source_matrix: expected a numpy array"):
        label_matrices(cfg, list("abc"), [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    bad = np.ones((3, 3))
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="source_matrix: expected finite"):
        label_matrices(cfg, list("abc"), bad)


def test_bad_cfg_and_names():
    with pytest.raises(TypeError, match="cfg: expected a TrainConfig"):
        label_matrices({"label": "onehot"}, list("abc"))
    with pytest.raises(TypeError, match="class_names"):
        label_matrices(_cfg(), "abc")
    with pytest.raises(ValueError, match="class_names: expected at least 2"):
        label_matrices(_cfg(), ["a"])


def test_confidence_pairs_from_pair_matrix_and_names():
    names = ["a", "b", "c", "d", "e"]
    m = np.zeros((5, 5))
    m[0, 3] = m[3, 0] = 1.0  # pair a-d only
    labels, trusted = label_matrices(_cfg(label="confidence", similarity="pairs"), names, m)
    expected = np.eye(5)
    expected[0, 0] = expected[3, 3] = 0.6
    expected[0, 3] = expected[3, 0] = 0.4
    np.testing.assert_allclose(labels.numpy(), expected, atol=1e-12)
    assert confidence_pairs(_cfg(label="confidence", similarity="pairs"), names, m) == [(0, 3)]
    cfg = _cfg(label="confidence", similarity="pairs", similarity_args={"pairs": [["e", "b"]]})
    assert confidence_pairs(cfg, names) == [(4, 1)]
    labels, _ = label_matrices(cfg, names)
    assert labels[4, 1].item() == pytest.approx(0.4) and labels[0, 0].item() == 1.0


def test_label_registry_names_match_the_config_names():
    """config.LABEL_METHODS (torch-free) lists exactly the registry's label methods."""
    from simlab.config import LABEL_METHODS, TRUSTED_SET_LABELS
    from simlab.targets import LABEL_BUILDERS, LABEL_REGISTRY

    assert tuple(LABEL_REGISTRY) == LABEL_METHODS == tuple(LABEL_BUILDERS)
    assert set(TRUSTED_SET_LABELS) <= set(LABEL_REGISTRY)
    assert {n for n, m in LABEL_REGISTRY.items() if m.train_on == "trusted"} == {"trusted_only"}


# ---------------------------------------------------------------------------------------------
# per-sample targets: noise and trusted set (paper B §4.1)
def test_training_targets_noise_trusted_and_relaxation():
    names = [f"c{i}" for i in range(6)]
    y = torch.arange(6).repeat_interleave(50)
    cfg = TrainConfig.from_dict(
        dict(
            label="confidence",
            similarity="pairs",
            relaxation="l2",
            noise_kind="asymmetric",
            noise_rate=0.4,
            trusted_size=60,
            loss="log_projection",
        ),
        validate=False,
    )
    t = training_targets(cfg, y, names)
    # Trusted set: 10 per class, never flipped.
    assert int(t.trusted.sum()) == 60
    assert torch.bincount(y[t.trusted], minlength=6).tolist() == [10] * 6
    assert torch.equal(t.noisy_labels[t.trusted], y[t.trusted])
    # Asymmetric noise flips only to the partner: pairs (0,1), (2,3), (4,5) for these names.
    flipped = t.noisy_labels != y
    assert torch.equal(t.noisy_labels[flipped], y[flipped] ^ 1)
    assert 0.25 < flipped[~t.trusted].double().mean().item() < 0.55
    # Rows: trusted -> 0.95/0.05 row of the true class, unrelaxed (eq. 10); others -> the 0.6/0.4 row of the
    # noisy label, scaled by its L2 norm (eq. 9).
    pair_row = {}
    for own, other, key in ((0.95, 0.05, "trusted"), (0.6, 0.4, "noisy")):
        m = torch.zeros(6, 6, dtype=torch.float64)
        for a, b in ((0, 1), (2, 3), (4, 5)):
            m[a, a] = m[b, b] = own
            m[a, b] = m[b, a] = other
        pair_row[key] = m
    for i in range(len(y)):
        if t.trusted[i]:
            expected = pair_row["trusted"][y[i]]
        else:
            row = pair_row["noisy"][t.noisy_labels[i]]
            expected = math.sqrt(0.6**2 + 0.4**2) * row
        torch.testing.assert_close(t.rows[i].double(), expected, atol=1e-6, rtol=0)


def test_training_targets_symmetric_and_no_noise():
    y = torch.arange(5).repeat_interleave(40)
    names = list("abcde")
    clean = training_targets(
        TrainConfig.from_dict({"label": "uniform", "alpha": 0.2}, validate=False), y, names
    )
    assert torch.equal(clean.noisy_labels, y) and not clean.trusted.any()
    expected = 0.8 * F.one_hot(y, 5).double() + 0.2 / 5
    torch.testing.assert_close(clean.rows.double(), expected, atol=1e-6, rtol=0)
    cfg = TrainConfig.from_dict({"noise_kind": "symmetric", "noise_rate": 0.5}, validate=False)
    noisy = training_targets(cfg, y, names)
    flipped = noisy.noisy_labels != y
    assert 0.35 < flipped.double().mean().item() < 0.65
    torch.testing.assert_close(noisy.rows, F.one_hot(noisy.noisy_labels, 5).double())
    assert torch.equal(training_targets(cfg, y, names).noisy_labels, noisy.noisy_labels)  # seeded


def test_onehot_trusted_targets_are_clean_on_trusted_and_noisy_elsewhere():
    """Independent construction: one_hot(clean label) on the trusted mask, one_hot(noisy label) elsewhere."""
    names = [f"c{i}" for i in range(5)]
    y = torch.arange(5).repeat_interleave(40)
    cfg = TrainConfig.from_dict(
        dict(label="onehot_trusted", noise_kind="symmetric", noise_rate=0.6, trusted_size=50), validate=False
    )
    cfg.validate()
    t = training_targets(cfg, y, names)
    assert t.train_indices is None  # trains on every sample
    assert int(t.trusted.sum()) == 50 and torch.equal(t.noisy_labels[t.trusted], y[t.trusted])
    flipped = t.noisy_labels != y
    assert 0.4 < flipped[~t.trusted].double().mean().item() < 0.8  # the noise really is there
    expected = torch.empty(len(y), 5, dtype=torch.float64)
    for i in range(len(y)):
        expected[i] = F.one_hot(y[i] if t.trusted[i] else t.noisy_labels[i], 5).double()
    assert torch.equal(t.rows, expected)
    # Without a trusted set, the controls are rejected naming the field.
    for label in ("onehot_trusted", "trusted_only"):
        with pytest.raises(ValueError, match="trusted_size must be > 0"):
            TrainConfig.from_dict(dict(label=label), validate=False).validate()
