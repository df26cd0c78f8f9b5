#!/usr/bin/env python
"""Paper-style results of a sweep from its MLflow experiment: a table and a grid of reliability diagrams.

    python scripts/report.py --tracking-uri sqlite:///$HOME/simlab_sweeps/quickstart/mlflow.db \
        --experiment quickstart --out reports/quickstart

Rows are methods (paper A Tables 1-2: One-hot, TS, ETS, Dir-ODIR, Uniform, Mixup, L1, L2, AE, WE, plus
confidence-label methods), per model; columns the four ECEs (histogram / KDE, prediction / output) and
accuracy, in percent, as ``mean ± std (n)`` over the seeds of one configuration (runs repeating a
configuration with the same seed count once). TS / ETS / Dir-ODIR
are post-hoc: their rows come from the one-hot runs' ``ts_`` / ``ets_`` / ``dir_`` test metrics.

When a sweep tried several configurations of one method (e.g. several β), the configuration is chosen
on the validation split (``--select``, default ``val_nll``: the mean over its seeds), never on test.
The std is the sample standard deviation (ddof = 1); 0 with a single seed.

Writes ``report.md``, ``report.csv`` and ``reliability.png`` (test-set top-label diagrams of each
row's first run that has a ``test_probs.npz`` artifact) under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

logger = logging.getLogger("scripts.report")

COLUMNS: tuple[tuple[str, str], ...] = (
    ("ece_hist_prediction", "Hist P"),
    ("ece_hist_output", "Hist O"),
    ("ece_kde_prediction", "KDE P"),
    ("ece_kde_output", "KDE O"),
    ("accuracy", "Acc"),
)
POST_HOC: tuple[tuple[str, str], ...] = (("ts", "TS"), ("ets", "ETS"), ("dir", "Dir-ODIR"))
# Paper A's column order; anything else follows alphabetically.
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
METHOD_LABELS: dict[str, str] = {
    "onehot": "One-hot",
    "uniform": "Uniform",
    "mixup": "Mixup",
    "similarity:l1": "L1",
    "similarity:l2": "L2",
    "similarity:ae": "AE",
    "similarity:we": "WE",
    "similarity:wordnet": "WordNet",
}
# Paper B's loss names (Table 1): a trial's `loss` param is part of its method unless it is plain CE.
LOSS_LABELS: dict[str, str] = {
    "ce": "CE",
    "projection": "P",
    "log_projection": "LP",
    "l1": "L1",
    "mse": "MSE",
}
# Params that do not define a configuration: the seed is what a row averages over.
NON_CONFIG_PARAMS = frozenset({"seed", "data_dir", "cache_dir", "device", "compile"})


@dataclass
class Run:
    run_id: str
    method: str  # sweeps.space.method_name, plus "+<loss>" when the loss is not CE
    model: str
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int = 0  # ms since the epoch (MLflow)

    def setting(self, group_by: Sequence[str]) -> str:
        """The values of the ``group_by`` params (e.g. noise kind and rate) that a row is split by."""
        return " ".join(f"{k}={self.params.get(k, '-')}" for k in group_by)

    @property
    def config_key(self) -> str:
        return json.dumps({k: v for k, v in sorted(self.params.items()) if k not in NON_CONFIG_PARAMS})


@dataclass
class Row:
    model: str
    method: str  # display name
    runs: list[Run]
    prefix: str = ""  # "ts_" etc. for post-hoc rows
    setting: str = ""  # the --group-by params' values ("" without --group-by)
    cells: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # metric -> (mean, std, n)


def method_label(method: str) -> str:
    """``onehot`` -> ``One-hot``, ``similarity:we`` -> ``WE``, ``confidence:pairs+log_projection`` ->
    ``LP (conf pairs)``, ``onehot+projection`` -> ``One-hot P``."""
    base, _, loss = method.partition("+")
    loss_label = LOSS_LABELS.get(loss, loss)
    if base.startswith("confidence:"):
        return f"{loss_label or 'CE'} (conf {base.split(':', 1)[1]})"
    label = METHOD_LABELS.get(base, base)
    return f"{label} {loss_label}" if loss_label else label


def run_method(method: str, params: Mapping[str, str]) -> str:
    """A run's method key: its label method, plus its loss unless that is CE (paper B's rows)."""
    loss = params.get("loss", "ce")
    return method if loss == "ce" else f"{method}+{loss}"


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof = 1; 0 for one value) and count of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return (math.nan, math.nan, 0)
    return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))


def selection_score(runs: Sequence[Run], select: str, mode: str) -> float:
    """The mean of validation metric ``select`` over ``runs``, signed so that lower is better
    (inf when no run has it): what picks a method's configuration and the best similarity row."""
    m, _, n = mean_std([r.metrics.get(select) for r in runs])
    if n == 0:
        return math.inf
    return m if mode == "min" else -m


def build_rows(
    runs: Iterable[Run], *, select: str = "val_nll", mode: str = "min", group_by: Sequence[str] = ()
) -> list[Row]:
    """Group runs into table rows: per (setting, model, method) the configuration best on ``select``
    (validation), its seeds aggregated; post-hoc rows from the chosen one-hot configuration.
    ``group_by`` names params (e.g. ``noise_kind``, ``noise_rate``) whose values split rows into
    settings instead of being configurations to choose between."""
    groups: dict[tuple[str, str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[(run.setting(group_by), run.model, run.method)][run.config_key].append(run)
    rows: list[Row] = []
    for (setting, model, method), configs in groups.items():
        _, chosen = min(configs.items(), key=lambda item: selection_score(item[1], select, mode))
        # Repeats of one configuration with the same seed are the same experiment: count each seed once.
        by_seed: dict[str, Run] = {}
        for run in sorted(chosen, key=lambda r: (r.start_time, r.run_id)):  # the earliest run of a seed
            by_seed.setdefault(run.params.get("seed", run.run_id), run)
        chosen = list(by_seed.values())
        rows.append(Row(model, method_label(method), chosen, setting=setting))
        if method == "onehot":
            for prefix, label in POST_HOC:
                if any(f"{prefix}_accuracy" in r.metrics for r in chosen):
                    rows.append(Row(model, label, chosen, prefix=f"{prefix}_", setting=setting))
    for row in rows:
        for metric, _ in (*COLUMNS, *OOD_COLUMNS):
            row.cells[metric] = mean_std([r.metrics.get(row.prefix + metric) for r in row.runs])

    def order(row: Row) -> tuple[str, str, int, str]:
        idx = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
        return (row.setting, row.model, idx, row.method)

    return sorted(rows, key=order)


# Paper A §6.4: the mean max-softmax confidence on uniform-noise images (train.fit's ood_samples).
OOD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ood_noise_confidence_mean", "Noise conf mean"),
    ("ood_noise_confidence_median", "Noise conf median"),
)


def _cell(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f} ({n})"


def _shown_params(row: Row, show: Sequence[str]) -> str:
    """The chosen configuration's values of the ``show`` params (e.g. the β a sweep selected)."""
    if not show or not row.runs:
        return ""
    parts = []
    for key in show:
        value = row.runs[0].params.get(key)
        if value in (None, "None"):  # MLflow logs an unset field as the string "None"
            continue
        try:
            value = f"{float(value):.4g}"
        except ValueError:
            pass
        parts.append(f"{key}={value}")
    return ", ".join(parts) or "-"


def to_markdown(rows: Sequence[Row], *, title: str = "", show_params: Sequence[str] = ()) -> str:
    settings = any(row.setting for row in rows)
    head = [
        *(["Setting"] if settings else []),
        "Model",
        "Method",
        *(["Config"] if show_params else []),
        *(f"{label} (%)" for _, label in COLUMNS),
    ]
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            *([row.setting] if settings else []),
            row.model,
            row.method,
            *([_shown_params(row, show_params)] if show_params else []),
            *(_cell(*row.cells[m]) for m, _ in COLUMNS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "ECE and accuracy on the test split in %, mean ± sample std (number of seeds); configuration "
        "per method chosen on the validation split; TS/ETS/Dir-ODIR are post-hoc on the one-hot runs."
    )
    ood_rows = [r for r in rows if not r.prefix and r.cells.get(OOD_COLUMNS[0][0], (0, 0, 0))[2]]
    if ood_rows:
        ood_head = ["Model", "Method", *(f"{label} (%)" for _, label in OOD_COLUMNS)]
        lines += [
            "",
            "### Confidence on uniform-noise images (paper A §6.4)",
            "",
            "| " + " | ".join(ood_head) + " |",
            "|" + "---|" * len(ood_head),
        ]
        for row in ood_rows:
            cells = [row.model, row.method, *(_cell(*row.cells[m]) for m, _ in OOD_COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Max-softmax confidence in %, mean ± sample std over seeds of each run's mean/median."]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    cols = (*COLUMNS, *OOD_COLUMNS)
    writer.writerow(
        ["setting", "model", "method", *(f"{m}_{s}" for m, _ in cols for s in ("mean", "std", "n"))]
    )
    for row in rows:
        writer.writerow([row.setting, row.model, row.method, *(v for m, _ in cols for v in row.cells[m])])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
def load_runs(tracking_uri: str, experiment: str) -> tuple[Any, list[Run]]:
    """The FINISHED trial runs of ``experiment`` (child runs tagged ``simlab.role = trial``), none
    tagged ``simlab.interrupted``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(
            f"experiment: no experiment {experiment!r} at {tracking_uri}; found: {', '.join(names)}"
        )
    found = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`simlab.role` = 'trial' and attributes.status = 'FINISHED'",
        max_results=50000,
    )
    # A run cut short by Ctrl-C is no result (sweeps.stops.INTERRUPTED_TAG; a resumed run loses the tag).
    interrupted = [r for r in found if "simlab.interrupted" in r.data.tags]
    if interrupted:
        logger.warning("left out %d interrupted run(s) (continue the sweep with --resume)", len(interrupted))
    found = [r for r in found if "simlab.interrupted" not in r.data.tags]
    runs = [
        Run(
            run_id=r.info.run_id,
            method=run_method(
                r.data.tags.get("simlab.method", r.data.params.get("label", "?")), r.data.params
            ),
            model=r.data.params.get("model", "?"),
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
            start_time=r.info.start_time or 0,
        )
        for r in found
    ]
    return client, runs


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
            if row.prefix:
                continue
            local = None
            for run in row.runs:  # the first run of the row that has the artifact
                try:
                    local = client.download_artifacts(run.run_id, "test_probs.npz", tmp)
                    break
                except Exception as err:
                    logger.debug("no test_probs.npz in run %s: %s", run.run_id, err)
            if local is None:  # leave the panel out, say so
                logger.warning("no test_probs.npz in any run of %s / %s", row.model, row.method)
                continue
            with np.load(local) as npz:
                probs, labels = torch.from_numpy(npz["probs"]), torch.from_numpy(npz["labels"])
            title = f"{row.model} {row.method}" + (f"\n{row.setting}" if row.setting else "")
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


SIMILARITY_METHODS: tuple[str, ...] = ("L1", "L2", "AE", "WE", "WordNet")
PAPER_OOD_METHODS: tuple[str, ...] = ("One-hot", "Uniform", "Mixup")


def ood_rows(rows: Sequence[Row], *, select: str = "val_nll", mode: str = "min") -> list[tuple[str, Row]]:
    """Paper A Fig. 3's methods: one-hot, uniform LS, mixup and the best similarity row (best mean
    ``select`` on validation over its seeds), each with the name its histogram is drawn under."""
    plain = [r for r in rows if not r.prefix]
    chosen = [(r.method, r) for r in plain if r.method in PAPER_OOD_METHODS]
    sims = [r for r in plain if r.method in SIMILARITY_METHODS]

    if sims:
        best = min(sims, key=lambda row: selection_score(row.runs, select, mode))
        chosen.append((f"{best.method} (best similarity)", best))
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
                try:
                    local = client.download_artifacts(run.run_id, "ood_noise_confidences.npz", tmp)
                except Exception as err:
                    logger.debug("no ood_noise_confidences.npz in run %s: %s", run.run_id, err)
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
    method (``label``, ``similarity``) plus ``params`` (e.g. the β chosen on validation), for
    ``sweeps/calibration.py --warm-start`` (re-running what a search chose over more seeds)."""
    points = []
    for row in rows:
        if row.prefix or not row.runs:
            continue
        run = row.runs[0]
        method = run.method.partition("+")[0]
        label, _, source = method.partition(":")
        base: dict[str, Any] = {"label": label}
        if source:
            base["similarity" if label == "similarity" else "confidence_source"] = source
        for key in params:
            if run.params.get(key) not in (None, "None"):
                base[key] = _param_value(run.params[key])
        points.extend({**base, "seed": seed} for seed in seeds)
    return points


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///<storage>/<sweep>/mlflow.db")
    p.add_argument("--experiment", required=True, help="the sweep's name (= its MLflow experiment)")
    p.add_argument("--out", default="reports", help="output folder (default ./reports)")
    p.add_argument("--select", default="val_nll", help="validation metric that picks a method's config")
    p.add_argument("--mode", choices=["min", "max"], help="direction of --select (default: max for accuracy)")
    p.add_argument("--no-diagrams", action="store_true", help="skip the reliability-diagram grid")
    p.add_argument(
        "--group-by",
        default="",
        help="params that split rows into settings, comma-separated (paper B: noise_kind,noise_rate)",
    )
    p.add_argument(
        "--show-params",
        default="",
        help="params of each row's chosen configuration to show in a Config column (e.g. beta)",
    )
    p.add_argument(
        "--emit-warm-start",
        metavar="FILE",
        help="write each row's chosen configuration (label method + --show-params) x --seeds as a JSON "
        "warm-start list for sweeps/calibration.py --warm-start",
    )
    p.add_argument("--seeds", default="0,1,2", help="seeds for --emit-warm-start (default 0,1,2)")
    args = p.parse_args(argv)
    group_by = tuple(k.strip() for k in args.group_by.split(",") if k.strip())
    show_params = tuple(k.strip() for k in args.show_params.split(",") if k.strip())
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        print(f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.select.startswith("val_"):
        print(f"error: --select must be a validation metric (val_...), got {args.select!r}", file=sys.stderr)
        return 2
    mode = args.mode or ("max" if args.select.endswith("accuracy") else "min")
    try:
        client, runs = load_runs(args.tracking_uri, args.experiment)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no finished trial runs in experiment {args.experiment!r}", file=sys.stderr)
        return 1
    rows = build_rows(runs, select=args.select, mode=mode, group_by=group_by)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rows, title=f"{args.experiment}: {len(runs)} finished trials", show_params=show_params)
    _write(out / "report.md", md)
    _write(out / "report.csv", to_csv(rows))
    print(md)
    if not args.no_diagrams:
        grid = reliability_grid(client, rows, out / "reliability.png")
        print(f"reliability diagrams: {grid}" if grid else "no reliability diagrams (no test_probs.npz)")
        if any(r.cells.get(OOD_COLUMNS[0][0], (0, 0, 0))[2] for r in rows):
            ood = ood_figure(
                client, ood_rows(rows, select=args.select, mode=mode), out / "ood_confidence.png"
            )
            print(f"uniform-noise confidence histograms: {ood}" if ood else "no ood_noise_confidences.npz")
    if args.emit_warm_start:
        points = warm_start_points(rows, show_params, seeds)
        target = Path(args.emit_warm_start)
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, json.dumps(points, indent=1) + "\n")
        print(f"warm-start points ({len(points)}): {target}")
    print(f"written: {out / 'report.md'}, {out / 'report.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
