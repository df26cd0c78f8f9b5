"""SPEC §1: class_distance_matrix against per-class-pair torch.cdist brute force (float64), and
similarity_from_distances against a float64 loop reference of SPEC §1 (both normalisations) and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import simlab.similarity.exact_l2 as gram
from simlab.similarity import class_distance_matrix, similarity_from_distances


# --- naive references ----------------------------------------------------------------------------
def brute_distances(features: torch.Tensor, labels: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """Paper A eq. 15 literally: mean of all pairwise cdist distances per class pair, in float64.

    ``donot_use_mm`` makes cdist compute differences directly (no ||a||^2 + ||b||^2 - 2ab cancellation).
    """
    x = features.reshape(features.shape[0], -1).to(torch.float64).cpu()
    y = labels.cpu()
    out = torch.empty(k, k, dtype=torch.float64)
    for a in range(k):
        for b in range(k):
            d = torch.cdist(x[y == a], x[y == b], p=p, compute_mode="donot_use_mm_for_euclid_dist")
            out[a, b] = d.mean()
    return out


def reference_similarity(distances: np.ndarray, beta: float, normalise: str = "row") -> np.ndarray:
    """SPEC §1 written out with loops in float64 (no vector ops shared with the implementation).

    ``row``: mean and population std over all K entries of row k (the diagonal included);
    ``off_diagonal``: over the K - 1 entries j != k. Then softmax over all K of ``-beta z``, zero the
    diagonal and rescale the row to sum 1 (paper A §5.4).
    """
    k = distances.shape[0]
    s = np.zeros((k, k))
    for row in range(k):
        over = [j for j in range(k) if normalise == "row" or j != row]
        mean = sum(float(distances[row, j]) for j in over) / len(over)
        var = sum((float(distances[row, j]) - mean) ** 2 for j in over) / len(over)
        constant = all(distances[row, j] == distances[row, over[0]] for j in over)
        z = [0.0 if constant else (float(distances[row, j]) - mean) / math.sqrt(var) for j in range(k)]
        e = [math.exp(-beta * z[j]) for j in range(k)]
        total = sum(e)
        soft = [v / total for v in e]
        soft[row] = 0.0
        rest = sum(soft)
        for j in range(k):
            s[row, j] = soft[j] / rest
    return s


def reference_similarity_scipy(distances: np.ndarray, beta: float) -> np.ndarray:
    """The off-diagonal mode with scipy's zscore and softmax (a second, independent reference)."""
    k = distances.shape[0]
    s = np.zeros((k, k))
    for row in range(k):
        others = [j for j in range(k) if j != row]
        d = distances[row, others]
        z = np.zeros_like(d) if np.all(d == d[0]) else scipy.stats.zscore(d, ddof=0)
        s[row, others] = scipy.special.softmax(-beta * z)
    return s


def make_data(gen: torch.Generator, n: int, k: int, shape: tuple[int, ...], dtype: torch.dtype):
    labels = torch.cat([torch.arange(k), torch.randint(0, k, (n - k,), generator=gen)])  # no empty class
    labels = labels[torch.randperm(n, generator=gen)]
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    elif dtype == torch.int64:
        x = torch.randint(-50, 50, (n, *shape), generator=gen)
    else:
        # class-dependent means so the classes really differ
        x = torch.randn(n, *shape, generator=gen, dtype=torch.float64) + labels.view(-1, *[1] * len(shape))
        x = x.to(dtype)
    return x, labels


# --- class_distance_matrix -----------------------------------------------------------------------
@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8, torch.int64])
@pytest.mark.parametrize("chunk_size", [7, 64, 4096])
def test_distances_match_cdist_brute_force(generator, p, dtype, chunk_size):
    x, y = make_data(generator, 90, 4, (3, 5), dtype)
    got = class_distance_matrix(x, y, 4, p=p, chunk_size=chunk_size)
    want = brute_distances(x, y, 4, p)
    assert got.dtype == torch.float64 and got.shape == (4, 4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_uint8_l1_histogram_path_is_exact(generator):
    # Integer pixel distances: the histogram path and float64 brute force are both exact sums of
    # integers divided by the same count, so they agree bit for bit.
    x, y = make_data(generator, 150, 5, (3, 4, 4), torch.uint8)
    x[:10] = 255
    x[10:20] = 0  # the extreme bins
    got = class_distance_matrix(x, y, 5, p=1, chunk_size=16)
    want = brute_distances(x, y, 5, 1.0)
    assert torch.equal(got, want)


def test_uint8_l2_exact_for_near_duplicate_bright_images(generator):
    # ||a||^2 ~ 3072 * 255^2 = 2e8 > 2^24 while near-duplicates are ~1 apart: a float32 Gram matrix
    # over all 3,072 dims cancels catastrophically; the exact integer path must not.
    n = 40
    x = torch.full((n, 3072), 255, dtype=torch.uint8)
    x[torch.arange(n), torch.randint(0, 3072, (n,), generator=generator)] = 254  # one pixel off
    x[n // 2 :, :1000] = 0  # second class: a dark band
    y = (torch.arange(n) >= n // 2).long()
    got = class_distance_matrix(x, y, 2, p=2, chunk_size=16)
    torch.testing.assert_close(got, brute_distances(x, y, 2, 2.0), rtol=1e-13, atol=0)


@pytest.mark.parametrize(("m", "n", "dims"), [(3, 5, 13), (40, 17, 700), (9, 6, 2500), (3, 2, 40_000)])
@pytest.mark.parametrize("path", list(gram._GRAM_FNS))
def test_exact_uint8_gram_paths_match_int64(generator, path, m, n, dims):
    # Worst-case rows (all -128, all 127) plus random ones; 2500 and 40,000 dims cross the float32
    # (1,024) and int32 (32,768) slice boundaries.
    a = torch.randint(-128, 128, (m, dims), generator=generator, dtype=torch.int8)
    b = torch.randint(-128, 128, (n, dims), generator=generator, dtype=torch.int8)
    a[0], b[0] = -128, -128
    if n > 1:
        b[1] = 127
    want = a.long() @ b.long().T  # exact integer reference
    try:
        got = gram._GRAM_FNS[path](a, b)
    except RuntimeError as err:  # e.g. bf16 x bf16 -> float32 has no CPU kernel
        pytest.skip(reason=f"{path} unavailable here: {err}")
    assert torch.equal(got.to(torch.float64), want.to(torch.float64))


@pytest.mark.parametrize("path", list(gram._GRAM_FNS))
def test_uint8_l2_worst_case_every_gram_path_matches_cdist(generator, monkeypatch, path):
    # D = 3,072 pixels: |a|^2 up to 3072 * 255^2 ~ 2e8 and shifted Gram partial sums up to
    # 3072 * 128^2 ~ 5e7, both > 2^24, so nothing float32-wide over all features would be exact.
    # All-255, all-0, half/half and random images, 3 classes, blocks that straddle classes.
    n, dims = 36, 3072
    x = torch.randint(0, 256, (n, dims), generator=generator, dtype=torch.uint8)
    x[0:4], x[12:16], x[24:27] = 255, 0, 255
    x[4:6, : dims // 2], x[4:6, dims // 2 :] = 0, 255
    x[27, :] = 254  # near-duplicate of the all-255 rows: distance sqrt(3072) next to ~1e4 ones
    y = torch.arange(n) // 12
    y = y[torch.randperm(n, generator=generator)]  # unsorted input
    try:
        gram._GRAM_FNS[path](x[:2].view(torch.int8), x[:2].view(torch.int8))
    except RuntimeError as err:
        pytest.skip(reason=f"{path} unavailable here: {err}")
    monkeypatch.setattr(gram, "_choose_gram_path", lambda *a, **k: path)
    got = class_distance_matrix(x, y, 3, p=2, chunk_size=10)
    torch.testing.assert_close(got, brute_distances(x, y, 3, 2.0), rtol=1e-14, atol=0)


def test_uint8_l2_probe_rejects_inexact_gram_path(monkeypatch, caplog):
    # A float32 product over all 3,072 features rounds (partial sums > 2^24): the run-time probe
    # must drop it, and the chosen path is logged at INFO.
    full_fp32 = lambda a, b: a.float() @ b.float().T  # noqa: E731
    monkeypatch.setattr(gram, "_GRAM_FNS", {"fp32_full": full_fp32, "fp64": gram._GRAM_FNS["fp64"]})
    monkeypatch.setattr(gram, "_GRAM_PATHS", {})
    monkeypatch.setattr(gram, "_GRAM_EXACT", {})
    with caplog.at_level("INFO", logger="simlab.similarity.exact_l2"):
        chosen = gram._choose_gram_path(torch.device("cpu"), 3072, time_it=False)
    assert chosen == "fp64"
    assert "fp32_full is not exact" in caplog.text
    assert "Gram path 'fp64'" in caplog.text


def test_uint8_l2_timed_choice_is_an_exact_path_and_cached(monkeypatch, caplog):
    monkeypatch.setattr(gram, "_GRAM_PATHS", {})
    monkeypatch.setattr(gram, "_GRAM_EXACT", {})
    with caplog.at_level("INFO", logger="simlab.similarity.exact_l2"):
        chosen = gram._choose_gram_path(torch.device("cpu"), 96, time_it=True)
    assert chosen in gram._GRAM_FNS
    assert gram._GRAM_PATHS == {("cpu", 96): chosen}
    assert f"Gram path {chosen!r}" in caplog.text and "GMAC/s" in caplog.text
    assert gram._choose_gram_path(torch.device("cpu"), 96, time_it=True) == chosen


_NO_VNNI_CHILD = """
import json, logging, torch
import simlab.similarity.exact_l2 as gram
from simlab.similarity import class_distance_matrix
w = torch.cat([torch.full((4, 3072), -128, dtype=torch.int8), torch.full((4, 3072), 127, dtype=torch.int8)])
int_mm_exact = torch.equal(torch._int_mm(w, w.T).long(), w.long() @ w.long().T)
path = gram._choose_gram_path(torch.device("cpu"), 3072, time_it=False)
x = torch.full((8, 3072), 255, dtype=torch.uint8)
x[4:] = 0
x[[1, 5], :7] = 17
d = class_distance_matrix(x, torch.tensor([0, 0, 1, 1, 0, 1, 0, 1]), 2, p=2)
print(json.dumps({"int_mm_exact": int_mm_exact, "path": path, "d": d.tolist()}))
"""


def test_uint8_l2_without_vnni_rejects_saturating_int_mm(tmp_path):
    # Capped below VNNI, oneDNN's s8s8 GEMM adds u8 x s8 pairs in saturating 16-bit lanes and is NOT
    # exact on all-(-128) / all-127 rows (seen on this project's AMD EPYC with ONEDNN_MAX_CPU_ISA=AVX2):
    # the run-time probe must then pick another path, and the distances stay exact.
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _NO_VNNI_CHILD], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if not out["int_mm_exact"]:
        assert out["path"] != "int8_int_mm"
    x = torch.full((8, 3072), 255, dtype=torch.uint8)
    x[4:] = 0
    x[[1, 5], :7] = 17
    want = brute_distances(x, torch.tensor([0, 0, 1, 1, 0, 1, 0, 1]), 2, 2.0)
    torch.testing.assert_close(torch.tensor(out["d"], dtype=torch.float64), want, rtol=1e-14, atol=0)


def test_uint8_l2_falls_back_when_int_mm_refuses(generator, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("_int_mm: not supported here")

    monkeypatch.setattr(torch, "_int_mm", refuse, raising=False)
    monkeypatch.setattr(gram, "_GRAM_PATHS", {})
    monkeypatch.setattr(gram, "_GRAM_EXACT", {})
    x, y = make_data(generator, 50, 3, (3, 4, 4), torch.uint8)
    got = class_distance_matrix(x, y, 3, p=2, chunk_size=16)
    torch.testing.assert_close(got, brute_distances(x, y, 3, 2.0), rtol=1e-13, atol=0)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_image_scale_float32_accuracy(generator, p):
    # CIFAR-sized vectors in 0..255 float32 with a large offset: the p=2 matrix-product form must not
    # lose accuracy to cancellation (issue 2: ~1e-6 relative against float64 brute force).
    n, k = 48, 3
    y = torch.arange(n) % k
    x = (torch.rand(n, 3, 32, 32, generator=generator) * 255).round() + 1000.0
    got = class_distance_matrix(x.to(torch.float32), y, k, p=p, chunk_size=20)
    want = brute_distances(x, y, k, p)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)


def test_single_sample_classes_and_self_pairs(generator):
    x = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    for p in (1.0, 2.0):
        d = class_distance_matrix(x, y, 3, p=p)
        assert torch.equal(torch.diagonal(d), torch.zeros(3, dtype=torch.float64))
        assert d[0, 1] == pytest.approx(float(torch.linalg.vector_norm(x[0] - x[1], ord=p)), rel=1e-12)
        assert torch.equal(d, d.T)


def test_diagonal_includes_self_pairs():
    # class 0 = {0, 2} on a line: pairs (0,0),(0,2),(2,0),(2,2) -> mean distance 1
    x = torch.tensor([[0.0], [10.0], [2.0]])
    y = torch.tensor([0, 1, 0])
    assert class_distance_matrix(x, y, 2, p=2)[0, 0].item() == pytest.approx(1.0)
    assert class_distance_matrix(x, y, 2, p=1)[0, 1].item() == pytest.approx(9.0)


def test_max_per_class_at_least_class_size_is_exact(generator):
    x, y = make_data(generator, 60, 3, (4,), torch.float64)
    full = class_distance_matrix(x, y, 3)
    sub = class_distance_matrix(x, y, 3, max_per_class=60, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sub, full, rtol=1e-12, atol=0)


def test_max_per_class_one_sample_per_class(generator):
    x, y = make_data(generator, 40, 3, (4,), torch.float64)
    d = class_distance_matrix(x, y, 3, max_per_class=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.diagonal(d), torch.zeros(3, dtype=torch.float64))
    # D[0, 1] must be the distance of some real (class 0, class 1) sample pair
    pairwise = torch.cdist(x[y == 0], x[y == 1], compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.isclose(pairwise, d[0, 1], rtol=1e-12, atol=0).any()


def test_max_per_class_reproducible_and_seeded(generator):
    x, y = make_data(generator, 200, 4, (5,), torch.float32)
    a = class_distance_matrix(x, y, 4, max_per_class=10, generator=torch.Generator().manual_seed(3))
    b = class_distance_matrix(x, y, 4, max_per_class=10, generator=3)  # an int seed is the same seed
    c = class_distance_matrix(x, y, 4, max_per_class=10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_max_per_class_subset_is_uniform_over_samples():
    # Class 0 has samples at 0 and at 1..9; with one sample kept, D[0, 1] (class 1 = {0}) is the
    # chosen value, which must be uniform over the 10 samples across seeds.
    x = torch.arange(10, dtype=torch.float64).view(-1, 1)
    x = torch.cat([x, torch.zeros(1, 1, dtype=torch.float64)])
    y = torch.tensor([0] * 10 + [1])
    seen = [int(class_distance_matrix(x, y, 2, max_per_class=1, generator=s)[0, 1]) for s in range(2000)]
    counts = np.bincount(seen, minlength=10)
    assert scipy.stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_device_parity(device, generator, p):
    x, y = make_data(generator, 70, 3, (2, 3, 3), torch.float32)
    got = class_distance_matrix(x.to(device), y.to(device), 3, p=p, chunk_size=16)
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu(), brute_distances(x, y, 3, p), rtol=1e-12, atol=1e-12)


def test_uint8_histogram_device_parity(device, generator):
    x, y = make_data(generator, 70, 3, (2, 3, 3), torch.uint8)
    got = class_distance_matrix(x.to(device), y.to(device), 3, p=1)
    assert torch.equal(got.cpu(), brute_distances(x, y, 3, 1.0))


def test_uint8_l2_device_parity(device, generator, monkeypatch):
    # The exact Gram path chosen for the device (int8 _int_mm / bf16 / fp32 slices / fp64 on CUDA).
    monkeypatch.setattr(gram, "_GRAM_PATHS", {})
    monkeypatch.setattr(gram, "_GRAM_EXACT", {})
    x, y = make_data(generator, 70, 3, (3, 32, 32), torch.uint8)
    x[:5] = 255
    got = class_distance_matrix(x.to(device), y.to(device), 3, p=2, chunk_size=32)
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu(), brute_distances(x, y, 3, 2.0), rtol=1e-13, atol=0)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any torch op creates (deterministic memory-bound check)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize(
    ("p", "dtype"), [(2.0, torch.float32), (2.0, torch.uint8), (1.0, torch.float32), (1.0, torch.uint8)]
)
def test_memory_bounded_by_chunk_size_never_n_by_n(generator, p, dtype):
    n = 300  # N x N = 90,000; features N x D = 1,200; the uint8 |u - v| table is 256 x 256 = 65,536
    x, y = make_data(generator, n, 3, (4,), dtype)
    with _LargestTensor() as probe:
        got = class_distance_matrix(x, y, 3, p=p, chunk_size=64)
    assert probe.largest <= 256 * 256 < n * n
    torch.testing.assert_close(got, brute_distances(x, y, 3, p), rtol=1e-12, atol=1e-12)


def test_empty_class_names_it():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"class 2 .*no samples"):
        class_distance_matrix(x, torch.tensor([0, 1, 0, 1]), 3)


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        (dict(features=torch.tensor([[0.0, float("nan")], [1.0, 1.0]])), ValueError, "features.*finite"),
        (dict(features=torch.tensor([[0.0, float("inf")], [1.0, 1.0]])), ValueError, "features.*finite"),
        (dict(labels=torch.tensor([0, 2])), ValueError, r"labels.*\[0, 2\).*\[0, 2\]"),
        (dict(labels=torch.tensor([-1, 1])), ValueError, "labels.*class indices"),
        (dict(labels=torch.tensor([0.0, 1.0])), TypeError, "labels.*integer"),
        (dict(labels=torch.tensor([0, 1, 1])), ValueError, "labels.*expected 2 labels"),
        (dict(labels=torch.tensor([[0, 1]])), ValueError, "labels.*1-d"),
        (dict(p=3), ValueError, "p: expected 1 or 2"),
        (dict(num_classes=0), ValueError, "num_classes"),
        (dict(max_per_class=0), ValueError, "max_per_class"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(features=torch.zeros(0, 3)), ValueError, "features.*non-empty"),
        (dict(features=[[0.0], [1.0]]), TypeError, "features.*torch.Tensor"),
        (dict(generator="seed"), TypeError, "generator"),
    ],
)
def test_distance_bad_input(kwargs, exc, pattern):
    args = dict(features=torch.tensor([[0.0, 1.0], [1.0, 1.0]]), labels=torch.tensor([0, 1]), num_classes=2)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        class_distance_matrix(**args)


# --- similarity_from_distances ------------------------------------------------------------------
@pytest.mark.parametrize("normalise", ["row", "off_diagonal"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 7.0])
def test_similarity_matches_reference(generator, beta, normalise):
    # a non-zero diagonal (within-class distances, eq. 15) is where the two modes differ
    d = torch.rand(6, 6, generator=generator, dtype=torch.float64) * 10
    got = similarity_from_distances(d, beta, normalise=normalise)
    torch.testing.assert_close(
        got, torch.from_numpy(reference_similarity(d.numpy(), beta, normalise)), rtol=1e-12, atol=1e-15
    )


def test_off_diagonal_mode_matches_scipy(generator):
    d = torch.rand(7, 7, generator=generator, dtype=torch.float64) * 3
    torch.testing.assert_close(
        similarity_from_distances(d, 2.5, normalise="off_diagonal"),
        torch.from_numpy(reference_similarity_scipy(d.numpy(), 2.5)),
        rtol=1e-12,
        atol=1e-15,
    )


def test_default_is_row_normalisation_and_differs_from_off_diagonal(generator):
    # SPEC §1: the paper's reading is the default. Word-vector distances have a zero diagonal, which
    # widens the row's std, so "row" is a smaller effective beta than "off_diagonal" (beta * std_off/std_row).
    d = torch.rand(5, 5, generator=generator, dtype=torch.float64) + 1.0
    d.fill_diagonal_(0.0)
    d = (d + d.T) / 2
    row = similarity_from_distances(d, 3.0)
    torch.testing.assert_close(row, similarity_from_distances(d, 3.0, normalise="row"), rtol=0, atol=0)
    off = similarity_from_distances(d, 3.0, normalise="off_diagonal")
    assert float((row - off).abs().max()) > 1e-3
    # ... and equals off_diagonal at the per-row rescaled beta (the two differ only by that rescaling)
    for k in range(5):
        others = [j for j in range(5) if j != k]
        ratio = float(d[k, others].std(correction=0) / d[k].std(correction=0))
        rescaled = similarity_from_distances(d, 3.0 * ratio, normalise="off_diagonal")
        torch.testing.assert_close(row[k], rescaled[k], rtol=1e-12, atol=1e-15)


def test_similarity_rows_sum_to_one_and_zero_diagonal(generator):
    d = torch.rand(10, 10, generator=generator)
    s = similarity_from_distances(d, 3.0)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s.sum(1), torch.ones(10), rtol=0, atol=1e-6)
    assert torch.equal(torch.diagonal(s), torch.zeros(10))
    assert bool((s >= 0).all())


def test_beta_zero_is_uniform_over_other_classes(generator):
    d = torch.rand(5, 5, generator=generator, dtype=torch.float64)
    want = (torch.ones(5, 5, dtype=torch.float64) - torch.eye(5, dtype=torch.float64)) / 4
    torch.testing.assert_close(similarity_from_distances(d, 0.0), want, rtol=0, atol=1e-15)


def test_larger_beta_concentrates_on_nearer_classes(generator):
    d = torch.rand(6, 6, generator=generator, dtype=torch.float64)
    d = d + d.T
    off = ~torch.eye(6, dtype=torch.bool)
    nearest = d.masked_fill(~off, float("inf")).argmin(1)
    prev_mass, prev_entropy = None, None
    for beta in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
        s = similarity_from_distances(d, beta)
        # nearer class -> more mass, in every row
        for k in range(6):
            js = [j for j in range(6) if j != k]
            order = sorted(js, key=lambda j: float(d[k, j]))
            vals = [float(s[k, j]) for j in order]
            assert all(a >= b - 1e-15 for a, b in zip(vals, vals[1:], strict=False))
        mass = s[torch.arange(6), nearest]
        ent = -(s[off] * s[off].log()).view(6, 5).sum(1)
        if prev_mass is not None:
            assert bool((mass > prev_mass).all())
            assert bool((ent < prev_entropy).all())
        prev_mass, prev_entropy = mass, ent


@pytest.mark.parametrize("normalise", ["row", "off_diagonal"])
def test_similarity_invariant_to_affine_rescaling_per_row(generator, normalise):
    # §5.4: z-normalisation makes beta independent of the distance scale.
    d = torch.rand(5, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        similarity_from_distances(d * 37.0 + 5.0, 2.0, normalise=normalise),
        similarity_from_distances(d, 2.0, normalise=normalise),
        rtol=1e-12,
        atol=1e-15,
    )


def test_constant_row_gives_uniform():
    d = torch.full((4, 4), 0.1, dtype=torch.float64)  # std of the off-diagonal entries is exactly 0
    d[0, 3] = 1.0
    s = similarity_from_distances(d, 5.0)
    for k in (1, 2, 3):
        row = [float(s[k, j]) for j in range(4) if j != k]
        assert row == pytest.approx([1 / 3] * 3, abs=1e-15)


def test_two_classes():
    s = similarity_from_distances(torch.tensor([[0.0, 2.0], [2.0, 0.0]]), 1.0)
    assert torch.equal(s, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


@pytest.mark.parametrize(
    ("distances", "beta", "exc", "pattern"),
    [
        (torch.rand(3, 4), 1.0, ValueError, r"distances.*square.*\(3, 4\)"),
        (torch.rand(3), 1.0, ValueError, "distances.*2-d"),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), 1.0, ValueError, "distances.*finite"),
        (torch.zeros(1, 1), 1.0, ValueError, "distances.*at least 2 classes"),
        (torch.ones(3, 3, dtype=torch.int64), 1.0, TypeError, "distances.*floating"),
        (torch.rand(3, 3), -0.1, ValueError, r"beta.*\[0, inf\].*-0.1"),
        (torch.rand(3, 3), float("nan"), ValueError, "beta"),
        (torch.rand(3, 3), "1", TypeError, "beta"),
    ],
)
def test_similarity_bad_input(distances, beta, exc, pattern):
    with pytest.raises(exc, match=pattern):
        similarity_from_distances(distances, beta)


def test_similarity_bad_normalise():
    with pytest.raises(ValueError, match=r"normalise.*'row'.*'off_diagonal'.*'rows'"):
        similarity_from_distances(torch.rand(3, 3), 1.0, normalise="rows")


# --- issue 15 item 7: rows equal up to rounding, overflow from huge finite inputs -----------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_equal_up_to_rounding_is_constant(dtype):
    """Off-diagonal distances that differ only by rounding (1 ulp) are equal: a uniform row, not
    z = +-1 amplified from the rounding, and never NaN."""
    eps = torch.finfo(dtype).eps
    d = torch.full((4, 4), 0.3, dtype=dtype)
    d.fill_diagonal_(0.0)
    d[0, 1] = torch.nextafter(torch.tensor(0.3, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    d[2, 3] = torch.tensor(0.3, dtype=dtype) * (1 - eps)
    s = similarity_from_distances(d, 5.0)
    want = (torch.ones(4, 4, dtype=dtype) - torch.eye(4, dtype=dtype)) / 3
    torch.testing.assert_close(s, want, rtol=0, atol=4 * eps)


def test_huge_finite_distances_do_not_overflow(generator):
    """z-scores are scale-free (paper A §5.4): 1e300-scaled distances give what the scipy reference
    gives on the unscaled ones, not a NaN from an overflowing mean or variance."""
    d = torch.rand(6, 6, generator=generator, dtype=torch.float64) * 10
    got = similarity_from_distances(d * 1e300, 2.0)
    torch.testing.assert_close(
        got, torch.from_numpy(reference_similarity(d.numpy(), 2.0)), rtol=1e-12, atol=1e-15
    )


def test_overflowing_beta_gives_the_limit_not_nan():
    """beta * z past float64's range: the eq. 17 limit (all mass on the nearest classes, split evenly
    among ties), never a NaN row."""
    d = torch.tensor([[0, 1, 1, 2.0], [1, 0, 1, 1], [1, 1, 0, 1], [2, 1, 3, 0]], dtype=torch.float64)
    s = similarity_from_distances(d * 1e300, 1e308)
    want = torch.tensor(
        [[0, 0.5, 0.5, 0], [1 / 3, 0, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 0, 1 / 3], [0, 1, 0, 0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(s, want, rtol=0, atol=1e-15)
