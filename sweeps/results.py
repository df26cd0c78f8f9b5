"""Results of sweeps: tables with statistics, comparisons against a baseline, and claims checked by code.

- `Method`: a table row's label method as a value (``onehot``, ``similarity:we``,
  ``confidence:pairs+log_projection``, ``onehot/ts`` for a post-hoc recalibration of the one-hot runs);
  `Method.parse` / `str` round-trip, `Method.display` is the paper's name (``WE``, ``LP (conf pairs)``).
- `load_runs` (MLflow) -> `build_rows`: per (setting, model, method) the configuration chosen on the
  validation split, its seeds aggregated into `simlab.stats.Summary` cells; `read_csv` rebuilds the
  same rows from a report's CSV (means, stds, counts), so a report can be re-rendered without the store.
- `compare`: every row against a named baseline row of the same setting and model: difference of
  means, Welch's p, Holm-corrected over the table, a verdict (better / worse / cannot tell at alpha)
  and the smallest difference the seeds could detect at 80 % power.
- Claims (`load_claims`, `evaluate_claims`): a paper's claims as data (YAML), each a list of tests
  (metric, method vs baseline, direction, setting, source) evaluated into supported / contradicted /
  cannot tell / no data; Holm over all tests of a file.
- `bootstrap_rows`: per run, bootstrap intervals over the test samples of its ``test_probs.npz``.

The CLI is `main` (``scripts/report.py`` calls it). MLflow and matplotlib are imported lazily.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simlab.calibration import BOOTSTRAP_METRICS
from simlab.stats import (
    Summary,
    holm,
    min_detectable_difference,
    summarise,
    t_interval,
    welch_test,
)

logger = logging.getLogger(__name__)

COLUMNS: tuple[tuple[str, str], ...] = (
    ("ece_hist_prediction", "Hist P"),
    ("ece_hist_output", "Hist O"),
    ("ece_kde_prediction", "KDE P"),
    ("ece_kde_output", "KDE O"),
    ("accuracy", "Acc"),
)
# Paper A §6.4: the mean max-softmax confidence on uniform-noise images (train.fit's ood_samples).
OOD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ood_noise_confidence_mean", "Noise conf mean"),
    ("ood_noise_confidence_median", "Noise conf median"),
)
# Paper B's protocol: the best epoch's test accuracy (selected on test), from the metric history.
BEST_EPOCH_COLUMN: tuple[str, str] = ("best_epoch_accuracy", "Acc best epoch*")
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
POST_HOC: dict[str, str] = {"ts": "TS", "ets": "ETS", "dir": "Dir-ODIR"}
# Paper A's row order; anything else follows alphabetically.
METHOD_ORDER: tuple[str, ...] = (
    "One-hot",
    "TS",
    "ETS",
    "Dir-ODIR",
    "Uniform",
    "Mixup",
    "L1",
    "L2",
    "AE",
    "WE",
    "WordNet",
)
LABEL_NAMES: dict[str, str] = {"onehot": "One-hot", "uniform": "Uniform", "mixup": "Mixup"}
SOURCE_NAMES: dict[str, str] = {"l1": "L1", "l2": "L2", "ae": "AE", "we": "WE", "wordnet": "WordNet"}
# Paper B's loss names (Table 1): a trial's `loss` param is part of its method unless it is plain CE.
LOSS_NAMES: dict[str, str] = {"ce": "CE", "projection": "P", "log_projection": "LP", "l1": "L1", "mse": "MSE"}
# Params that do not define a configuration: the seed is what a row averages over.
NON_CONFIG_PARAMS = frozenset({"seed", "data_dir", "cache_dir", "device", "compile"})
SIMILARITY_METHODS: tuple[str, ...] = ("L1", "L2", "AE", "WE", "WordNet")
PAPER_OOD_METHODS: tuple[str, ...] = ("One-hot", "Uniform", "Mixup")


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Method:
    """A row's method: label method, its similarity/confidence source, the loss, a post-hoc recalibration.

    Text form (`parse` / `str`): ``label[:source][+loss][/posthoc]``, e.g. ``onehot``,
    ``similarity:we``, ``confidence:pairs+log_projection``, ``onehot/ts``. ``loss`` ``ce`` is left out.
    """

    label: str
    source: str | None = None
    loss: str = "ce"
    posthoc: str | None = None

    @classmethod
    def parse(cls, text: str) -> Method:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"method: expected text like 'similarity:we+ce/ts', got {text!r}")
        rest, _, posthoc = text.strip().partition("/")
        rest, _, loss = rest.partition("+")
        label, _, source = rest.partition(":")
        if not label or (posthoc and posthoc not in POST_HOC):
            raise ValueError(
                f"method: cannot read {text!r}; expected label[:source][+loss][/posthoc] with posthoc one "
                f"of {', '.join(POST_HOC)}"
            )
        return cls(label, source or None, loss or "ce", posthoc or None)

    @classmethod
    def from_run(cls, method_tag: str | None, params: Mapping[str, str]) -> Method:
        """From a trial's ``simlab.method`` tag (`sweeps.space.method_name`) and its ``loss`` param."""
        base = cls.parse(method_tag or params.get("label", "?"))
        return cls(base.label, base.source, params.get("loss", "ce") or "ce")

    def __str__(self) -> str:
        text = self.label + (f":{self.source}" if self.source else "")
        text += f"+{self.loss}" if self.loss != "ce" else ""
        return text + (f"/{self.posthoc}" if self.posthoc else "")

    @property
    def display(self) -> str:
        """``One-hot``, ``TS``, ``WE``, ``LP (conf pairs)``, ``One-hot P`` (paper A / B names)."""
        if self.posthoc:
            return POST_HOC[self.posthoc]
        loss = "" if self.loss == "ce" else LOSS_NAMES.get(self.loss, self.loss)
        if self.label == "confidence":
            return f"{loss or 'CE'} (conf {self.source})"
        if self.label == "similarity":
            name = SOURCE_NAMES.get(self.source or "", self.source or "?")
        else:
            name = LABEL_NAMES.get(self.label, self.label)
        return f"{name} {loss}" if loss else name

    @classmethod
    def from_display(cls, name: str) -> Method:
        """The inverse of `display` for the names it produces (reading a report's CSV)."""
        name = name.strip()
        for key, shown in POST_HOC.items():
            if name == shown:
                return cls("onehot", posthoc=key)
        losses = {v: k for k, v in LOSS_NAMES.items()}
        if name.endswith(")") and " (conf " in name:
            loss, _, source = name[:-1].partition(" (conf ")
            return cls("confidence", source, losses.get(loss, loss))
        base, _, loss = name.partition(" ")
        loss = losses.get(loss, loss) if loss else "ce"
        labels = {v: k for k, v in LABEL_NAMES.items()}
        sources = {v: k for k, v in SOURCE_NAMES.items()}
        if base in labels:
            return cls(labels[base], None, loss)
        if base in sources:
            return cls("similarity", sources[base], loss)
        return cls(base, None, loss)


@dataclass
class Run:
    run_id: str
    method: Method
    model: str
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int = 0  # ms since the epoch (MLflow)
    trial_id: str = ""  # the Tune trial id (tag simlab.trial_id), shown beside the chosen configuration

    def setting(self, group_by: Sequence[str]) -> tuple[tuple[str, str], ...]:
        """The values of the ``group_by`` params (e.g. noise kind and rate) that split rows."""
        return tuple((k, self.params.get(k, "-")) for k in group_by)

    @property
    def config_key(self) -> str:
        return json.dumps({k: v for k, v in sorted(self.params.items()) if k not in NON_CONFIG_PARAMS})


@dataclass
class Row:
    model: str
    method: Method
    runs: list[Run] = field(default_factory=list)
    setting: tuple[tuple[str, str], ...] = ()  # the --group-by params' values
    cells: dict[str, Summary] = field(default_factory=dict)  # metric -> summary over seeds
    config: str = ""  # the chosen configuration's shown params (e.g. "beta=0.83")

    @property
    def setting_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.setting)


def selection_score(runs: Sequence[Run], select: str, mode: str) -> float:
    """The mean of validation metric ``select`` over ``runs``, signed so that lower is better
    (inf when no run has it): what picks a method's configuration and the best similarity row."""
    s = summarise(r.metrics.get(select) for r in runs)
    if s.n == 0:
        return math.inf
    return s.mean if mode == "min" else -s.mean


def _shown_params(runs: Sequence[Run], show: Sequence[str]) -> str:
    if not show or not runs:
        return ""
    parts = []
    for key in show:
        value = runs[0].params.get(key)
        if value in (None, "None"):  # MLflow logs an unset field as the string "None"
            continue
        try:
            value = f"{float(value):.4g}"
        except ValueError:
            pass
        parts.append(f"{key}={value}")
    trials = [r.trial_id for r in runs if r.trial_id]
    if trials:  # which trials (one per seed) the row's numbers come from
        parts.append("trials " + " ".join(trials))
    return ", ".join(parts) or "-"


def _order(row: Row) -> tuple:
    name = row.method.display
    idx = METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)
    return (row.setting, row.model, idx, name)


def build_rows(
    runs: Iterable[Run],
    *,
    select: str = "val_nll",
    mode: str = "min",
    group_by: Sequence[str] = (),
    show_params: Sequence[str] = (),
) -> list[Row]:
    """Group runs into table rows: per (setting, model, method) the configuration best on ``select``
    (validation), its seeds aggregated (a seed counted once: its earliest run); post-hoc rows from the
    chosen one-hot configuration's ``ts_`` / ``ets_`` / ``dir_`` metrics. ``group_by`` names params
    (e.g. ``noise_kind``, ``noise_rate``) whose values split rows into settings instead of being
    configurations to choose between."""
    groups: dict[tuple, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[(run.setting(group_by), run.model, run.method)][run.config_key].append(run)
    rows: list[Row] = []
    for (setting, model, method), configs in groups.items():
        _, chosen = min(configs.items(), key=lambda item: selection_score(item[1], select, mode))
        by_seed: dict[str, Run] = {}
        for run in sorted(chosen, key=lambda r: (r.start_time, r.run_id)):
            by_seed.setdefault(run.params.get("seed", run.run_id), run)
        chosen = list(by_seed.values())
        config = _shown_params(chosen, show_params)
        rows.append(Row(model, method, chosen, setting, config=config))
        if method == Method("onehot"):
            for prefix in POST_HOC:
                if any(f"{prefix}_accuracy" in r.metrics for r in chosen):
                    rows.append(Row(model, Method("onehot", posthoc=prefix), chosen, setting, config=config))
    metrics = [m for m, _ in (*COLUMNS, *OOD_COLUMNS, BEST_EPOCH_COLUMN)]
    for row in rows:
        prefix = f"{row.method.posthoc}_" if row.method.posthoc else ""
        for metric in metrics:
            row.cells[metric] = summarise(r.metrics.get(prefix + metric) for r in row.runs)
    return sorted(rows, key=_order)


# ---------------------------------------------------------------------------------------------
# CSV (written by to_csv, read back by read_csv)
def to_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    cols = [m for m, _ in (*COLUMNS, *OOD_COLUMNS, BEST_EPOCH_COLUMN)]
    writer.writerow(
        [
            "setting",
            "model",
            "method",
            "method_key",
            "config",
            *(f"{m}_{s}" for m in cols for s in ("mean", "std", "n")),
        ]
    )
    for row in rows:
        values = []
        for m in cols:
            c = row.cells.get(m, Summary(math.nan, math.nan, 0))
            values += [repr(c.mean), repr(c.std), c.n]
        writer.writerow(
            [row.setting_text, row.model, row.method.display, str(row.method), row.config, *values]
        )
    return buf.getvalue()


def _parse_setting(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"setting: expected 'key=value' parts, got {text!r}")
        out.append((key, value))
    return tuple(out)


def read_csv(path: str | os.PathLike) -> list[Row]:
    """Rows (summaries only, no runs) from a report CSV: this module's `to_csv`, or the earlier
    format without ``method_key``/``config`` (the method is then read from its display name). A
    std of a single value is read as nan (the earlier format wrote 0)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"csv: no such file {str(path)!r}")
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            key = rec.get("method_key")
            method = Method.parse(key) if key else Method.from_display(rec["method"])
            row = Row(
                rec["model"],
                method,
                setting=_parse_setting(rec.get("setting", "")),
                config=rec.get("config", ""),
            )
            for col in rec:
                if col.endswith("_mean"):
                    metric = col[: -len("_mean")]
                    n = int(float(rec.get(f"{metric}_n") or 0))
                    mean = float(rec[col]) if rec[col] not in ("", None) else math.nan
                    std = float(rec.get(f"{metric}_std") or "nan") if n >= 2 else math.nan
                    row.cells[metric] = Summary(mean if n else math.nan, std, n)
            rows.append(row)
    return sorted(rows, key=_order)


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
            higher = HIGHER_IS_BETTER.get(metric, True)
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
        ),
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
                "p (Welch)",
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
            "Δ = method - baseline (mean over seeds, in points). Welch's t-test over seeds; p (Holm) is "
            "corrected over every comparison in this table. better / worse: Holm p < "
            f"{alpha:g} in the metric's better / worse direction (lower ECE, higher accuracy); cannot tell: "
            "not significant. Detectable Δ: the difference Welch's test would find with 80 % power given "
            "these seeds' spread; a true difference smaller than it is likely to read 'cannot tell'. "
            "See docs/statistics.md.",
        ]
    ood = [r for r in rows if not r.method.posthoc and r.cells.get(OOD_COLUMNS[0][0], Summary(0, 0, 0)).n]
    if ood:
        lines += ["", "### Confidence on uniform-noise images (paper A §6.4)", ""]
        lines += markdown_table(
            ["Model", "Method", *(f"{label} (%)" for _, label in OOD_COLUMNS)],
            (
                [
                    r.model,
                    r.method.display,
                    *(format_cell(r.cells[m], interval=interval) for m, _ in OOD_COLUMNS),
                ]
                for r in ood
            ),
        )
        lines += ["", "Max-softmax confidence in %, mean ± sample std over seeds of each run's mean/median."]
    return "\n".join(lines) + "\n"


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


# ---------------------------------------------------------------------------------------------
# MLflow
def load_runs(
    tracking_uri: str, experiment: str, *, best_epoch_from: str | None = None, stage: str | None = None
) -> tuple[Any, list[Run]]:
    """The FINISHED trial runs of ``experiment`` (child runs tagged ``simlab.role = trial``).

    ``stage``: only runs tagged ``simlab.stage`` = stage (a two-stage sweep's ``search`` / ``seeds``).
    ``best_epoch_from``: a per-epoch test metric (``test_accuracy``; ``step`` = epoch) whose best value
    becomes the run's ``best_epoch_accuracy`` and its epoch ``best_epoch`` (paper B's protocol, which
    selects the epoch on test). A run that logged ``test_accuracy_best`` / ``best_epoch`` itself keeps
    those; otherwise they come from the metric's history.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(
            f"experiment: no experiment {experiment!r} at {tracking_uri}; found: {', '.join(names)}"
        )
    query = "tags.`simlab.role` = 'trial' and attributes.status = 'FINISHED'"
    if stage:
        query += f" and tags.`simlab.stage` = '{stage}'"
    found = client.search_runs([exp.experiment_id], filter_string=query, max_results=50000)
    # A run cut short by Ctrl-C is no result (sweeps.stops.INTERRUPTED_TAG; a resumed run loses the tag).
    interrupted = [r for r in found if "simlab.interrupted" in r.data.tags]
    if interrupted:
        logger.warning("left out %d interrupted run(s) (continue the sweep with --resume)", len(interrupted))
    found = [r for r in found if "simlab.interrupted" not in r.data.tags]
    runs = []
    for r in found:
        metrics = dict(r.data.metrics)
        if best_epoch_from and "test_accuracy_best" in metrics:
            metrics[BEST_EPOCH_COLUMN[0]] = metrics["test_accuracy_best"]
        elif best_epoch_from:
            history = client.get_metric_history(r.info.run_id, best_epoch_from)
            points = [m for m in history if math.isfinite(m.value)]
            if points:  # the highest value, the earliest epoch among ties
                top = max(points, key=lambda m: (m.value, -m.step))
                metrics[BEST_EPOCH_COLUMN[0]] = top.value
                metrics["best_epoch"] = float(top.step)
        runs.append(
            Run(
                run_id=r.info.run_id,
                method=Method.from_run(r.data.tags.get("simlab.method"), r.data.params),
                model=r.data.params.get("model", "?"),
                params=dict(r.data.params),
                metrics=metrics,
                start_time=r.info.start_time or 0,
                trial_id=r.data.tags.get("simlab.trial_id", ""),
            )
        )
    return client, runs


def _download(client: Any, run_id: str, name: str, tmp: str) -> str | None:
    try:
        return client.download_artifacts(run_id, name, tmp)
    except Exception as err:  # MLflow raises several types for a missing artifact
        logger.debug("no %s in run %s: %s", name, run_id, err)
        return None


def bootstrap_rows(
    client: Any, rows: Sequence[Row], *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> list[tuple[Row, Run, dict]]:
    """Per run of every (non post-hoc) row: `simlab.stats.bootstrap_metrics` on its ``test_probs.npz``
    (seeded per run by ``seed``; runs without the artifact are skipped with a warning)."""
    import numpy as np
    import torch

    from simlab.calibration import bootstrap_metrics

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            if row.method.posthoc:
                continue
            for run in row.runs:
                local = _download(client, run.run_id, "test_probs.npz", tmp)
                if local is None:
                    logger.warning("no test_probs.npz in run %s (%s)", run.run_id, row.method.display)
                    continue
                with np.load(local) as npz:
                    probs, labels = torch.from_numpy(npz["probs"]), torch.from_numpy(npz["labels"])
                os.unlink(local)
                gen = torch.Generator().manual_seed(seed)
                out.append(
                    (
                        row,
                        run,
                        bootstrap_metrics(
                            probs, labels, n_resamples=n_resamples, confidence=confidence, generator=gen
                        ),
                    )
                )
    return out


def bootstrap_markdown(results: Sequence[tuple[Row, Run, dict]], confidence: float = 0.95) -> str:
    labels = dict(COLUMNS)
    head = ["Setting", "Model", "Method", "Seed", *(f"{labels[m]} (%)" for m in BOOTSTRAP_METRICS)]
    lines = [f"### Bootstrap over test samples ({confidence:.0%} percentile intervals, per run)", ""]
    lines += markdown_table(
        head,
        (
            [row.setting_text or "-", row.model, row.method.display, run.params.get("seed", "?")]
            + [
                f"{fmt_pct(b[m].estimate)} [{fmt_pct(b[m].low)}, {fmt_pct(b[m].high)}]"
                for m in BOOTSTRAP_METRICS
            ]
            for row, run, b in results
        ),
    )
    n = results[0][2][BOOTSTRAP_METRICS[0]].n_resamples if results else 0
    lines += ["", f"{n} resamples of the test set per run: the uncertainty from the finite test set alone."]
    return "\n".join(lines) + "\n"


def bootstrap_csv(results: Sequence[tuple[Row, Run, dict]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["setting", "model", "method", "run_id", "seed", "metric", "estimate", "low", "high", "n_resamples"]
    )
    for row, run, b in results:
        for metric in BOOTSTRAP_METRICS:
            i = b[metric]
            w.writerow(
                [row.setting_text, row.model, str(row.method), run.run_id, run.params.get("seed", "")]
                + [metric, repr(i.estimate), repr(i.low), repr(i.high), i.n_resamples]
            )
    return buf.getvalue()


def reliability_grid(client: Any, rows: Sequence[Row], path: Path, *, n_bins: int = 15) -> Path | None:
    """One top-label reliability diagram per (non post-hoc) row from its first run's test probabilities."""
    import numpy as np
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from simlab.calibration import reliability_diagram

    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            if row.method.posthoc:
                continue
            local = next(
                (p for p in (_download(client, r.run_id, "test_probs.npz", tmp) for r in row.runs) if p), None
            )
            if local is None:
                logger.warning("no test_probs.npz in any run of %s / %s", row.model, row.method.display)
                continue
            with np.load(local) as npz:
                probs, labels = torch.from_numpy(npz["probs"]), torch.from_numpy(npz["labels"])
            title = f"{row.model} {row.method.display}" + (f"\n{row.setting_text}" if row.setting else "")
            fig = reliability_diagram(probs, labels, n_bins=n_bins, scope="prediction", title=title)
            fig.canvas.draw()
            panels.append(np.asarray(fig.canvas.buffer_rgba()))
            os.unlink(local)
    if not panels:
        return None
    cols = min(5, len(panels))
    nrows = math.ceil(len(panels) / cols)
    grid = Figure(figsize=(3.2 * cols, 4.3 * nrows), layout="constrained")
    FigureCanvasAgg(grid)
    for i, img in enumerate(panels):
        ax = grid.add_subplot(nrows, cols, i + 1)
        ax.imshow(img)
        ax.axis("off")
    tmp_path = path.with_name(f".{path.name}.tmp.png")
    grid.savefig(tmp_path, dpi=110)
    os.replace(tmp_path, path)
    return path


def ood_rows(rows: Sequence[Row], *, select: str = "val_nll", mode: str = "min") -> list[tuple[str, Row]]:
    """Paper A Fig. 3's methods: one-hot, uniform LS, mixup and the best similarity row (best mean
    ``select`` on validation over its seeds), each with the name its histogram is drawn under."""
    plain = [r for r in rows if not r.method.posthoc]
    chosen = [(r.method.display, r) for r in plain if r.method.display in PAPER_OOD_METHODS]
    sims = [r for r in plain if r.method.display in SIMILARITY_METHODS]
    if sims:
        best = min(sims, key=lambda row: selection_score(row.runs, select, mode))
        chosen.append((f"{best.method.display} (best similarity)", best))
    return chosen


def ood_figure(client: Any, rows: Sequence[tuple[str, Row]], path: Path, *, bins: int = 20) -> Path | None:
    """Paper A Fig. 3 (right): histograms of max-softmax confidence on uniform-noise images, each row's
    ``ood_noise_confidences.npz`` artifacts pooled over its seeds."""
    import numpy as np

    from simlab.train import ood_confidence_figure

    confidences: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, row in rows:
            parts = []
            for run in row.runs:
                local = _download(client, run.run_id, "ood_noise_confidences.npz", tmp)
                if local is None:
                    continue
                with np.load(local) as npz:
                    parts.append(np.asarray(npz["confidences"], dtype=np.float64))
                os.unlink(local)
            if parts:
                confidences[f"{name} (n={len(parts)})"] = np.concatenate(parts)
    if not confidences:
        return None
    fig = ood_confidence_figure(confidences, bins=bins, title="Confidence on uniform-noise images")
    tmp_path = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp_path, dpi=110)
    os.replace(tmp_path, path)
    return path


def _param_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def warm_start_points(
    rows: Sequence[Row], params: Sequence[str], seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """Each (non post-hoc) row's chosen configuration as sweep warm-start points, one per seed: the label
    method (``label``, ``similarity``) plus ``params`` (e.g. the β chosen on validation)."""
    points = []
    for row in rows:
        if row.method.posthoc or not row.runs:
            continue
        run = row.runs[0]
        base: dict[str, Any] = {"label": row.method.label}
        if row.method.source:
            base["similarity" if row.method.label == "similarity" else "confidence_source"] = (
                row.method.source
            )
        for key in params:
            if run.params.get(key) not in (None, "None"):
                base[key] = _param_value(run.params[key])
        points.extend({**base, "seed": seed} for seed in seeds)
    return points


# ---------------------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + ``os.replace``, with the mode open() would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)  # mkstemp creates 0600: a report is for reading (0666 & ~umask)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def default_out(tracking_uri: str, experiment: str) -> Path:
    """``<sweep folder>/report`` for a sweep's own sqlite store (``sqlite:///<storage>/<name>/mlflow.db``),
    else ``./reports/<experiment>``."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / "report"
    return Path("reports") / experiment
