"""Paper A §6.3 (Fig. 2): each table metric against the one numeric ``--group-by`` param of an ablation.

A report grouped by a single param whose values are numbers (``--group-by alpha``, ``--group-by
beta``) is an ablation: `ablation_param` finds that param, `ablation_series` turns the rows into one
series per (model, method) over its values, and `ablation_figure` draws one panel per metric: each
series' mean over seeds with its 95 % Student-t interval (`simlab.stats.t_interval`) and the seeds
themselves as dots. A method that does not use the param (one-hot against α, uniform LS against β:
its setting reads ``-``) is drawn as a dashed reference line with its interval as a band, or named
at the panel's edge when it lies far outside the lines. Post-hoc rows (TS, ETS, Dir-ODIR) are left
out: they recalibrate the one-hot runs, and are not points of what the ablation varies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simlab._io import atomic_path
from simlab.stats import Summary, t_interval
from sweeps.results.method import Method
from sweeps.results.rows import COLUMNS, Row, seed_values

__all__ = ["Point", "Series", "ablation_figure", "ablation_param", "ablation_series", "build_ablation_figure"]

# How the param is named on the x axis (the paper's symbols); others by their name.
_SYMBOLS = {"alpha": "α", "beta": "β"}
NOT_USED = "-"  # a setting's value where the method has no such param (`Run.setting`)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Point:
    """One row of the series: the param's value ``x`` (nan for a reference), the metric's summary over
    seeds and the seeds' own values (empty for rows re-read from a CSV)."""

    x: float
    cell: Summary
    seeds: tuple[float, ...] = ()


@dataclass(frozen=True)
class Series:
    model: str
    method: Method
    points: tuple[Point, ...]  # in increasing x; one point with x = nan for a reference

    @property
    def reference(self) -> bool:
        return len(self.points) == 1 and math.isnan(self.points[0].x)


def ablation_param(rows: Sequence[Row]) -> str | None:
    """The rows' one group-by param when every value of it is a number or ``-`` and at least two
    numbers differ; None otherwise (no grouping, several params, or a categorical one)."""
    names = {k for r in rows for k, _ in r.setting}
    if len(names) != 1:
        return None
    values = {v for r in rows for _, v in r.setting if v != NOT_USED}
    numbers = {_number(v) for v in values}
    if None in numbers or len(numbers) < 2:
        return None
    return next(iter(names))


def ablation_series(rows: Sequence[Row], param: str, metric: str) -> list[Series]:
    """Per (model, method) in the rows' order: its points over ``param`` (rows without a value of it
    give a one-point reference series); post-hoc rows are left out."""
    grouped: dict[tuple[str, Method], list[Point]] = {}
    for row in rows:
        if row.method.posthoc:
            continue
        value = dict(row.setting).get(param, NOT_USED)
        x = math.nan if value == NOT_USED else _number(value)
        if x is None:
            raise ValueError(f"ablation over {param!r}: {row.method.display} has a non-numeric {value!r}")
        cell = row.cells.get(metric, Summary(math.nan, math.nan, 0))
        seeds = tuple(seed_values(row, metric).values())
        grouped.setdefault((row.model, row.method), []).append(Point(x, cell, seeds))
    out = []
    for (model, method), points in grouped.items():
        refs = [p for p in points if math.isnan(p.x)]
        if refs and len(points) > 1:
            raise ValueError(
                f"ablation over {param!r}: {method.display} has rows both with and without a value of it"
            )
        out.append(Series(model, method, tuple(sorted(points, key=lambda p: p.x))))
    return out


def build_ablation_figure(
    rows: Sequence[Row],
    param: str,
    *,
    metrics: Sequence[tuple[str, str]] = COLUMNS,
    confidence: float = 0.95,
):
    """The matplotlib Figure (one panel per ``(metric, label)``; values in %), or None when no row has
    any of the metrics."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(m, label, ablation_series(rows, param, m)) for m, label in metrics]
    panels = [(m, label, s) for m, label, s in panels if any(p.cell.n for x in s for p in x.points)]
    if not panels:
        return None
    models = {s.model for _, _, series in panels for s in series}
    xs = sorted({p.x for _, _, series in panels for s in series for p in s.points if not math.isnan(p.x)})
    if not xs:  # only reference rows (or post-hoc ones) carry data
        return None
    log_x = xs[0] > 0 and xs[-1] / xs[0] >= 4
    fig = Figure(figsize=(4.0 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    symbol = _SYMBOLS.get(param, param)
    colors = {}
    for i, (_, label, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        refs, values = [], []  # values: every mean, bound and seed drawn for the series
        for s in series:
            name = s.method.display + (f" ({s.model})" if len(models) > 1 else "")
            color = colors.setdefault(name, f"C{len(colors) % 10}")
            if s.reference:
                p = s.points[0]
                if p.cell.n:
                    refs.append((name, color, p.cell))
                continue
            shown = [p for p in s.points if p.cell.n]
            if not shown:
                continue
            x = [p.x for p in shown]
            y = [100 * p.cell.mean for p in shown]
            low, high = [], []
            for p in shown:  # no bar where a single seed gives no interval
                lo, hi = t_interval(p.cell, confidence)
                low.append(100 * (p.cell.mean - lo) if math.isfinite(lo) else 0.0)
                high.append(100 * (hi - p.cell.mean) if math.isfinite(hi) else 0.0)
            err = [low, high]
            values += [v + d for v, lo_, hi_ in zip(y, low, high, strict=True) for d in (-lo_, 0.0, hi_)]
            ax.errorbar(x, y, yerr=err, color=color, marker="o", capsize=3, linewidth=1.5, label=name)
            dots_x = [p.x for p in shown for _ in p.seeds]
            if dots_x:
                dots_y = [100 * v for p in shown for v in p.seeds]
                ax.scatter(dots_x, dots_y, color=color, s=10, alpha=0.45, linewidths=0)
                values += dots_y
        _draw_references(ax, refs, values, symbol, confidence)
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.set_xlabel(symbol)
        ax.set_title(f"{label} (%)")
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)  # off the panels' own notes
    fig.suptitle(
        f"Over {symbol}: mean over seeds, {100 * confidence:g} % t interval; dots: seeds", fontsize=10
    )
    return fig


def _draw_references(ax, refs, values: list[float], symbol: str, confidence: float) -> None:
    """Each reference (name, color, cell) as a dashed line with its interval as a band. The y axis
    fits the series; a reference more than half the series' range beyond it would flatten them, so it
    is named at the panel's edge with its value instead of widening the axis."""
    low, high = (min(values), max(values)) if values else (math.nan, math.nan)
    width = max(high - low, 1e-6) if values else math.nan
    shown_lo, shown_hi = low, high
    edge = {True: 0.97, False: 0.03}  # above / below: where an off-scale reference is named
    for name, color, cell in refs:
        mean = 100 * cell.mean
        ax.axhline(mean, color=color, linestyle="--", linewidth=1.2, label=f"{name} (no {symbol})")
        lo, hi = t_interval(cell, confidence)
        if math.isfinite(lo):
            ax.axhspan(100 * lo, 100 * hi, color=color, alpha=0.12, linewidth=0)
        if values and not low - width / 2 <= mean <= high + width / 2:
            above = mean > high
            ax.text(
                0.02,
                edge[above],
                f"{name}: {mean:.2f} {'↑' if above else '↓'} (off scale)",
                transform=ax.transAxes,
                color=color,
                fontsize=7,
                va="top" if above else "bottom",
            )
            edge[above] += -0.06 if above else 0.06
        elif values:
            shown_lo, shown_hi = min(shown_lo, mean), max(shown_hi, mean)
    if values:
        pad = 0.12 * max(shown_hi - shown_lo, 1e-6)
        ax.set_ylim(shown_lo - pad, shown_hi + pad)


def ablation_figure(rows: Sequence[Row], param: str, path: Path, **kwargs) -> Path | None:
    """`build_ablation_figure` written to ``path`` (PNG, atomically); None when there is nothing to draw."""
    fig = build_ablation_figure(rows, param, **kwargs)
    if fig is None:
        return None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")  # the temp name has no .png to infer it from
    return path
