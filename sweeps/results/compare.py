"""Every row against a named baseline row of the same setting and model: difference of means,
Welch's p, Holm-corrected over the table, a verdict (better / worse / cannot tell at alpha) and the
smallest difference the seeds could detect at 80 % power (docs/statistics.md).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from simlab.stats import holm, min_detectable_difference, welch_test
from sweeps.results.method import Method
from sweeps.results.rows import COLUMNS, Row

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
    p: float  # Welch, two-sided
    p_holm: float
    verdict: str
    detectable: float  # smallest |diff| the seeds detect with 80 % power (Welch, alpha)


def compare(
    rows: Sequence[Row],
    baseline: Method,
    *,
    metrics: Sequence[str] = tuple(m for m, _ in COLUMNS),
    alpha: float = 0.05,
) -> list[Comparison]:
    """Every row against the ``baseline`` row of its setting and model, for each metric: Welch's t-test
    over seeds, Holm-corrected over every comparison of the table (one family), a verdict at
    ``alpha`` (``better`` / ``worse`` by the metric's direction, else ``cannot tell``; ``n/a`` with
    fewer than 2 seeds on a side) and the detectable difference at 80 % power."""
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
            pending.append((row, ref, metric, a, b, welch_test(a, b)))
    adjusted = holm([t.p for *_, t in pending])
    out = []
    for (row, ref, metric, a, b, test), p_holm in zip(pending, adjusted, strict=True):
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
                min_detectable_difference(a, b, alpha=alpha),
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
            "p_welch",
            "p_holm",
            "verdict",
            "detectable",
        ]
    )
    for c in comparisons:
        w.writerow(
            [c.row.setting_text, c.row.model, str(c.row.method), str(c.baseline.method), c.metric]
            + [repr(c.diff), repr(c.p), repr(c.p_holm), c.verdict, repr(c.detectable)]
        )
    return buf.getvalue()
