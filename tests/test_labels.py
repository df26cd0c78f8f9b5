"""SPEC §2: label matrices against formulas written out with numpy/math, and F.cross_entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simlab.labels import (
    CIFAR10_PAIRS,
    class_pairs,
    confidence_labels,
    pair_confidence_labels,
    prediction_similarity,
    smooth_labels,
    uniform_smooth_labels,
)
from simlab.similarity import similarity_from_distances

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_stochastic(gen: torch.Generator, k: int, zero_diagonal: bool = True) -> torch.Tensor:
    s = torch.rand(k, k, generator=gen, dtype=torch.float64)
    if zero_diagonal:
        s.fill_diagonal_(0.0)
    return s / s.sum(1, keepdim=True)


# --- smooth_labels / uniform_smooth_labels --------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_smooth_labels_formula(generator, alpha):
    s = random_stochastic(generator, 6)
    got = smooth_labels(s, alpha)
    want = (1 - alpha) * np.eye(6) + alpha * s.numpy()  # paper A eq. 18
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-15)
    torch.testing.assert_close(got.sum(1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_alpha_zero_is_one_hot_and_off_class_mass_is_alpha(generator):
    s = random_stochastic(generator, 5).to(torch.float32)
    assert torch.equal(smooth_labels(s, 0.0), torch.eye(5))
    y = smooth_labels(s, 0.3)
    torch.testing.assert_close(torch.diagonal(y), torch.full((5,), 0.7), rtol=0, atol=1e-6)
    torch.testing.assert_close(y.sum(1) - torch.diagonal(y), torch.full((5,), 0.3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.37])
def test_uniform_smoothing_matches_cross_entropy_label_smoothing(generator, alpha):
    k = 7
    u = uniform_smooth_labels(k, alpha, dtype=torch.float64)
    torch.testing.assert_close(u.sum(1), torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-12)
    logits = torch.randn(20, k, generator=generator, dtype=torch.float64)
    y = torch.randint(0, k, (20,), generator=generator)
    ours = -(u[y] * F.log_softmax(logits, 1)).sum(1).mean()
    ref = F.cross_entropy(logits, y, label_smoothing=alpha)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)


def test_uniform_dtype_and_device_defaults():
    u = uniform_smooth_labels(3, 0.3)
    assert u.dtype == torch.float32 and u.device.type == "cpu"
    assert u[0, 0].item() == pytest.approx(0.7 + 0.1)
    assert u[0, 1].item() == pytest.approx(0.1)


@pytest.mark.parametrize("alpha", [-0.01, 1.01, float("nan"), float("inf")])
def test_alpha_out_of_range(generator, alpha):
    with pytest.raises(ValueError, match=r"alpha.*\[0, 1\]"):
        smooth_labels(random_stochastic(generator, 3), alpha)
    with pytest.raises(ValueError, match=r"alpha.*\[0, 1\]"):
        uniform_smooth_labels(3, alpha)


def test_smooth_labels_bad_similarity():
    with pytest.raises(ValueError, match=r"similarity.*rows summing to 1.*row 1"):
        smooth_labels(torch.tensor([[0.0, 1.0], [0.5, 0.4]]), 0.1)
    with pytest.raises(ValueError, match="similarity.*non-negative"):
        smooth_labels(torch.tensor([[0.0, 1.0], [1.5, -0.5]]), 0.1)
    with pytest.raises(ValueError, match="similarity.*finite"):
        smooth_labels(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), 0.1)
    with pytest.raises(ValueError, match="similarity.*square"):
        smooth_labels(torch.ones(2, 3) / 3, 0.1)
    with pytest.raises(ValueError, match="num_classes"):
        uniform_smooth_labels(0, 0.1)


# --- confidence_labels ---------------------------------------------------------------------------
def reference_confidence(scores: np.ndarray, tau: np.ndarray) -> np.ndarray:
    k = scores.shape[0]
    out = np.zeros((k, k))
    for a in range(k):
        group = [b for b in range(k) if scores[a, b] > tau[a]]  # paper B eq. 2
        z = sum(math.exp(scores[a, b]) for b in group)
        for b in group:
            out[a, b] = math.exp(scores[a, b]) / z  # eq. 3
    return out


def test_confidence_labels_scalar_tau(generator):
    scores = torch.rand(6, 6, generator=generator, dtype=torch.float64)
    scores.fill_diagonal_(1.0)
    got = confidence_labels(scores, 0.5)
    want = reference_confidence(scores.numpy(), np.full(6, 0.5))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-15)
    assert bool((got[scores <= 0.5] == 0).all())
    torch.testing.assert_close(got.sum(1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_confidence_labels_per_class_tau(generator):
    scores = torch.rand(5, 5, generator=generator).to(torch.float32)
    scores.fill_diagonal_(2.0)
    tau = torch.tensor([0.1, 0.5, 0.9, 1.5, 0.0])
    got = confidence_labels(scores, tau)
    assert got.dtype == torch.float32
    want = reference_confidence(scores.double().numpy(), tau.double().numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
    assert torch.equal(got[3], torch.eye(5)[3])  # only itself above tau: hard (one-hot) label


def test_confidence_empty_group_names_class():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.1, 0.8]])
    with pytest.raises(ValueError, match=r"class 1 is empty"):
        confidence_labels(scores, 0.5)
    with pytest.raises(ValueError, match=r"classes 0, 2"):
        confidence_labels(scores, torch.tensor([1.0, 0.0, 0.9]))


def test_confidence_bad_tau():
    scores = torch.eye(3)
    with pytest.raises(ValueError, match=r"tau.*\[K\]=\[3\]"):
        confidence_labels(scores, torch.zeros(4))
    with pytest.raises(ValueError, match="tau.*finite"):
        confidence_labels(scores, torch.tensor([0.0, float("nan"), 0.0]))
    with pytest.raises(ValueError, match="tau"):
        confidence_labels(scores, float("nan"))
    with pytest.raises(TypeError, match="scores.*floating"):
        confidence_labels(torch.eye(3, dtype=torch.int64), 0.5)


# --- pair_confidence_labels / class_pairs --------------------------------------------------------
def test_cifar10_class_pairs_are_paper_b_pairs():
    pairs = class_pairs(CIFAR10)
    named = {frozenset((CIFAR10[a], CIFAR10[b])) for a, b in pairs}
    assert named == {
        frozenset(("truck", "automobile")),
        frozenset(("bird", "airplane")),
        frozenset(("deer", "horse")),
        frozenset(("cat", "dog")),
        frozenset(("frog", "ship")),
    }
    assert named == {frozenset(p) for p in CIFAR10_PAIRS}
    assert class_pairs(list(reversed(CIFAR10)))[0] == (0, 8)  # names, not positions


def test_class_pairs_other_lists_and_explicit_pairs():
    assert class_pairs(["a", "b", "c", "d", "e"]) == [(0, 1), (2, 3)]
    assert class_pairs(["a", "b", "c"], [("c", "a")]) == [(2, 0)]
    with pytest.raises(ValueError, match=r"names not in class_names: \['zebra'\]"):
        class_pairs(["a", "b"], [("a", "zebra")])
    with pytest.raises(ValueError, match="class 0 appears in pair 0 and pair 1"):
        class_pairs(["a", "b", "c"], [("a", "b"), ("a", "c")])
    with pytest.raises(ValueError, match="duplicates"):
        class_pairs(["a", "a"])
    with pytest.raises(TypeError, match="class_names"):
        class_pairs("ab")


def test_pair_confidence_labels_cifar10():
    c = pair_confidence_labels(10, class_pairs(CIFAR10), 0.6, 0.4)
    want = np.zeros((10, 10))
    for a, b in [
        ("truck", "automobile"),
        ("bird", "airplane"),
        ("deer", "horse"),
        ("cat", "dog"),
        ("frog", "ship"),
    ]:
        i, j = CIFAR10.index(a), CIFAR10.index(b)
        want[i, i] = want[j, j] = 0.6
        want[i, j] = want[j, i] = 0.4
    np.testing.assert_allclose(c.numpy(), want, rtol=0, atol=1e-7)
    assert c.dtype == torch.float32


def test_pair_confidence_unpaired_one_hot_and_trusted_values():
    c = pair_confidence_labels(5, [(3, 1)], 0.95, 0.05, dtype=torch.float64)
    want = np.eye(5)
    want[1, 1] = want[3, 3] = 0.95
    want[1, 3] = want[3, 1] = 0.05
    np.testing.assert_allclose(c.numpy(), want, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("pairs", "own", "other", "pattern"),
    [
        ([(0, 1)], 0.6, 0.5, r"own \+ other: expected 1"),
        ([(0, 1)], 1.2, -0.2, r"own.*\[0, 1\]"),
        ([(0, 0)], 0.6, 0.4, "two different classes"),
        ([(0, 5)], 0.6, 0.4, r"pairs\[0\].*\[0, 4\)"),
        ([(0, 1), (1, 2)], 0.6, 0.4, "class 1 appears in pair 0 and pair 1"),
        ([(0, 1, 2)], 0.6, 0.4, r"pairs\[0\].*pair"),
    ],
)
def test_pair_confidence_bad_input(pairs, own, other, pattern):
    with pytest.raises(ValueError, match=pattern):
        pair_confidence_labels(4, pairs, own, other)


# --- prediction_similarity -----------------------------------------------------------------------
def test_prediction_similarity_reference(generator):
    n, k = 50, 4
    probs = torch.softmax(torch.randn(n, k, generator=generator, dtype=torch.float64), 1)
    labels = torch.arange(n) % k
    scores, tau = prediction_similarity(probs, labels, k)
    p, y = probs.numpy(), labels.numpy()
    want = np.stack([p[y == a].mean(0) for a in range(k)])
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-13)
    np.testing.assert_allclose(tau.numpy(), want.mean(1) + want.std(1, ddof=0), rtol=1e-13)
    # and the pipeline of §4.2.2 runs: each class's group holds at least its highest score
    c = confidence_labels(scores, tau)
    torch.testing.assert_close(c.sum(1), torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-12)


def test_prediction_similarity_bad_input(generator):
    probs = torch.softmax(torch.randn(6, 3, generator=generator), 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"probs.*rows summing to 1"):
        prediction_similarity(probs * 1.1, labels, 3)
    with pytest.raises(ValueError, match=r"probs.*\[N, 4\]"):
        prediction_similarity(probs, labels, 4)
    with pytest.raises(ValueError, match="labels.*class indices"):
        prediction_similarity(probs, torch.tensor([0, 1, 3, 0, 1, 2]), 3)
    with pytest.raises(ValueError, match="class 2 .*has no samples"):
        prediction_similarity(probs, torch.tensor([0, 1, 1, 0, 1, 0]), 3)
    with pytest.raises(ValueError, match="probs.*finite"):
        prediction_similarity(probs.index_fill(0, torch.tensor([2]), float("nan")), labels, 3)
    with pytest.raises(ValueError, match="labels.*expected 6 labels"):
        prediction_similarity(probs, labels[:5], 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_dtypes_preserved(generator, dtype):
    d = torch.rand(6, 6, generator=generator).to(dtype)
    s = similarity_from_distances(d, 2.0)
    y = smooth_labels(s, 0.2)
    c = confidence_labels(d, 0.5 * torch.ones(6, dtype=dtype) - 1.0)  # every score in the group
    for m in (s, y, c):
        assert m.dtype == dtype
        tol = 2 * torch.finfo(dtype).eps * 6
        torch.testing.assert_close(m.float().sum(1), torch.ones(6), rtol=0, atol=tol)
    ref = reference_confidence(d.double().numpy(), np.full(6, -0.5))
    np.testing.assert_allclose(c.double().numpy(), ref, rtol=2 * torch.finfo(dtype).eps, atol=0)
