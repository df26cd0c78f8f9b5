"""SPEC §6 metric names (and the confidence gap, beyond SPEC): what `simlab.train.fit` reports on the
test split (no prefix), the validation split (``val_``) and the recalibrated test predictions (``ts_``,
``ets_``, ``dir_``).

Torch-free, so the sweep spec checks its objectives (``val_<name>``) before torch loads;
`simlab.train` re-exports it as ``simlab.train.METRIC_NAMES``.
"""

from __future__ import annotations

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "nll",
    "brier",
    "ece_hist_prediction",
    "ece_hist_output",
    "ece_kde_prediction",
    "ece_kde_output",
    "confidence_gap",
)
# Diagnostics with a sign and no better direction: ``confidence_gap`` (mean top-label confidence -
# accuracy) is > 0 over-confident, < 0 under-confident, so minimising it rewards under-confidence and
# maximising it over-confidence. Logged like the others, never a search objective.
SIGNED_METRICS: tuple[str, ...] = ("confidence_gap",)
