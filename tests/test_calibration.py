"""Calibration metrics (SPEC §5) against independent references.

hist ECE: torchmetrics (prediction scope) and a brute-force per-bin loop (both scopes, exact edges);
KDE ECE: the slow direct port of Zhang et al. in ``tests/reference_kde.py`` (KDEpy FFTKDE + loop);
accuracy / NLL / Brier: torch built-ins; statistics: labels drawn from the model's own probabilities.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from reference_kde import published_kde_ece, reference_kde_ece

from simlab.calibration import (
    accuracy,
    brier,
    confidence_gap,
    hist_ece,
    kde_ece,
    metrics,
    nll,
    reliability_diagram,
)

SCOPES = ("prediction", "output")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _data(n: int, k: int, scale: float, seed: int, *, calibrated: bool = True, dtype=torch.float64):
    """Random softmax probabilities ``[n, k]`` and labels (drawn from the probabilities if calibrated)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    probs = logits.softmax(dim=1)
    if calibrated:
        labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    else:
        labels = torch.randint(0, k, (n,), generator=g)
    return logits, probs.to(dtype), labels


def brute_force_hist_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int, scope: str) -> float:
    """Paper A eq. 3-4 with Python loops: bins ((m-1)/M, m/M], the first bin also takes 0."""
    pairs = []
    for i in range(probs.shape[0]):
        row = [float(v) for v in probs[i]]
        y = int(labels[i])
        if scope == "prediction":
            k = max(range(len(row)), key=lambda j: (row[j], -j))  # first index of the max
            pairs.append((row[k], 1.0 if k == y else 0.0))
        else:
            pairs.extend((row[k], 1.0 if k == y else 0.0) for k in range(len(row)))
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        members = [(c, h) for c, h in pairs if lo < c <= hi or (m == 1 and c == 0.0)]
        if members:
            acc = sum(h for _, h in members) / len(members)
            conf = sum(c for c, _ in members) / len(members)
            total += len(members) / len(pairs) * abs(acc - conf)
    return total


# ------------------------------------------------------------------------------------------------
# histogram ECE
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [15, 10, 7])
def test_hist_ece_prediction_matches_torchmetrics(seed, n_bins):
    from torchmetrics.functional.classification import multiclass_calibration_error

    _, probs, labels = _data(2000, 10, 2.5, seed)
    conf = probs.max(dim=1).values
    # torchmetrics bins [a, b) in float32, ours (a, b] in float64: keep away from the edges.
    edges = torch.arange(0, n_bins + 1, dtype=torch.float64) / n_bins
    keep = (conf[:, None] - edges[None, :]).abs().min(dim=1).values > 1e-5
    probs, labels = probs[keep], labels[keep]
    expected = multiclass_calibration_error(
        probs.float(), labels, num_classes=10, n_bins=n_bins, norm="l1"
    ).item()
    assert hist_ece(probs, labels, n_bins=n_bins, scope="prediction") == pytest.approx(expected, abs=2e-6)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("n_bins", [15, 4, 1])
def test_hist_ece_matches_brute_force(scope, n_bins):
    _, probs, labels = _data(300, 6, 2.0, seed=n_bins)
    expected = brute_force_hist_ece(probs, labels, n_bins, scope)
    assert hist_ece(probs, labels, n_bins=n_bins, scope=scope) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("scope", SCOPES)
def test_hist_ece_bin_edges_belong_to_the_lower_bin(scope):
    # Exactly representable edges with n_bins=4: 0.25 is in bin 1, 0.5 in bin 2, 0 in bin 1.
    probs = torch.tensor(
        [[0.25, 0.75, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 3, 2])
    expected = brute_force_hist_ece(probs, labels, 4, scope)
    assert hist_ece(probs, labels, n_bins=4, scope=scope) == pytest.approx(expected, abs=1e-12)
    count, _, _ = metrics.bin_statistics(probs, labels, n_bins=4, scope=scope)
    if scope == "output":  # 16 entries: 0.0 x7 and 0.25 x5 -> bin 1; 0.5 x2 -> bin 2; 0.75, 1.0 -> bins 3, 4
        assert count.tolist() == [12.0, 2.0, 1.0, 1.0]


@pytest.mark.parametrize("scope", SCOPES)
def test_hist_ece_chunking_does_not_change_the_result(scope, monkeypatch):
    _, probs, labels = _data(257, 7, 2.0, seed=3)
    whole = hist_ece(probs, labels, scope=scope)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 50)  # 7 rows per chunk, ragged last chunk
    assert hist_ece(probs, labels, scope=scope) == pytest.approx(whole, abs=1e-12)
    assert kde_ece(probs, labels, scope=scope) == pytest.approx(
        reference_kde_ece(probs.numpy(), labels.numpy(), scope), abs=1e-4
    )


def test_hist_ece_accepts_low_precision_and_numpy():
    _, probs, labels = _data(500, 5, 2.0, seed=4)
    p32 = probs.float()
    expected = brute_force_hist_ece(p32.double(), labels, 15, "output")  # the float32 values, exactly
    assert hist_ece(p32, labels, scope="output") == pytest.approx(expected, abs=1e-12)
    assert hist_ece(p32.numpy(), labels.numpy(), scope="output") == pytest.approx(expected, abs=1e-12)
    assert math.isfinite(hist_ece(probs.to(torch.bfloat16), labels))


# ------------------------------------------------------------------------------------------------
# KDE ECE
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(
    ("n", "k", "scale", "seed", "calibrated"),
    [(400, 10, 3.0, 0, True), (1000, 4, 1.0, 1, True), (150, 3, 6.0, 2, False), (600, 20, 4.0, 3, False)],
)
def test_kde_ece_matches_direct_port(scope, n, k, scale, seed, calibrated):
    _, probs, labels = _data(n, k, scale, seed, calibrated=calibrated)
    expected = reference_kde_ece(probs.numpy(), labels.numpy(), scope)
    assert kde_ece(probs, labels, scope=scope) == pytest.approx(expected, abs=1e-4)


def test_kde_ece_matches_direct_port_in_float32():
    _, probs, labels = _data(500, 10, 3.0, 5)
    p32 = probs.float()
    expected = reference_kde_ece(p32.double().numpy(), labels.numpy(), "prediction")
    assert kde_ece(p32, labels) == pytest.approx(expected, abs=1e-4)


def _dyadic_top_label_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of exact binary fractions summing exactly to 1, whose correct top-label confidences are
    0.5 and 0.75 equally often: every float32 step of the published code (confidences stored in a
    float32 tensor, ``np.std`` of a float32 array = 0.125, the bandwidth 0.125 * 32^-0.2 = 1/16 kept
    in float32 by NumPy 2's promotion) is then exact, so the values can agree to rounding."""
    g = torch.Generator().manual_seed(seed)
    rows = [[0.5, 0.25, 0.125, 0.125], [0.75, 0.125, 0.0625, 0.0625], [0.375, 0.25, 0.25, 0.125]]
    kinds = torch.tensor([0] * 4 + [1] * 4 + [2] * 8)  # N = 16: (2N)^-0.2 = 0.5 exactly
    probs = torch.tensor(rows, dtype=torch.float64)[kinds]
    labels = torch.where(kinds < 2, 0, torch.randint(1, 4, (len(kinds),), generator=g))  # 2: wrong
    perm = torch.stack([torch.randperm(4, generator=g) for _ in range(len(kinds))])
    probs = torch.empty_like(probs).scatter_(1, perm, probs)  # shuffle the classes per row
    return probs, perm.gather(1, labels[:, None]).squeeze(1)


@pytest.mark.parametrize("seed", [0, 1])
def test_kde_ece_equals_published_code_top_label(seed):
    # The published loop structure (tests/reference_kde.py: per-row loops, float32 confidences, the
    # grid loop with argmin look-ups) on inputs where its float32 steps are exact: the same value.
    probs, labels = _dyadic_top_label_data(seed)
    expected = published_kde_ece(probs.numpy(), labels.numpy(), "prediction")
    assert kde_ece(probs, labels, scope="prediction") == pytest.approx(expected, rel=1e-12, abs=0)
    assert kde_ece(probs.float(), labels, scope="prediction") == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize(("n", "k", "scale", "seed"), [(60, 5, 3.0, 0), (40, 3, 1.0, 1)])
def test_kde_ece_equals_published_code_output_scope(n, k, scale, seed):
    # Output scope = the published binary path on the N*K pairs ([1 - p, p], 1[y = k]), all float64.
    _, probs, labels = _data(n, k, scale, seed)
    expected = published_kde_ece(probs.numpy(), labels.numpy(), "output")
    assert kde_ece(probs, labels, scope="output") == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("n_bins", [1, 3, 7, 10, 15, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bin_index_equals_bucketize_at_the_edges(n_bins, dtype):
    # Values on, just below and just above every edge m/M (in the input dtype), plus 0 and 1.
    inner = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    e = inner.to(dtype)
    vals = torch.cat([e, torch.nextafter(e, torch.ones_like(e)), torch.nextafter(e, torch.zeros_like(e))])
    extra = torch.tensor([0.0, 1.0, 1e-30, 1.0004], dtype=dtype)  # 1.0004: rows may sum to 1 +- 1e-3
    vals = torch.cat([vals, extra, torch.rand(1000, dtype=dtype)])
    c = vals.double()
    got = metrics._bin_index(c, n_bins)
    assert torch.equal(got, torch.bucketize(c, inner))


def test_kde_ece_undefined_cases_return_nan():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2]], dtype=torch.float64)
    assert math.isnan(kde_ece(probs, torch.tensor([1, 1])))  # no correct prediction
    probs = torch.tensor([[0.7, 0.3], [0.7, 0.3]], dtype=torch.float64)
    assert math.isnan(kde_ece(probs, torch.tensor([0, 0])))  # zero spread of correct confidences


# ------------------------------------------------------------------------------------------------
# known truth: labels drawn from the model's own probabilities are calibrated
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", SCOPES)
def test_ece_goes_to_zero_for_self_sampled_labels(scope):
    # For calibrated pairs the expected histogram ECE is at most sqrt(2/pi) * sqrt(M / (4n))
    # (per bin a mean of centred Bernoulli residuals): ~0.011 for n=20000, M=15; the KDE estimator
    # adds a smoothing bias of the same order. Bounds below are ~3x that; a miscalibrated model
    # (same confidences, sharpened) at the same n must be far above them.
    small, large = [], []
    for seed in range(3):
        _, p, y = _data(200, 5, 2.0, seed=100 + seed)
        small.append((hist_ece(p, y, scope=scope), kde_ece(p, y, scope=scope)))
        _, p, y = _data(20000, 5, 2.0, seed=200 + seed)
        large.append((hist_ece(p, y, scope=scope), kde_ece(p, y, scope=scope)))
        hist_big, kde_big = large[-1]
        assert hist_big < 0.03 and kde_big < 0.03
        # the same labels with overconfident probabilities (temperature 1/3) are visibly miscalibrated
        logits, _, _ = _data(20000, 5, 2.0, seed=200 + seed)
        sharp = (3 * logits).softmax(dim=1)
        assert hist_ece(sharp, y, scope=scope) > 0.05
        assert kde_ece(sharp, y, scope=scope) > 0.05
    assert np.mean([h for h, _ in large]) < np.mean([h for h, _ in small])
    assert np.mean([k for _, k in large]) < np.mean([k for _, k in small])


@pytest.mark.parametrize("k", [2, 10, 200])
@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_output_hist_ece_is_bounded_by_two_over_k(k, scale):
    # Weights |B_m| / (N*K) (SPEC): each bin's |sum of (1[y=k] - p)| is at most the sum of the absolute
    # residuals, and over a row those add to 2 (1 - p_y). So Hist O <= 2 mean(1 - p_y) / K <= 2 / K,
    # which is why it reads ~0.01 % at K = 200 (RESULTS.md). Worst cases: confidently wrong labels.
    for calibrated in (True, False):
        _, p, y = _data(3000, k, scale, seed=k, calibrated=calibrated)
        bound = 2 * float((1 - p[torch.arange(len(y)), y]).mean()) / k
        ece = hist_ece(p, y, scope="output")
        assert ece <= bound + 1e-12 <= 2 / k + 1e-12
    # the bound is attained: one-hot predictions, all wrong (every pair sits at 0 or 1 with the wrong outcome)
    y = torch.arange(3000) % k
    wrong = F.one_hot((y + 1) % k, k).double()
    assert hist_ece(wrong, y, scope="output") == pytest.approx(2 / k, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# accuracy, NLL, Brier
# ------------------------------------------------------------------------------------------------
def test_simple_metrics_match_torch_builtins():
    logits, probs, labels = _data(700, 8, 2.0, seed=6)
    assert accuracy(probs, labels) == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    assert nll(probs, labels) == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-10)
    one_hot = F.one_hot(labels, 8).double()
    expected_brier = F.mse_loss(probs, one_hot, reduction="sum").item() / 700
    assert brier(probs, labels) == pytest.approx(expected_brier, rel=1e-10)


def test_confidence_gap_matches_brute_force_and_the_unsigned_hist_ece():
    logits, probs, labels = _data(700, 8, 2.0, seed=6)
    p, y = probs.numpy(), labels.numpy()
    want = float(np.mean(p.max(axis=1)) - np.mean(p.argmax(axis=1) == y))
    gap = confidence_gap(probs, labels)
    assert gap == pytest.approx(want, abs=1e-15)
    # the prediction ECE is the binned |gap|: equal with one bin, never smaller with more
    assert abs(gap) == pytest.approx(hist_ece(probs, labels, n_bins=1), abs=1e-15)
    for n_bins in (5, 15, 40):
        assert abs(gap) <= hist_ece(probs, labels, n_bins=n_bins) + 1e-15


def test_confidence_gap_sign_on_known_truth():
    # every prediction at 0.9 confidence, half of them right: over-confident by 0.4
    probs = torch.tensor([[0.9, 0.1]] * 4, dtype=torch.float64)
    assert confidence_gap(probs, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.4)
    # at 0.6 confidence and always right: under-confident by 0.4
    assert confidence_gap(torch.tensor([[0.6, 0.4]] * 3), torch.tensor([0, 0, 0])) == pytest.approx(-0.4)


def test_nll_of_zero_probability_is_clamped_not_infinite():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    assert nll(probs, torch.tensor([1, 0])) == pytest.approx((-math.log(1e-12) - math.log(0.5)) / 2)


def test_metrics_return_python_floats():
    _, probs, labels = _data(50, 3, 1.0, seed=7)
    for value in (
        accuracy(probs, labels),
        nll(probs, labels),
        brier(probs, labels),
        confidence_gap(probs, labels),
        hist_ece(probs, labels),
        kde_ece(probs, labels, scope="output"),
    ):
        assert type(value) is float


# ------------------------------------------------------------------------------------------------
# reliability diagram
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", SCOPES)
def test_reliability_diagram_bars_are_bin_accuracies(scope, tmp_path):
    _, probs, labels = _data(400, 5, 2.0, seed=8)
    fig = reliability_diagram(probs, labels, n_bins=10, scope=scope)
    assert isinstance(fig, Figure)
    heights = [patch.get_height() for patch in fig.axes[0].patches[:10]]
    # brute-force per-bin outcome frequency
    c = probs.max(1).values if scope == "prediction" else probs.reshape(-1)
    h = (probs.argmax(1) == labels).double() if scope == "prediction" else F.one_hot(labels, 5).reshape(-1)
    for m in range(10):
        members = [
            (float(ci), float(hi))
            for ci, hi in zip(c, h, strict=True)
            if m / 10 < ci <= (m + 1) / 10 or (m == 0 and ci == 0)
        ]
        expected = sum(hi for _, hi in members) / len(members) if members else 0.0
        assert heights[m] == pytest.approx(expected, abs=1e-12)
    fig.savefig(tmp_path / "rel.png")
    assert (tmp_path / "rel.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
_GOOD_P = torch.tensor([[0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
_GOOD_Y = torch.tensor([1, 0])
_FUNCS = [
    pytest.param(lambda p, y, **kw: hist_ece(p, y, **kw), id="hist_ece"),
    pytest.param(lambda p, y, **kw: kde_ece(p, y, **kw), id="kde_ece"),
    pytest.param(lambda p, y, **kw: accuracy(p, y), id="accuracy"),
    pytest.param(lambda p, y, **kw: nll(p, y), id="nll"),
    pytest.param(lambda p, y, **kw: brier(p, y), id="brier"),
    pytest.param(lambda p, y, **kw: confidence_gap(p, y), id="confidence_gap"),
    pytest.param(lambda p, y, **kw: reliability_diagram(p, y, **kw), id="reliability_diagram"),
]


@pytest.mark.parametrize("func", _FUNCS)
@pytest.mark.parametrize(
    ("probs", "labels", "error", "match"),
    [
        (_GOOD_P[0], _GOOD_Y, ValueError, "probs must be 2-D"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ValueError, "probs must have at least one row"),
        (torch.tensor([[0.2, 0.7], [0.6, 0.4]]), _GOOD_Y, ValueError, "probs rows must sum to 1"),
        (torch.tensor([[2.0, -1.0], [0.6, 0.4]]), _GOOD_Y, ValueError, "probs must be non-negative"),
        (torch.tensor([[float("nan"), 1.0], [0.6, 0.4]]), _GOOD_Y, ValueError, "probs must be finite"),
        (torch.tensor([[float("inf"), 1.0], [0.6, 0.4]]), _GOOD_Y, ValueError, "probs must be finite"),
        (torch.tensor([[3e38, 3e38], [0.6, 0.4]]), _GOOD_Y, ValueError, "probs rows must sum to 1"),
        (torch.tensor([[1, 0], [0, 1]]), _GOOD_Y, TypeError, "probs must be a floating-point"),
        ([[0.2, 0.8], [0.6, 0.4]], _GOOD_Y, TypeError, "probs must be a torch.Tensor"),
        (torch.tensor([[3.0, 1.0], [0.5, 2.0]]), _GOOD_Y, ValueError, "probs rows must sum to 1"),  # logits
        (
            _GOOD_P,
            torch.tensor([1, 0, 1]),
            ValueError,
            r"labels: expected 2 labels \(one per sample\), got 3",
        ),
        (_GOOD_P, torch.tensor([[1], [0]]), ValueError, r"labels: expected a 1-d tensor \[N\]"),
        (_GOOD_P, torch.tensor([1.0, 0.0]), TypeError, "labels: expected an integer tensor"),
        (_GOOD_P, torch.tensor([True, False]), TypeError, "labels: expected an integer tensor"),
        (_GOOD_P, torch.tensor([2, 0]), ValueError, r"labels: expected class indices in \[0, 2\)"),
        (_GOOD_P, torch.tensor([-1, 0]), ValueError, r"labels: expected class indices in \[0, 2\)"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, probs, labels, error, match):
    with pytest.raises(error, match=match):
        func(probs, labels)


@pytest.mark.parametrize("func", [hist_ece, kde_ece, reliability_diagram, metrics.bin_statistics])
def test_unknown_scope_lists_valid_ones(func):
    with pytest.raises(ValueError, match="scope: unknown value 'top'; valid values are: prediction, output"):
        func(_GOOD_P, _GOOD_Y, scope="top")


@pytest.mark.parametrize("func", [hist_ece, reliability_diagram])
@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_bad_n_bins(func, n_bins):
    with pytest.raises(ValueError, match="n_bins: expected an integer >= 1"):
        func(_GOOD_P, _GOOD_Y, n_bins=n_bins)


def test_row_sum_tolerance_is_relative_to_dtype():
    # bf16 cannot represent 0.3/0.7 exactly: its rows may be off by a few ulps of 1 and must pass.
    p = torch.tensor([[0.3, 0.7], [0.1, 0.9]]).to(torch.bfloat16)
    assert 0.0 <= hist_ece(p, torch.tensor([1, 1])) <= 1.0
    with pytest.raises(ValueError, match="probs rows must sum to 1"):
        hist_ece(torch.tensor([[0.3, 0.698], [0.1, 0.9]], dtype=torch.float64), torch.tensor([1, 1]))


# ------------------------------------------------------------------------------------------------
# GPU
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("scope", SCOPES)
def test_metrics_on_cuda_match_cpu(scope):
    _, probs, labels = _data(3000, 10, 2.0, seed=9, dtype=torch.float32)
    cuda_p, cuda_y = probs.cuda(), labels.cuda()
    for f in (hist_ece, kde_ece):
        assert f(cuda_p, cuda_y, scope=scope) == pytest.approx(f(probs, labels, scope=scope), abs=1e-9)
    for f in (accuracy, nll, brier):
        assert f(cuda_p, cuda_y) == pytest.approx(f(probs, labels), abs=1e-9)
