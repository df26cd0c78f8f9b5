"""Rendering: percent cells, p-values and markdown tables of rows and comparisons."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from simlab.stats import Summary, t_interval
from sweeps.results.compare import Comparison
from sweeps.results.method import Method
from sweeps.results.rows import BEST_EPOCH_COLUMN, COLUMNS, OOD_COLUMNS, REUSED_MARK, Row, ood_columns


# ---------------------------------------------------------------------------------------------
# rendering
def fmt_pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.2f}"


def format_cell(s: Summary, *, interval: bool = False, confidence: float = 0.95) -> str:
    """``mean ± std (n)`` in percent; ``n = 1`` the value alone; ``[lo, hi]`` t interval on request."""
    if s.n == 0:
        return "-"
    if s.n == 1:
        return fmt_pct(s.mean)
    text = f"{fmt_pct(s.mean)} ± {fmt_pct(s.std)} ({s.n})"
    if interval:
        lo, hi = t_interval(s, confidence)
        text += f" [{fmt_pct(lo)}, {fmt_pct(hi)}]"
    return text


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def fmt_points(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:+.2f}"


def markdown_table(head: Sequence[str], lines: Iterable[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(c) + " |" for c in lines),
    ]


def _reused_note(rows: Sequence[Row]) -> str:
    """How many of the table's runs adopted a finished run (`--reuse`) instead of training."""
    reused = {run.run_id for row in rows for run in row.runs if run.reused}
    if not reused:
        return ""
    return (
        f" {len(reused)} of the runs adopted a finished run of the same configuration instead of training it "
        f"(`--reuse`; {REUSED_MARK} beside their trial ids where shown; each names its original in the "
        "MLflow tag `simlab.reused_from`)."
    )


def to_markdown(
    rows: Sequence[Row],
    *,
    title: str = "",
    show_config: bool = False,
    interval: bool = False,
    comparisons: Sequence[Comparison] = (),
    baseline: Method | None = None,
    alpha: float = 0.05,
) -> str:
    settings = any(row.setting for row in rows)
    best = any(r.cells.get(BEST_EPOCH_COLUMN[0], Summary(0, 0, 0)).n for r in rows)
    # A metric no row has (e.g. KDE ECE of a sweep that did not compute it) is left out, not shown as "-".
    cols = [
        (m, label)
        for m, label in (*COLUMNS, *([BEST_EPOCH_COLUMN] if best else []))
        if any(r.cells.get(m, Summary(0, 0, 0)).n for r in rows)
    ]
    head = [
        *(["Setting"] if settings else []),
        "Model",
        "Method",
        *(["Config"] if show_config else []),
        *(f"{label} (%)" for _, label in cols),
    ]
    lines = [f"## {title}", ""] if title else []
    lines += markdown_table(
        head,
        (
            [
                *([row.setting_text] if settings else []),
                row.model,
                row.method.display,
                *([row.config or "-"] if show_config else []),
                *(
                    format_cell(row.cells.get(m, Summary(math.nan, math.nan, 0)), interval=interval)
                    for m, _ in cols
                ),
            ]
            for row in rows
        ),
    )
    lines += [
        "",
        "Test split, in %: mean ± sample std (number of seeds); a single seed shows its value alone"
        + ("; [95 % Student-t interval of the mean over seeds]" if interval else "")
        + ". Configuration per method chosen on the validation split; TS/ETS/Dir-ODIR are post-hoc on the "
        "one-hot runs."
        + (
            " *Best epoch selected on the test set (paper B's protocol), not a held-out estimate."
            if best
            else ""
        )
        + _reused_note(rows),
    ]
    if comparisons:
        lines += ["", f"### Against {baseline.display if baseline else 'the baseline'}", ""]
        labels = dict((*COLUMNS, *OOD_COLUMNS, BEST_EPOCH_COLUMN))
        lines += markdown_table(
            [
                *(["Setting"] if settings else []),
                "Model",
                "Method",
                "Metric",
                "Δ (points)",
                "Test",
                "p",
                "p (Holm)",
                f"Verdict at {alpha:g}",
                "Detectable Δ (80 % power)",
            ],
            (
                [
                    *([c.row.setting_text] if settings else []),
                    c.row.model,
                    c.row.method.display,
                    labels.get(c.metric, c.metric),
                    fmt_points(c.diff),
                    "paired" if c.test == "paired" else "Welch",
                    fmt_p(c.p),
                    fmt_p(c.p_holm),
                    c.verdict,
                    fmt_pct(c.detectable),
                ]
                for c in comparisons
            ),
        )
        lines += [
            "",
            "Δ = method - baseline (mean over seeds, in points). Test: the paired t-test over seeds "
            "where both rows are the same runs (TS, ETS, Dir-ODIR recalibrate the one-hot runs), else "
            "Welch's t-test; p (Holm) is corrected over every comparison in this table. better / worse: "
            f"Holm p < {alpha:g} in the metric's better / worse direction (lower ECE, higher accuracy); "
            "cannot tell: not significant. Detectable Δ: the difference the test would find with 80 % "
            "power given these seeds' spread; a true difference smaller than it is likely to read "
            "'cannot tell'. See docs/statistics.md.",
        ]
    plain = [r for r in rows if not r.method.posthoc]
    ood_cols = ood_columns(plain)
    ood = [r for r in plain if any(r.cells.get(m, Summary(0, 0, 0)).n for m, _ in ood_cols)]
    if ood:
        # Old runs (uniform noise only) keep their section as it was.
        real = ood_cols != OOD_COLUMNS
        what = "out-of-distribution images" if real else "uniform-noise images"
        lines += ["", f"### Confidence on {what} (paper A §6.4)", ""]
        empty = Summary(math.nan, math.nan, 0)
        lines += markdown_table(
            [
                *(["Setting"] if settings else []),
                "Model",
                "Method",
                *(f"{label} (%)" for _, label in ood_cols),
            ],
            (
                [
                    *([r.setting_text] if settings else []),
                    r.model,
                    r.method.display,
                    *(format_cell(r.cells.get(m, empty), interval=interval) for m, _ in ood_cols),
                ]
                for r in ood
            ),
        )
        lines += ["", "Max-softmax confidence in %, mean ± sample std over seeds of each run's mean/median."]
        if real:
            lines[-1] += (
                " Noise: uniform-noise images; a dataset's columns: its test split resized to the training "
                "images (the run's ood_dataset)."
            )
    return "\n".join(lines) + "\n"
