"""Contracts every registry honours, parametrised over its entries, so a new entry is checked by adding it.

The registries with their own contract suites: models (tests/test_models.py), losses
(tests/test_losses.py), similarity sources (tests/test_sources.py), recalibrators
(tests/test_recalibration.py). Here:

- every registry looked up by name: an unknown name is a ValueError whose message starts with the
  argument's name and shows the bad name and every valid one;
- ``simlab.data.DATASETS``: options and split arguments checked before any data is read, a missing
  ``data_dir`` named, and the datasets that need no files (digits, synthetic) returning the documented
  `ImageData` (uint8 ``[N, C, H, W]`` images, int64 labels, the stratified seeded split), with their
  sizes against an independent count (scikit-learn's digits; the synthetic generator's parameters);
- the label methods (``simlab.targets.LABEL_REGISTRY``): ``[K, K]`` float64 matrices with stochastic
  rows, each against an independent construction from the papers' formulas (numpy, not simlab).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from simlab.config import TrainConfig
from simlab.data import DATASETS, load_dataset
from simlab.labels import CIFAR10_PAIRS
from simlab.losses import LOSSES, get_loss
from simlab.models import MODELS, build_model
from simlab.similarity.sources import SIMILARITIES, compute_similarity
from simlab.targets import LABEL_REGISTRY, label_matrices
from sweeps.presets import PRESETS, get_preset
from tests.support import tiny_data

# --- unknown names -------------------------------------------------------------------------------------
# (argument, registry, lookup by name). RECALIBRATORS is never looked up by a user-given name (fit runs
# all of them), so it has no entry here.
LOOKUPS: list[tuple[str, dict, Callable[[str], Any]]] = [
    ("dataset", DATASETS, lambda name: load_dataset(name)),
    ("model", MODELS, lambda name: build_model(name, 3)),
    ("loss", LOSSES, get_loss),
    ("source", SIMILARITIES, lambda name: compute_similarity(tiny_data(), name)),
    ("label", LABEL_REGISTRY, lambda name: TrainConfig.from_dict({"label": name})),
    ("preset", PRESETS, get_preset),
]


@pytest.mark.parametrize("arg, registry, lookup", LOOKUPS, ids=[arg for arg, _, _ in LOOKUPS])
def test_unknown_name_names_the_argument_and_the_valid_names(arg, registry, lookup):
    assert registry and all(isinstance(k, str) and k for k in registry)
    with pytest.raises(ValueError) as info:
        lookup("no_such_name")
    message = str(info.value)
    assert message.startswith(f"{arg}:"), message
    assert "'no_such_name'" in message
    missing = [name for name in registry if name not in message]
    assert not missing, f"valid names not listed: {missing}: {message}"


# --- datasets ------------------------------------------------------------------------------------------
# Every DATASETS entry is in exactly one of these: the ones that need files, and the ones that load
# offline (with small options for the test).
NEEDS_DATA_DIR = ("cifar10", "cifar100", "tinyimagenet", "imagefolder")
OFFLINE: dict[str, dict[str, Any]] = {
    "digits": {},
    "synthetic": {"num_classes": 6, "num_superclasses": 2, "samples_per_class": 20, "image_size": 12},
}


def test_every_dataset_is_classified():
    assert sorted(DATASETS) == sorted([*NEEDS_DATA_DIR, *OFFLINE])
    assert not set(NEEDS_DATA_DIR) & set(OFFLINE)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_unknown_option_named_before_reading(name, tmp_path):
    with pytest.raises(ValueError) as info:
        load_dataset(name, data_dir=tmp_path / "missing", cache_dir=tmp_path, no_such_option=1)
    assert f"dataset {name!r}" in str(info.value) and "'no_such_option'" in str(info.value)
    assert "valid options" in str(info.value)


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize(
    "arg, value", [("val_fraction", 1.0), ("val_fraction", -0.1), ("subset_per_class", 0), ("seed", -1)]
)
def test_dataset_bad_split_argument_named_before_reading(name, arg, value, tmp_path):
    with pytest.raises(ValueError, match=arg):
        load_dataset(name, data_dir=tmp_path / "missing", cache_dir=tmp_path, **{arg: value})


@pytest.mark.parametrize("name", NEEDS_DATA_DIR)
def test_dataset_missing_data_dir_is_named(name, tmp_path):
    offline = {"download": False} if name.startswith("cifar") else {}  # torchvision would fetch it
    with pytest.raises((FileNotFoundError, ValueError)) as info:
        load_dataset(name, data_dir=tmp_path / "missing.zip", cache_dir=tmp_path, **offline)
    assert str(info.value).startswith("data_dir"), str(info.value)


def _load(name: str, tmp_path, **kw):
    return load_dataset(name, cache_dir=tmp_path / "cache", **{**OFFLINE[name], **kw})


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_dataset_returns_the_documented_image_data(name, tmp_path):
    data = _load(name, tmp_path, val_fraction=0.2, seed=3)
    k = data.num_classes
    assert data.name == name and len(data.class_names) == k >= 2
    assert all(isinstance(c, str) for c in data.class_names) and len(set(data.class_names)) == k
    c, h, w = data.image_shape
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.uint8 and x.dim() == 4 and tuple(x.shape[1:]) == (c, h, w)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert int(y.min()) >= 0 and int(y.max()) < k
    assert len(data.mean) == len(data.std) == c
    assert all(0 <= m <= 1 for m in data.mean) and all(0 < s <= 1 for s in data.std)
    pixels = data.train_x.to(torch.float64) / 255  # channel statistics of the training split
    assert data.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert data.std == pytest.approx(pixels.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-6)
    # the validation split is stratified: val_fraction of each class's training images
    train = torch.bincount(data.train_y, minlength=k)
    val = torch.bincount(data.val_y, minlength=k)
    assert all(abs(float(v) - 0.2 * float(t + v)) <= 1 for t, v in zip(train, val, strict=True))
    assert isinstance(data.identity, str) and data.identity


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_dataset_split_is_seeded(name, tmp_path):
    a, b = _load(name, tmp_path, seed=1), _load(name, tmp_path, seed=1)
    assert a.identity == b.identity and torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    other = _load(name, tmp_path, seed=2)
    assert other.identity != a.identity and not torch.equal(other.val_x, a.val_x)
    assert torch.equal(other.test_x, a.test_x)  # the test split does not depend on the split seed


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_dataset_subset_per_class(name, tmp_path):
    data = _load(name, tmp_path, subset_per_class=3)
    assert torch.bincount(data.train_y, minlength=data.num_classes).tolist() == [3] * data.num_classes


def test_digits_sizes_match_scikit_learn(tmp_path):
    from sklearn.datasets import load_digits

    expected = np.bincount(load_digits().target, minlength=10)
    data = _load("digits", tmp_path, val_fraction=0.1)
    got = sum(torch.bincount(y, minlength=10) for y in (data.train_y, data.val_y, data.test_y))
    assert got.tolist() == expected.tolist()
    assert data.image_shape == (1, 32, 32) and data.num_classes == 10
    assert data.test_x.shape[0] == pytest.approx(0.2 * expected.sum(), abs=10)  # test_fraction 0.2


def test_synthetic_sizes_and_hierarchy_match_its_parameters(tmp_path):
    opts = OFFLINE["synthetic"]
    data = _load("synthetic", tmp_path, test_samples_per_class=5)
    k = opts["num_classes"]
    train_val = torch.bincount(torch.cat([data.train_y, data.val_y]), minlength=k)
    assert train_val.tolist() == [opts["samples_per_class"]] * k
    assert torch.bincount(data.test_y, minlength=k).tolist() == [5] * k
    assert data.image_shape == (3, opts["image_size"], opts["image_size"])
    superclass = data.info["superclass"]
    assert len(superclass) == k and set(superclass) == set(range(opts["num_superclasses"]))


# --- label methods -------------------------------------------------------------------------------------
NAMES = ["a", "b", "c", "d", "e"]  # not CIFAR-10: default pairs are (0, 1), (2, 3); class 4 unpaired


def _distances(k: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    d = rng.uniform(0.5, 2.0, (k, k))
    return (d + d.T) / 2


def _scores(k: int) -> np.ndarray:
    """Cosine-like scores: 1 on the diagonal, so every class is in its own similarity group."""
    rng = np.random.default_rng(1)
    s = rng.uniform(-0.5, 0.5, (k, k))
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    return s


def _ref_similarity(d: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Paper A eq. 17-18 (§5.4): z-score each distance row (population std), softmax(-beta z) over the
    other classes, then (1 - alpha) I + alpha S."""
    k = len(d)
    s = np.zeros((k, k))
    for i in range(k):
        z = (d[i] - d[i].mean()) / d[i].std()
        e = np.exp(-beta * z)
        e[i] = 0.0
        s[i] = e / e.sum()
    return (1 - alpha) * np.eye(k) + alpha * s


def _ref_confidence(s: np.ndarray) -> np.ndarray:
    """Paper B eq. 1-3 with §4.2.2's tau_a = mean + std (population) of row a."""
    out = np.zeros_like(s)
    for a in range(len(s)):
        tau = s[a].mean() + s[a].std()
        group = s[a] > tau
        assert group.any()
        e = np.where(group, np.exp(s[a] - s[a].max()), 0.0)
        out[a] = e / e.sum()
    return out


def _ref_pairs(k: int, pairs: list[tuple[int, int]], own: float) -> np.ndarray:
    c = np.eye(k)
    for a, b in pairs:
        c[a, a] = c[b, b] = own
        c[a, b] = c[b, a] = 1 - own
    return c


# name -> (config values, source matrix or None, expected (labels, trusted labels) by construction)
LABEL_CASES: dict[str, tuple[dict[str, Any], np.ndarray | None, tuple[np.ndarray, np.ndarray]]] = {
    "onehot": ({}, None, (np.eye(5), np.eye(5))),
    "uniform": ({"alpha": 0.3}, None, (0.7 * np.eye(5) + 0.3 / 5, 0.7 * np.eye(5) + 0.3 / 5)),
    "similarity": (
        {"similarity": "l2", "alpha": 0.2, "beta": 1.5},
        _distances(5),
        (_ref_similarity(_distances(5), 0.2, 1.5), _ref_similarity(_distances(5), 0.2, 1.5)),
    ),
    "confidence": (
        {"similarity": "predictions"},
        _scores(5),
        (_ref_confidence(_scores(5)), _ref_confidence(_scores(5))),
    ),
    "trusted_only": ({"trusted_size": 10}, None, (np.eye(5), np.eye(5))),
    "onehot_trusted": ({"trusted_size": 10}, None, (np.eye(5), np.eye(5))),
}


# uniform: `uniform_smooth_labels` builds it in its default float32 and `label_matrices` casts it to
# float64, so its entries are float32-rounded (~1e-8 off the exact values).
LABEL_ATOL = {"uniform": 1e-7}


def test_every_label_method_has_a_case():
    assert sorted(LABEL_CASES) == sorted(LABEL_REGISTRY)


@pytest.mark.parametrize("name", sorted(LABEL_REGISTRY))
def test_label_method_matrices_against_a_construction_by_hand(name):
    values, source, expected = LABEL_CASES[name]
    cfg = TrainConfig.from_dict({"label": name, **values})
    labels, trusted = label_matrices(cfg, NAMES, source)
    for got, want in zip((labels, trusted), expected, strict=True):
        assert got.dtype == torch.float64 and tuple(got.shape) == (len(NAMES), len(NAMES))
        assert bool((got >= 0).all()) and torch.allclose(got.sum(1), torch.ones(len(NAMES), dtype=got.dtype))
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=LABEL_ATOL.get(name, 1e-12))


def test_pair_confidence_labels_against_a_construction_by_hand():
    cfg = TrainConfig.from_dict({"label": "confidence", "similarity": "pairs"})
    labels, trusted = label_matrices(cfg, NAMES)
    pairs = [(0, 1), (2, 3)]  # the documented default for a class list that is not CIFAR-10's
    np.testing.assert_allclose(labels.numpy(), _ref_pairs(5, pairs, cfg.confidence_own), atol=1e-12)
    np.testing.assert_allclose(trusted.numpy(), _ref_pairs(5, pairs, cfg.trusted_own), atol=1e-12)
    from simlab.data import CIFAR10_CLASSES

    labels, _ = label_matrices(cfg, list(CIFAR10_CLASSES))
    index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    cifar_pairs = [(index[a], index[b]) for a, b in CIFAR10_PAIRS]
    np.testing.assert_allclose(labels.numpy(), _ref_pairs(10, cifar_pairs, 0.6), atol=1e-12)


def test_label_methods_say_which_samples_they_train_on():
    assert {name: m.train_on for name, m in LABEL_REGISTRY.items() if m.train_on != "all"} == {
        "trusted_only": "trusted"
    }
