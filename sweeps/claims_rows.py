"""Where a claim's numbers come from (`sweeps.claims`): a source's rows (its MLflow store, else its
report CSV), the row and summary of one side of a test (a paired test's per-seed differences:
`sweeps.results.paired_differences`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from simlab.stats import Summary
from sweeps.results import Row, build_rows, load_runs, read_csv

# `sweeps.claims` imports this module, so its types (Source, Side, ClaimTest) are annotated Any here.
logger = logging.getLogger("sweeps.claims")

__all__ = ["find_row", "load_source_rows", "norm_value", "row_summary"]


def norm_value(value: Any) -> str:
    """Setting values compare as numbers when they are numbers ("0.8" == 0.8, "1000" == 1000)."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def load_source_rows(source: Any) -> tuple[list[Row] | None, str]:
    """``(rows, origin)`` of a source: from its MLflow store when that exists, else its CSV; rows are
    None when neither is there. ``origin`` says which was read (for the claims table)."""
    if source.tracking_uri and source.experiment:
        uri = source.tracking_uri
        db = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
        if db is None or os.path.exists(db):
            try:
                _, runs = load_runs(
                    uri,
                    source.experiment,
                    stage=source.stage,
                    best_epoch_from="test_accuracy" if source.best_epoch else None,
                )
            except ValueError as err:
                logger.warning("source %s: %s", source.name, err)
            else:
                mode = source.mode or ("max" if source.select.endswith("accuracy") else "min")
                rows = build_rows(runs, select=source.select, mode=mode, group_by=source.group_by)
                stage = f", stage {source.stage}" if source.stage else ""
                return rows, f"MLflow {uri}, experiment {source.experiment}{stage} ({len(runs)} runs)"
    if source.csv and os.path.exists(source.csv):
        return read_csv(source.csv), f"{_relative(source.csv)} (no MLflow store found)"
    return None, "not available (no MLflow store, no CSV): its tests are 'no data'"


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def row_summary(row: Row | None, metric: str) -> Summary | None:
    """The summary over seeds of ``metric`` in ``row``; None when no row or no value."""
    if row is None:
        return None
    s = row.cells.get(metric)
    return s if s is not None and s.n > 0 else None


def find_row(rows: Sequence[Row], side: Any) -> Row | None:
    """The one row of ``side``'s method, model and setting (None: none; several: a ValueError)."""
    want = {k: norm_value(v) for k, v in side.setting}
    found = [
        r
        for r in rows
        if r.method == side.method
        and (side.model is None or r.model == side.model)
        and all(norm_value(dict(r.setting).get(k, "-")) == v for k, v in want.items())
    ]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(
            f"claims: {side.describe()} matches {len(found)} rows "
            f"({', '.join(r.setting_text + ' ' + r.model for r in found)}); give a setting or model"
        )
    return found[0]
