"""Statistics for comparing results: summaries over seeds, Welch tests, Holm, power.

Two sources of uncertainty, kept apart:

- **Between seeds** (what a table row averages over): `summarise` gives ``mean``, the sample std
  (``ddof = 1``) and ``n``; `t_interval` the Student-t interval of the mean; `welch_test` compares two
  rows (Welch's unequal-variance t-test, from the summaries alone, so a report can be recomputed from
  a CSV of means/stds/counts); `holm` corrects a table's p-values for multiplicity;
  `min_detectable_difference` is the smallest true difference the seeds would detect with 80 % power.
- **Within one run** (the finite test set): `simlab.calibration.bootstrap.bootstrap_metrics`, percentile
  intervals of the calibration metrics over resampled test samples (it lives beside the metrics it
  re-expresses, sharing their grid and kernel constants).

Pure functions of floats: no MLflow, no files. ``scipy.stats`` supplies the t and
noncentral-t distributions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Summary",
    "WelchResult",
    "check_level",
    "holm",
    "min_detectable_difference",
    "min_detectable_difference_paired",
    "paired_test",
    "summarise",
    "t_interval",
    "welch_test",
]


# --------------------------------------------------------------------------------------------------
# between seeds
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """``mean``, sample std (``ddof = 1``; nan when ``n < 2``) and count ``n`` of finite values."""

    mean: float
    std: float
    n: int

    @property
    def sem(self) -> float:
        """Standard error of the mean, ``std / sqrt(n)`` (nan when ``n < 2``)."""
        return self.std / math.sqrt(self.n) if self.n >= 2 else math.nan


def summarise(values: Iterable[float | None]) -> Summary:
    """Summary of the finite values (None, nan and inf are dropped: a missing metric is not a zero)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    return Summary(mean, std, n)


def check_level(name: str, value: float) -> float:
    """A confidence, significance or power level: a number strictly inside (0, 1)."""
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
    return float(value)


def t_interval(summary: Summary, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean: ``mean ± t_{(1+c)/2, n-1} std / sqrt(n)``; (nan, nan) if n < 2."""
    from scipy import stats

    confidence = check_level("confidence", confidence)
    if summary.n < 2 or not math.isfinite(summary.std):
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + confidence / 2, summary.n - 1) * summary.sem
    return (summary.mean - half, summary.mean + half)


@dataclass(frozen=True)
class WelchResult:
    """``a - b``: difference of means, its standard error, Welch's t, its degrees of freedom and the
    two-sided p-value (nan where undefined: fewer than 2 values on a side, or both stds 0)."""

    diff: float
    se: float
    t: float
    df: float
    p: float


def _welch_se_df(a: Summary, b: Summary) -> tuple[float, float]:
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if not se > 0:
        return se, math.nan
    # Welch-Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return se, df


def welch_test(a: Summary, b: Summary) -> WelchResult:
    """Welch's two-sided t-test of ``mean_a == mean_b`` from summaries (as
    ``scipy.stats.ttest_ind(x, y, equal_var=False)`` on the raw values)."""
    from scipy import stats

    diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return WelchResult(diff, math.nan, math.nan, math.nan, math.nan)
    se, df = _welch_se_df(a, b)
    if not se > 0:
        return WelchResult(diff, se, math.nan, math.nan, math.nan)
    t = diff / se
    return WelchResult(diff, se, t, df, float(2 * stats.t.sf(abs(t), df)))


def paired_test(diffs: Summary) -> WelchResult:
    """The paired two-sided t-test of ``mean_a == mean_b`` from the summary of the per-pair
    differences ``a_i - b_i`` (as ``scipy.stats.ttest_rel(a, b)``): ``t = mean / (std / sqrt(n))`` with
    ``n - 1`` degrees of freedom; nan with fewer than 2 pairs or all differences equal."""
    from scipy import stats

    if diffs.n < 2:
        return WelchResult(diffs.mean, math.nan, math.nan, math.nan, math.nan)
    se = diffs.std / math.sqrt(diffs.n)
    if not se > 0:
        return WelchResult(diffs.mean, se, math.nan, math.nan, math.nan)
    t = diffs.mean / se
    df = float(diffs.n - 1)
    return WelchResult(diffs.mean, se, t, df, float(2 * stats.t.sf(abs(t), df)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; nan entries stay nan and do not count.

    With the m finite p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``
    (Holm 1979); rejecting where ``p_adj <= alpha`` controls the family-wise error rate at alpha.
    """
    finite = [(p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    for p, _ in finite:
        if not 0 <= p <= 1:
            raise ValueError(f"pvalues: expected values in [0, 1] (or nan), got {p!r}")
    m = len(finite)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _welch_power(delta: float, se: float, df: float, alpha: float) -> float:
    """Power of the two-sided level-alpha t-test with ``df`` degrees of freedom when the true
    difference is ``delta`` and the standard error ``se``: noncentral t with ncp = delta / se."""
    from scipy import stats

    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = delta / se
    # lower tail P(T < -crit | ncp) = P(T > crit | -ncp): scipy's nct.cdf far in the tail returns nan
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.sf(crit, df, -ncp))


def min_detectable_difference(a: Summary, b: Summary, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true ``|mean_a - mean_b|`` that Welch's two-sided level-``alpha`` test would detect
    with probability ``power``, taking the observed stds as the true ones.

    With ``se = sqrt(s_a^2/n_a + s_b^2/n_b)`` and the Welch-Satterthwaite ``df``, it solves
    ``P(|T| > t_{1-alpha/2, df}) = power`` for ``T ~ noncentral t(df, delta / se)``. For equal n and
    std this is the textbook two-sample t-test power: with n = 3 seeds a side, about 3.1 sigma
    (``≈ (t_{0.975,4} + t_{0.8,4}) sqrt(2/3) sigma``). nan when either side has fewer than 2 values
    or both stds are 0.
    """
    alpha = check_level("alpha", alpha)
    power = check_level("power", power)
    if a.n < 2 or b.n < 2:
        return math.nan
    se, df = _welch_se_df(a, b)
    return _detectable(se, df, alpha, power)


def min_detectable_difference_paired(diffs: Summary, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """`min_detectable_difference` for the paired t-test (`paired_test`): the same noncentral-t power
    with ``se = std(a_i - b_i) / sqrt(n)`` and ``n - 1`` degrees of freedom, taking the observed std of
    the differences as the true one. nan with fewer than 2 pairs or all differences equal."""
    alpha = check_level("alpha", alpha)
    power = check_level("power", power)
    if diffs.n < 2:
        return math.nan
    return _detectable(diffs.std / math.sqrt(diffs.n), float(diffs.n - 1), alpha, power)


def _detectable(se: float, df: float, alpha: float, power: float) -> float:
    from scipy import optimize

    if not se > 0:
        return math.nan
    if power <= alpha:  # the test already rejects this often under the null
        return 0.0
    hi = se
    while _welch_power(hi, se, df, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: _welch_power(d, se, df, alpha) - power, 0.0, hi, xtol=1e-12 * se))
