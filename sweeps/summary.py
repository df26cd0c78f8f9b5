"""A finished (or interrupted) sweep in numbers and words: Tune's results -> one row per trial, the best
trial or the Pareto front, and the text the CLI prints (tables through `sweeps.results.markdown_table`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.commands import UI_PORT, mlflow_view_lines, report_command, resume_command
from sweeps.results import markdown_table
from sweeps.reuse import REUSED_FLAG
from sweeps.search import trial_states
from sweeps.space import method_name
from sweeps.spec import SweepSpec
from sweeps.stops import scheduler_stops
from sweeps.trainable import FAILED_FLAG, FAILED_REASON, FINAL_FLAG

TABLE_METRICS: tuple[str, ...] = (
    "accuracy",
    "ece_hist_prediction",
    "confidence_gap",  # its sign: > 0 over-confident, < 0 under-confident (|gap| <= Hist P)
    "ece_hist_output",
    "ece_kde_prediction",
    "ece_kde_output",
    "nll",
    "ts_ece_hist_prediction",
)


@dataclass
class SweepSummary:
    name: str
    sweep_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per trial
    best: list[dict[str, Any]] = field(default_factory=list)  # best trial, or the Pareto front
    num_finished: int = 0
    num_errored: int = 0
    num_interrupted: int = 0  # trials stopped by Ctrl-C (resumable), told apart from scheduler stops
    num_reused: int = 0  # finished trials that adopted a finished run instead of training (`--reuse`)
    interrupted: bool = False
    matrix_stats: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0


def summarize(spec: SweepSpec, grid: Any, summary: SweepSummary) -> SweepSummary:
    """Fill `summary` from a Tune `ResultGrid`."""
    rows = []
    stopped_by_scheduler = scheduler_stops(spec.sweep_dir)  # ASHA's recorded STOP decisions
    states = trial_states(grid)  # Tune's own (TERMINATED / ERROR / ...); {}: inferred from the results
    for result in grid:
        metrics = dict(result.metrics or {})
        config = dict(result.config or {})
        error = result.error
        trial_id = metrics.get("trial_id") or Path(result.path).name
        state = states.get(trial_id, "TERMINATED" if metrics.get("done") else "UNKNOWN")
        if error is not None or metrics.get(FAILED_FLAG):
            status = "error"  # raised, or a non-retryable error the trainable reported as its end
            if error is None:
                error = metrics.get(FAILED_REASON) or "non-retryable error"
        elif metrics.get(FINAL_FLAG):
            status = "finished"
        elif state == "TERMINATED" and trial_id in stopped_by_scheduler:
            status = "stopped"  # stopped early by the scheduler (ASHA's recorded decision)
        elif summary.interrupted:
            status = "interrupted"  # Ctrl-C: Tune's saved state has it RUNNING, --resume continues it
        else:
            status = "unfinished"
        row = {
            "trial_id": trial_id,
            "status": status,
            "method": method_name(config, spec),
            "params": {k: v for k, v in config.items() if k in spec.space},
            "epochs_done": metrics.get("epoch"),
            "reused": bool(metrics.get(REUSED_FLAG)),  # adopted a finished run (`sweeps.reuse`)
            "time_total_s": metrics.get("time_total_s"),  # inside the trainable, as Tune measured it
            "error": None
            if error is None
            else error
            if isinstance(error, str)
            else f"{type(error).__name__}: {str(error).splitlines()[-1][:300]}",
        }
        for obj in spec.objectives:
            row[obj.metric] = metrics.get(obj.metric)
        for name in TABLE_METRICS:
            row[name] = metrics.get(name)
        rows.append(row)
    summary.rows = rows
    summary.num_finished = sum(r["status"] == "finished" for r in rows)
    summary.num_errored = sum(r["status"] == "error" for r in rows)
    summary.num_interrupted = sum(r["status"] == "interrupted" for r in rows)
    summary.num_reused = sum(r["status"] == "finished" and r["reused"] for r in rows)
    summary.interrupted = (
        summary.interrupted
        or any(r["status"] in ("unfinished", "interrupted") for r in rows)
        or len(rows) < spec.num_samples
    )
    done = [r for r in rows if r["status"] == "finished" and finite_objectives(spec, r)]
    if spec.multi_objective:
        summary.best = pareto_front(done, spec)
    elif done:
        obj = spec.objectives[0]
        pick = max if obj.mode == "max" else min
        summary.best = [pick(done, key=lambda r: r[obj.metric])]
    return summary


def finite_objectives(spec: SweepSpec, row: Mapping[str, Any]) -> bool:
    return all(
        isinstance(row.get(o.metric), (int, float)) and math.isfinite(row[o.metric]) for o in spec.objectives
    )


def pareto_front(rows: Sequence[Mapping[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """Rows not dominated by another (at least as good in every objective, better in one)."""

    def signed(row: Mapping[str, Any]) -> tuple[float, ...]:  # larger is better
        return tuple(row[o.metric] if o.mode == "max" else -row[o.metric] for o in spec.objectives)

    front = []
    for row in rows:
        a = signed(row)
        dominated = any(
            all(x >= y for x, y in zip(signed(other), a, strict=True)) and signed(other) != a
            for other in rows
            if other is not row
        )
        if not dominated:
            front.append(dict(row))
    return front


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def summary_table(spec: SweepSpec, rows: Sequence[Mapping[str, Any]], *, markdown: bool = True) -> str:
    """A comparison table of trials (sorted by the first objective), Markdown or CSV."""
    obj = spec.objectives[0]
    cols = ["trial_id", "status", "method", "params", *[o.metric for o in spec.objectives]]
    # Metrics no trial reported (e.g. ts_* without post-hoc recalibration) are left out.
    cols += [m for m in TABLE_METRICS if m not in cols and any(r.get(m) is not None for r in rows)]

    def sort_key(r: Mapping[str, Any]) -> tuple[int, float]:
        v = r.get(obj.metric)
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        return (0 if ok else 1, (-v if obj.mode == "max" else v) if ok else 0.0)

    ordered = sorted(rows, key=sort_key)
    cell = {
        "params": lambda r: ", ".join(
            f"{k}={_fmt(v)}" for k, v in sorted(r["params"].items()) if k != "label"
        )
    }
    if not markdown:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(cols)
        for r in ordered:
            writer.writerow([json.dumps(r[c]) if c == "params" else r.get(c) for c in cols])
        return buf.getvalue()
    return "\n".join(
        markdown_table(cols, ([cell.get(c, lambda r, c=c: _fmt(r.get(c)))(r) for c in cols] for r in ordered))
    )


def resume_hint(spec: SweepSpec) -> str:
    """The line that tells the user how to continue an interrupted sweep (runnable as printed)."""
    return f"interrupted: continue with  {resume_command(spec)}"


def format_summary(spec: SweepSpec, summary: SweepSummary, *, ui_port: int = UI_PORT) -> str:
    """What the CLI prints at the end: best trial / Pareto front, the table, the MLflow UI command."""
    out = [
        f"sweep {spec.name}: {summary.num_finished} finished"
        + (f" ({summary.num_reused} reused, not trained again)" if summary.num_reused else "")
        + f", {summary.num_errored} errored, "
        + (f"{summary.num_interrupted} interrupted, " if summary.num_interrupted else "")
        + f"{len(summary.rows)} trials in {summary.wall_s:.0f} s "
        f"(similarity matrices: {summary.matrix_stats.get('computed', 0)} computed, "
        f"{summary.matrix_stats.get('loaded', 0)} loaded)"
    ]
    if summary.interrupted:
        out.append(resume_hint(spec))
    objectives = ", ".join(map(str, spec.objectives))
    if spec.multi_objective:
        out.append(f"\nPareto front ({objectives}): {len(summary.best)} trial(s)")
        out.append(summary_table(spec, summary.best))
    elif summary.best:
        b = summary.best[0]
        out.append(
            f"\nbest trial ({objectives}): {b['trial_id']}  {b['method']}  "
            + "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(b["params"].items()) if k != "label")
        )
        shown = [o.metric for o in spec.objectives] + [m for m in TABLE_METRICS if b.get(m) is not None]
        out.append("  " + "  ".join(f"{m}={_fmt(b.get(m))}" for m in shown))
    out.append("\nall trials (validation selects; test metrics reported):")
    out.append(summary_table(spec, summary.rows))
    out.append("")
    out.extend(
        mlflow_view_lines(
            summary.tracking_uri,
            summary.experiment_id,
            spec.name,
            port=ui_port,
            order_by=spec.objectives[0].metric,
            ascending=spec.objectives[0].mode == "min",
        )
    )
    out.append(f"paper-style table:  {report_command(spec, summary.tracking_uri)}")
    return "\n".join(out)
