"""simlab.stats against independent references: numpy/scipy.stats on known inputs (summaries, t
intervals, Welch's test), Holm against the step-down procedure written out and a hand-computed case,
the detectable difference against a Monte-Carlo power simulation; and the vectorised bootstrap
(simlab.calibration.bootstrap) against simlab.calibration's metrics computed on each explicitly
resampled test set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from simlab import calibration as cal
from simlab.calibration import BOOTSTRAP_METRICS, bootstrap_metrics
from simlab.stats import (
    Summary,
    holm,
    min_detectable_difference,
    min_detectable_difference_paired,
    paired_test,
    summarise,
    t_interval,
    welch_test,
)

SAMPLES = [
    ([0.4276, 0.4410, 0.4140], [0.4276, 0.4540, 0.4012]),
    ([0.3797, 0.3671, 0.3923], [0.4113, 0.4178, 0.4048]),
    ([1.0, 2.0, 3.0, 4.0, 5.5], [2.0, 2.5, 7.0]),
    ([0.1, 0.12], [0.3, 0.31, 0.29, 0.35]),
]


def test_summarise_matches_numpy_and_drops_missing():
    vals = [0.2, 0.25, None, float("nan"), 0.31, float("inf")]
    s = summarise(vals)
    x = np.array([0.2, 0.25, 0.31])
    assert s.n == 3
    assert s.mean == pytest.approx(x.mean(), rel=1e-15)
    assert s.std == pytest.approx(x.std(ddof=1), rel=1e-14)
    one = summarise([0.5])
    assert (one.mean, one.n) == (0.5, 1) and math.isnan(one.std)
    assert summarise([]).n == 0


@pytest.mark.parametrize("values", [v for pair in SAMPLES for v in pair])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_t_interval_matches_scipy(values, confidence):
    x = np.array(values)
    want = scipy.stats.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert t_interval(summarise(values), confidence) == pytest.approx(want, rel=1e-12)


def test_t_interval_undefined_for_one_value():
    assert all(math.isnan(v) for v in t_interval(summarise([0.3])))
    with pytest.raises(ValueError, match="confidence"):
        t_interval(summarise([0.3, 0.4]), 95)


@pytest.mark.parametrize(("a", "b"), SAMPLES)
def test_welch_matches_scipy_ttest_ind(a, b):
    got = welch_test(summarise(a), summarise(b))
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert got.t == pytest.approx(ref.statistic, rel=1e-12)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert got.df == pytest.approx(ref.df, rel=1e-12)
    assert got.diff == pytest.approx(np.mean(a) - np.mean(b), rel=1e-12)


def test_welch_undefined_cases_are_nan():
    assert math.isnan(welch_test(summarise([0.1]), summarise([0.2, 0.3])).p)
    assert math.isnan(welch_test(summarise([0.1, 0.1]), summarise([0.2, 0.2])).p)  # both stds 0


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone max 0.06
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # nan is not a hypothesis: it stays nan and does not raise m
    got = holm([0.01, float("nan"), 0.04])
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    with pytest.raises(ValueError, match="pvalues"):
        holm([1.2])


def _holm_step_down(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as stated: reject sorted H(1), H(2), ... while p(i) <= alpha / (m - i + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for rank, i in enumerate(order):
        if p[i] <= alpha / (len(p) - rank):
            rejected.add(i)
        else:
            break
    return rejected


def test_holm_agrees_with_step_down_procedure_at_every_alpha():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = list(rng.uniform(0, 0.2, size=rng.integers(1, 9)) ** 2)
        adj = holm(p)
        for alpha in (0.001, 0.01, 0.05, 0.1):
            assert {i for i, a in enumerate(adj) if a <= alpha} == _holm_step_down(p, alpha)


def test_min_detectable_difference_n3_is_about_three_sigma():
    s = Summary(0.0, 1.0, 3)
    mdd = min_detectable_difference(s, s)
    # equal n and std: Welch df = 2n - 2 = 4; solve the noncentral-t power equation independently
    df, crit = 4, scipy.stats.t.ppf(0.975, 4)
    se = math.sqrt(2 / 3)
    power = scipy.stats.nct.sf(crit, df, mdd / se) + scipy.stats.nct.cdf(-crit, df, mdd / se)
    assert power == pytest.approx(0.8, abs=1e-9)
    assert 3.0 < mdd < 3.15  # the "about 3 sigma" of issue 12
    # scale-equivariant
    assert min_detectable_difference(Summary(5.0, 0.01, 3), Summary(1.0, 0.01, 3)) == pytest.approx(
        0.01 * mdd, rel=1e-9
    )
    assert math.isnan(min_detectable_difference(Summary(0.0, 1.0, 1), s))


def test_min_detectable_difference_has_80_percent_power_in_simulation():
    # Welch's test on normal samples whose true difference is the computed MDD rejects ~80 % of the time.
    a, b = Summary(0.0, 1.0, 10), Summary(0.0, 2.0, 12)
    mdd = min_detectable_difference(a, b)
    rng = np.random.default_rng(0)
    sims = 20000
    x = rng.normal(mdd, 1.0, size=(sims, 10))
    y = rng.normal(0.0, 2.0, size=(sims, 12))
    p = scipy.stats.ttest_ind(x, y, axis=1, equal_var=False).pvalue
    rate = float((p < 0.05).mean())
    assert rate == pytest.approx(0.8, abs=0.015)  # binomial sd at 20k sims is 0.003


@pytest.mark.parametrize(("a", "b"), [(x, y[: len(x)]) for x, y in SAMPLES if len(y) >= len(x)])
def test_paired_test_matches_scipy_ttest_rel(a, b):
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    got = paired_test(summarise(d))
    ref = scipy.stats.ttest_rel(a, b)
    assert got.t == pytest.approx(ref.statistic, rel=1e-12)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert got.df == len(a) - 1
    assert math.isnan(paired_test(summarise([0.2])).p)
    assert math.isnan(paired_test(Summary(0.2, 0.0, 3)).p)  # all differences equal


def test_paired_detectable_difference_has_80_percent_power_in_simulation():
    # The paired test on pairs whose differences are normal with the computed MDD as mean rejects ~80 %.
    d = Summary(0.0, 0.5, 5)
    mdd = min_detectable_difference_paired(d)
    rng = np.random.default_rng(1)
    sims = 20000
    base = rng.normal(0.0, 3.0, size=(sims, 5))  # a shared per-seed effect the pairing removes
    x = base + rng.normal(mdd, 0.5, size=(sims, 5))
    p = scipy.stats.ttest_rel(x, base, axis=1).pvalue
    assert float((p < 0.05).mean()) == pytest.approx(0.8, abs=0.015)
    assert math.isnan(min_detectable_difference_paired(Summary(0.3, 0.1, 1)))


# --- bootstrap --------------------------------------------------------------------------------------
def _data(n: int, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    labels = torch.where(
        torch.rand(n, generator=g) < 0.6, logits.argmax(1), torch.randint(0, k, (n,), generator=g)
    )
    return logits.softmax(1), labels


def _metric(name: str, probs, labels) -> float:
    if name == "accuracy":
        return cal.accuracy(probs, labels)
    if name == "confidence_gap":  # brute force: mean top confidence - mean correctness
        p, y = probs.numpy(), labels.numpy()
        return float(np.mean(p.max(axis=1)) - np.mean(p.argmax(axis=1) == y))
    _, kind, scope = name.split("_")
    return cal.hist_ece(probs, labels, 15, scope) if kind == "hist" else cal.kde_ece(probs, labels, scope)


def test_bootstrap_equals_metrics_of_explicit_resamples():
    probs, labels = _data(400, 5, 0)
    r = 24
    got = bootstrap_metrics(probs, labels, n_resamples=r, generator=torch.Generator().manual_seed(7), chunk=r)
    # the same draws, made explicit: resample r draws N indices with replacement
    idx = torch.randint(0, 400, (r, 400), generator=torch.Generator().manual_seed(7))
    for name in BOOTSTRAP_METRICS:
        values = torch.tensor([_metric(name, probs[i], labels[i]) for i in idx], dtype=torch.float64)
        low, high = torch.quantile(values, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        assert got[name].low == pytest.approx(low, abs=1e-12), name
        assert got[name].high == pytest.approx(high, abs=1e-12), name
        assert got[name].estimate == pytest.approx(_metric(name, probs, labels), abs=1e-15), name
        assert got[name].n_resamples == r


def test_bootstrap_is_seeded():
    probs, labels = _data(200, 4, 1)
    a = bootstrap_metrics(probs, labels, n_resamples=40, generator=torch.Generator().manual_seed(3), chunk=40)
    b = bootstrap_metrics(probs, labels, n_resamples=40, generator=torch.Generator().manual_seed(3), chunk=40)
    assert a == b


def test_bootstrap_accuracy_interval_has_binomial_width():
    # known truth: the bootstrap sd of a mean of N Bernoulli(a) outcomes is sqrt(a (1 - a) / N)
    probs, labels = _data(1000, 4, 2)
    got = bootstrap_metrics(probs, labels, n_resamples=300, generator=torch.Generator().manual_seed(0))
    acc = got["accuracy"].estimate
    width = got["accuracy"].high - got["accuracy"].low
    assert width == pytest.approx(2 * 1.96 * math.sqrt(acc * (1 - acc) / 1000), rel=0.2)
    assert got["accuracy"].low <= acc <= got["accuracy"].high
    # (an ECE's percentile interval need not contain its estimate: ECE is biased upward under resampling)
    for name in BOOTSTRAP_METRICS:
        assert got[name].low <= got[name].high, name


def test_bootstrap_bad_input():
    probs, labels = _data(10, 3, 0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_metrics(probs, labels, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_metrics(probs, labels, confidence=1.5)
    with pytest.raises(TypeError, match="generator"):
        bootstrap_metrics(probs, labels, generator=0)
    with pytest.raises(ValueError, match="labels"):
        bootstrap_metrics(probs, labels[:5])
