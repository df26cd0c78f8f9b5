"""Every row against a named baseline row of the same setting and model: difference of means,
the t-test's p (paired over seeds where both rows are the same runs: a post-hoc recalibration against
the runs it recalibrates; else Welch's), Holm-corrected over the table, a verdict (better / worse /
cannot tell at alpha) and the smallest difference the seeds could detect at 80 % power
(docs/statistics.md).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from simlab.stats import (
    Summary,
    holm,
    min_detectable_difference,
    min_detectable_difference_paired,
    paired_test,
    summarise,
    welch_test,
)
from sweeps.results.method import Method
from sweeps.results.rows import COLUMNS, Row, seed_values

# Which way is better, per metric (for verdicts "better" / "worse").
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "best_epoch_accuracy": True,
    "nll": False,
    "brier": False,
    "ece_hist_prediction": False,
    "ece_hist_output": False,
    "ece_kde_prediction": False,
    "ece_kde_output": False,
    "ood_noise_confidence_mean": False,  # paper A §6.4: less confident on noise
    "ood_noise_confidence_median": False,
}


# ---------------------------------------------------------------------------------------------
# comparisons against a baseline
Verdict = Literal["better", "worse", "cannot tell", "n/a"]


@dataclass(frozen=True)
class Comparison:
    row: Row
    baseline: Row
    metric: str
    diff: float  # row mean - baseline mean
    p: float  # two-sided, of `test`
    p_holm: float
    verdict: str
    detectable: float  # smallest |diff| the seeds detect with 80 % power (the same test, alpha)
    test: str = "welch"  # "paired" (over seeds, the same runs on both sides) or "welch"


def paired_differences(row_a: Row, metric_a: str, row_b: Row, metric_b: str) -> Summary | None:
    """The summary of the per-seed differences ``a - b`` over the seeds both rows have; None when a
    row carries no runs (read from a CSV: no per-seed values)."""
    if not row_a.runs or not row_b.runs:
        return None
    va, vb = seed_values(row_a, metric_a), seed_values(row_b, metric_b)
    return summarise(va[seed] - vb[seed] for seed in sorted(set(va) & set(vb)))


def _same_runs(a: Row, b: Row) -> bool:
    """Both rows are the same runs (a post-hoc row and the one-hot row it recalibrates)."""
    return bool(a.runs) and sorted(r.run_id for r in a.runs) == sorted(r.run_id for r in b.runs)


def compare(
    rows: Sequence[Row],
    baseline: Method,
    *,
    metrics: Sequence[str] = tuple(m for m, _ in COLUMNS),
    alpha: float = 0.05,
) -> list[Comparison]:
    """Every row against the ``baseline`` row of its setting and model, for each metric: the paired
    t-test over seeds where both rows are the same runs (`paired_differences`; the report's own runs
    only, a CSV has no per-seed values), else Welch's; Holm-corrected over every comparison of the
    table (one family), a verdict at ``alpha`` (``better`` / ``worse`` by the metric's direction, else
    ``cannot tell``; ``n/a`` with fewer than 2 seeds or pairs) and the detectable difference at 80 %
    power of the same test."""
    base = {(r.setting, r.model): r for r in rows if r.method == baseline}
    pending = []
    for row in rows:
        ref = base.get((row.setting, row.model))
        if ref is None or row is ref:
            continue
        for metric in metrics:
            a, b = row.cells.get(metric), ref.cells.get(metric)
            if a is None or b is None or a.n == 0 or b.n == 0:
                continue
            diffs = paired_differences(row, metric, ref, metric) if _same_runs(row, ref) else None
            if diffs is not None:
                test, detectable = paired_test(diffs), min_detectable_difference_paired(diffs, alpha=alpha)
            else:
                test, detectable = welch_test(a, b), min_detectable_difference(a, b, alpha=alpha)
            pending.append((row, ref, metric, test, detectable, "paired" if diffs is not None else "welch"))
    adjusted = holm([t.p for _, _, _, t, _, _ in pending])
    out = []
    for (row, ref, metric, test, detectable, kind), p_holm in zip(pending, adjusted, strict=True):
        if math.isnan(test.p):
            verdict = "n/a"
        elif p_holm < alpha:
            # an OOD confidence (e.g. ood_tinyimagenet_confidence_mean): lower is better, as on noise
            higher = HIGHER_IS_BETTER.get(metric, not metric.startswith("ood_"))
            verdict = "better" if (test.diff > 0) == higher else "worse"
        else:
            verdict = "cannot tell"
        out.append(
            Comparison(
                row,
                ref,
                metric,
                test.diff,
                test.p,
                p_holm,
                verdict,
                detectable,
                kind,
            )
        )
    return out


def comparisons_csv(comparisons: Sequence[Comparison]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "setting",
            "model",
            "method",
            "baseline",
            "metric",
            "diff",
            "test",
            "p",
            "p_holm",
            "verdict",
            "detectable",
        ]
    )
    for c in comparisons:
        w.writerow(
            [c.row.setting_text, c.row.model, str(c.row.method), str(c.baseline.method), c.metric]
            + [repr(c.diff), c.test, repr(c.p), repr(c.p_holm), c.verdict, repr(c.detectable)]
        )
    return buf.getvalue()
