"""Runs -> rows: a sweep's trial runs (from MLflow, or a report's CSV) grouped into table rows.

Per (setting, model, method) `build_rows` picks the configuration best on the validation split and
aggregates its seeds into `simlab.stats.Summary` cells; `read_csv` rebuilds the same rows (means,
stds, counts) from `to_csv`'s output, so a report can be re-rendered without the store. `load_runs`
reads the FINISHED trial runs of an experiment (MLflow imported when called).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simlab.stats import Summary, summarise
from sweeps.results.method import METHOD_ORDER, PAPER_OOD_METHODS, POST_HOC, SIMILARITY_METHODS, Method

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
# ... and on a real unseen dataset (train.fit's ood_dataset): ``ood_<key>_confidence_{mean,median}``,
# columns named after the dataset, present only where some run has them (`ood_dataset_columns`).
_OOD_DATASET_METRIC = re.compile(r"^ood_([0-9a-z_]+)_confidence_(mean|median)$")
# Paper B's protocol: the best epoch's test accuracy (selected on test), from the metric history.
BEST_EPOCH_COLUMN: tuple[str, str] = ("best_epoch_accuracy", "Acc best epoch*")
# Beside a trial id in the Config column: the trial adopted a finished run of its configuration.
REUSED_MARK = "†"

# Params that do not define a configuration: the seed is what a row averages over.
NON_CONFIG_PARAMS = frozenset({"seed", "data_dir", "cache_dir", "device", "compile", "ood_data_dir"})


@dataclass
class Run:
    run_id: str
    method: Method
    model: str
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int = 0  # ms since the epoch (MLflow)
    trial_id: str = ""  # the Tune trial id (tag simlab.trial_id), shown beside the chosen configuration
    reused: bool = False  # adopted a finished run instead of training (tag simlab.reused_from, --reuse)

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


def seed_values(row: Row, metric: str) -> dict[str, float]:
    """``seed -> value`` of a row's runs (a post-hoc row reads its prefixed metric); empty for a row
    read from a CSV (no runs)."""
    prefix = f"{row.method.posthoc}_" if row.method.posthoc else ""
    out = {}
    for run in row.runs:
        value = run.metrics.get(prefix + metric)
        if value is not None and math.isfinite(value):
            out[run.params.get("seed", run.run_id)] = float(value)
    return out


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
    trials = [r.trial_id + (REUSED_MARK if r.reused else "") for r in runs if r.trial_id]
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
    runs_seen: list[Run] = []
    for run in runs:
        runs_seen.append(run)
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
    found = ood_dataset_columns(m for r in runs_seen for m in r.metrics)
    metrics = [m for m, _ in (*COLUMNS, *OOD_COLUMNS, BEST_EPOCH_COLUMN, *found)]
    for row in rows:
        prefix = f"{row.method.posthoc}_" if row.method.posthoc else ""
        for metric in metrics:
            row.cells[metric] = summarise(r.metrics.get(prefix + metric) for r in row.runs)
    return sorted(rows, key=_order)


def ood_dataset_columns(metric_names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The (metric, label) columns of the real OOD datasets among ``metric_names`` (paper A §6.4 on an
    unseen dataset, e.g. ``ood_tinyimagenet_confidence_mean`` -> "tinyimagenet conf mean"), sorted;
    the uniform-noise ones are `OOD_COLUMNS`."""
    found = set()
    for name in metric_names:
        m = _OOD_DATASET_METRIC.match(name)
        if m and m.group(1) != "noise":
            found.add((m.group(1), m.group(2)))
    return tuple((f"ood_{key}_confidence_{stat}", f"{key} conf {stat}") for key, stat in sorted(found))


def ood_columns(rows: Sequence[Row]) -> tuple[tuple[str, str], ...]:
    """Every OOD column the rows have a value in: uniform noise (`OOD_COLUMNS`, when any row has it)
    and each real OOD dataset; () when none."""
    have = {m for r in rows for m, c in r.cells.items() if c.n}
    noise = OOD_COLUMNS if any(m in have for m, _ in OOD_COLUMNS) else ()
    return (*noise, *ood_dataset_columns(have))


# ---------------------------------------------------------------------------------------------
# CSV (written by to_csv, read back by read_csv)
def to_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    found = ood_dataset_columns(m for r in rows for m, c in r.cells.items() if c.n)
    cols = [m for m, _ in (*COLUMNS, *OOD_COLUMNS, BEST_EPOCH_COLUMN, *found)]
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
                reused="simlab.reused_from" in r.data.tags,  # sweeps.reuse.REUSED_FROM_TAG
            )
        )
    return client, runs


def ood_rows(rows: Sequence[Row], *, select: str = "val_nll", mode: str = "min") -> list[tuple[str, Row]]:
    """Paper A Fig. 3's methods: one-hot, uniform LS, mixup and the best similarity row (best mean
    ``select`` on validation over its seeds), each with the name its histogram is drawn under. Rows
    split by ``--group-by`` settings (an ablation over α or β) or by model give each (setting, model)
    its own set, named with the setting and model so that no histogram replaces another's."""
    plain = [r for r in rows if not r.method.posthoc]
    models = {r.model for r in plain}
    groups: dict[tuple, list[Row]] = {}
    for r in plain:
        groups.setdefault((r.setting, r.model), []).append(r)
    chosen = []
    for (setting, model), group in groups.items():
        tags = [group[0].setting_text] if setting else []
        tags += [model] if len(models) > 1 else []
        suffix = f" [{', '.join(tags)}]" if tags else ""
        chosen += [(r.method.display + suffix, r) for r in group if r.method.display in PAPER_OOD_METHODS]
        sims = [r for r in group if r.method.display in SIMILARITY_METHODS]
        if sims:
            best = min(sims, key=lambda row: selection_score(row.runs, select, mode))
            chosen.append((f"{best.method.display} (best similarity){suffix}", best))
    return chosen


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


def default_out(tracking_uri: str, experiment: str) -> Path:
    """``<sweep folder>/report`` for a sweep's own sqlite store (``sqlite:///<storage>/<name>/mlflow.db``),
    else ``./reports/<experiment>``."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / "report"
    return Path("reports") / experiment
