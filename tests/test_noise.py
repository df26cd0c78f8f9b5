"""SPEC §4: injected noise reproduces the requested transition matrix (known-truth simulation),
trusted samples never flip, seeded reproducibility, class-balanced trusted sets, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from simlab.noise import make_noisy_labels, trusted_mask


def expected_transition(k: int, rate: float, kind: str, pairs=()) -> np.ndarray:
    """T[i, j] = P(noisy = j | clean = i), written out from SPEC §4."""
    t = np.eye(k)
    if kind == "symmetric":
        t = (1 - rate) * np.eye(k) + rate / (k - 1) * (1 - np.eye(k))
    else:
        for a, b in pairs:
            t[a, a] = t[b, b] = 1 - rate
            t[a, b] = t[b, a] = rate
    return t


def check_transition(clean: np.ndarray, noisy: np.ndarray, want: np.ndarray) -> None:
    k = want.shape[0]
    counts = np.zeros((k, k))
    np.add.at(counts, (clean, noisy), 1)
    for i in range(k):
        n_i = counts[i].sum()
        # every cell within 5 binomial standard deviations (+1 count for the impossible cells)
        std = np.sqrt(n_i * want[i] * (1 - want[i]))
        assert np.all(np.abs(counts[i] - n_i * want[i]) <= 5 * std + 1), (i, counts[i], n_i * want[i])
        # and the whole row a plausible multinomial draw
        nz = want[i] > 0
        assert counts[i][~nz].sum() == 0
        if nz.sum() > 1:
            assert scipy.stats.chisquare(counts[i][nz], n_i * want[i][nz]).pvalue > 1e-5


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.8, 1.0])
def test_symmetric_transition_matrix(generator, rate):
    k, n = 6, 120_000
    clean = torch.randint(0, k, (n,), generator=generator)
    noisy = make_noisy_labels(clean, k, rate, "symmetric", generator=torch.Generator().manual_seed(1))
    assert noisy.dtype == clean.dtype and noisy.shape == clean.shape
    check_transition(clean.numpy(), noisy.numpy(), expected_transition(k, rate, "symmetric"))


@pytest.mark.parametrize("rate", [0.3, 0.45, 1.0])
def test_asymmetric_transition_matrix(generator, rate):
    k, n = 7, 120_000
    pairs = [(0, 4), (5, 2), (1, 3)]  # class 6 is in no pair
    clean = torch.randint(0, k, (n,), generator=generator)
    noisy = make_noisy_labels(clean, k, rate, "asymmetric", pairs=pairs, generator=2)
    check_transition(clean.numpy(), noisy.numpy(), expected_transition(k, rate, "asymmetric", pairs))
    assert torch.equal(noisy[clean == 6], clean[clean == 6])


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_trusted_never_flip(generator, kind):
    k, n = 4, 5000
    clean = torch.randint(0, k, (n,), generator=generator)
    trusted = torch.rand(n, generator=generator) < 0.3
    pairs = [(0, 1), (2, 3)] if kind == "asymmetric" else None
    noisy = make_noisy_labels(clean, k, 1.0, kind, pairs=pairs, trusted=trusted, generator=3)
    assert torch.equal(noisy[trusted], clean[trusted])
    assert bool((noisy[~trusted] != clean[~trusted]).all())  # rate 1: every other sample flips


def test_reproducible_with_same_generator(generator):
    clean = torch.randint(0, 5, (1000,), generator=generator)
    a = make_noisy_labels(clean, 5, 0.4, "symmetric", generator=torch.Generator().manual_seed(9))
    b = make_noisy_labels(clean, 5, 0.4, "symmetric", generator=torch.Generator().manual_seed(9))
    c = make_noisy_labels(clean, 5, 0.4, "symmetric", generator=9)
    d = make_noisy_labels(clean, 5, 0.4, "symmetric", generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, d)


def test_noise_kind_none_copies():
    clean = torch.tensor([0, 1, 2])
    out = make_noisy_labels(clean, 3, 0.0, "none")
    assert torch.equal(out, clean) and out.data_ptr() != clean.data_ptr()


def test_noise_device(device, generator):
    clean = torch.randint(0, 5, (500,), generator=generator)
    a = make_noisy_labels(clean.to(device), 5, 0.5, "symmetric", generator=4)
    assert a.device.type == device.type
    assert torch.equal(a.cpu(), make_noisy_labels(clean, 5, 0.5, "symmetric", generator=4))


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        (dict(rate=1.5), ValueError, r"rate.*\[0, 1\]"),
        (dict(rate=-0.1), ValueError, r"rate.*\[0, 1\]"),
        (
            dict(kind="pairwise"),
            ValueError,
            "kind: unknown value 'pairwise'; valid values are: none, symmetric, asymmetric",
        ),
        (dict(kind="asymmetric"), ValueError, "pairs: required"),
        (dict(kind="asymmetric", pairs=[(0, 1), (1, 2)]), ValueError, "class 1 appears in pair 0 and pair 1"),
        (dict(kind="asymmetric", pairs=[(0, 3)]), ValueError, r"pairs\[0\]"),
        (dict(pairs=[(0, 1)]), ValueError, "pairs: only used with kind='asymmetric'"),
        (dict(kind="none"), ValueError, "rate: expected 0"),
        (dict(labels=torch.tensor([0, 3, 1])), ValueError, r"labels.*\[0, 3\)"),
        (dict(labels=torch.tensor([0.0, 1.0, 2.0])), TypeError, "labels.*integer"),
        (dict(trusted=torch.tensor([1, 0, 1])), TypeError, "trusted.*bool"),
        (dict(trusted=torch.tensor([True, False])), ValueError, r"trusted.*\[N\]=\[3\]"),
        (dict(num_classes=1), ValueError, "labels|num_classes"),
        (dict(generator=1.5), TypeError, "generator"),
    ],
)
def test_noise_bad_input(kwargs, exc, pattern):
    args = dict(labels=torch.tensor([0, 1, 2]), num_classes=3, rate=0.5, kind="symmetric")
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        make_noisy_labels(**args)


# --- trusted_mask -------------------------------------------------------------------------------
def test_trusted_mask_class_balanced(generator):
    k = 5
    labels = torch.randint(0, k, (2000,), generator=generator)
    mask = trusted_mask(labels, k, 100, generator=7)
    assert mask.dtype == torch.bool and mask.shape == labels.shape
    assert torch.equal(torch.bincount(labels[mask], minlength=k), torch.full((k,), 20))
    assert torch.equal(mask, trusted_mask(labels, k, 100, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(mask, trusted_mask(labels, k, 100, generator=8))
    assert not bool(trusted_mask(labels, k, 0, generator=7).any())


def test_trusted_mask_uniform_within_class():
    # 10 samples of class 0, 1 trusted per class: each sample chosen equally often across seeds
    labels = torch.tensor([0] * 10 + [1])
    picks = [int(trusted_mask(labels, 2, 2, generator=s)[:10].nonzero()) for s in range(2000)]
    assert scipy.stats.chisquare(np.bincount(picks, minlength=10)).pvalue > 1e-4


def test_trusted_mask_all_of_a_class():
    labels = torch.tensor([0, 0, 1, 1, 1])
    mask = trusted_mask(labels, 2, 4, generator=0)
    assert mask[:2].all() and int(mask[2:].sum()) == 2


def test_trusted_mask_bad_input():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match="size: expected a multiple of num_classes=3"):
        trusted_mask(labels, 3, 4)
    with pytest.raises(ValueError, match="needs 2 samples per class, but only class 1: 1"):
        trusted_mask(labels, 3, 6)
    with pytest.raises(ValueError, match="size"):
        trusted_mask(labels, 3, -3)
    with pytest.raises(ValueError, match=r"labels.*\[0, 2\)"):
        trusted_mask(labels, 2, 2)
