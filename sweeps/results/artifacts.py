"""What a report computes from the runs' saved test outputs (MLflow artifacts): bootstrap intervals
over test samples (``test_probs.npz``), the reliability-diagram grid, and paper A Fig. 3's histograms
of confidences on uniform-noise images and a real OOD dataset (``ood_noise_confidences.npz``). numpy,
torch and matplotlib are imported when called (the report's table path needs none of them).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simlab._io import atomic_path
from simlab.calibration import BOOTSTRAP_METRICS
from simlab.stats import summarise
from sweeps.results.rows import COLUMNS, Row, Run
from sweeps.results.tables import fmt_pct, format_cell, markdown_table

logger = logging.getLogger(__name__)


def _download(client: Any, run_id: str, name: str, tmp: str) -> str | None:
    try:
        return client.download_artifacts(run_id, name, tmp)
    except Exception as err:  # MLflow raises several types for a missing artifact
        logger.debug("no %s in run %s: %s", name, run_id, err)
        return None


def bootstrap_rows(
    client: Any, rows: Sequence[Row], *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> list[tuple[Row, Run, dict]]:
    """Per run of every (non post-hoc) row: `simlab.calibration.bootstrap_metrics` on its ``test_probs.npz``
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


# The bootstrap's one metric that is not a report column: mean top-label confidence - accuracy.
GAP_LABEL = "Conf − Acc"


def bootstrap_markdown(results: Sequence[tuple[Row, Run, dict]], confidence: float = 0.95) -> str:
    """The per-run intervals, then per row the confidence gap over seeds (is the method over- or
    under-confident, and does that hold across seeds: mean ± std (n) [t interval])."""
    labels = {**dict(COLUMNS), "confidence_gap": GAP_LABEL}
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
    lines += [
        "",
        f"{n} resamples of the test set per run: the uncertainty from the finite test set alone. "
        "ECE is biased upward, so for a well-calibrated run its interval can sit just above the "
        "estimate (docs/statistics.md). "
        f"{GAP_LABEL}: mean top-label confidence minus accuracy on the test set (> 0: over-confident, "
        "< 0: under-confident; its absolute value is at most Hist P).",
    ]
    by_row: dict[int, tuple[Row, list[float]]] = {}
    for row, _, b in results:
        by_row.setdefault(id(row), (row, []))[1].append(b["confidence_gap"].estimate)
    lines += ["", f"#### {GAP_LABEL} over seeds", ""]
    lines += markdown_table(
        ["Setting", "Model", "Method", f"{GAP_LABEL} (%)", "Seeds over-confident"],
        (
            [
                row.setting_text or "-",
                row.model,
                row.method.display,
                format_cell(summarise(gaps), interval=True, confidence=confidence),
                f"{sum(g > 0 for g in gaps)} of {len(gaps)}",
            ]
            for row, gaps in by_row.values()
        ),
    )
    lines += ["", f"mean ± sample std (seeds) [{confidence:.0%} Student-t interval of the mean over seeds]."]
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
    with atomic_path(path) as tmp:
        grid.savefig(tmp, dpi=110, format="png")  # the temp name has no .png to infer it from
    return path


def ood_figure(client: Any, rows: Sequence[tuple[str, Row]], path: Path, *, bins: int = 20) -> Path | None:
    """Paper A Fig. 3: histograms of max-softmax confidence on uniform-noise images and, where the runs
    scored one (``ood_dataset``), on a real unseen dataset: one panel per OOD set, each row's
    ``ood_noise_confidences.npz`` arrays (``confidences``; ``ood_<key>``) pooled over its seeds. Runs
    with uniform noise only give the one-panel figure they always had."""
    import numpy as np

    from simlab.train import ood_confidence_figure, ood_confidence_panels

    panels: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, row in rows:
            parts: dict[str, list[Any]] = {}
            for run in row.runs:
                local = _download(client, run.run_id, "ood_noise_confidences.npz", tmp)
                if local is None:
                    continue
                with np.load(local) as npz:
                    for key in npz.files:
                        if key == "confidences" or key.startswith("ood_"):
                            parts.setdefault(key, []).append(np.asarray(npz[key], dtype=np.float64))
                os.unlink(local)
            for key, arrays in parts.items():
                panel = "uniform noise" if key == "confidences" else key.removeprefix("ood_")
                panels.setdefault(panel, {})[f"{name} (n={len(arrays)})"] = np.concatenate(arrays)
    if not panels:
        return None
    if set(panels) == {"uniform noise"}:
        fig = ood_confidence_figure(
            panels["uniform noise"], bins=bins, title="Confidence on uniform-noise images"
        )
    else:
        ordered = dict(sorted(panels.items(), key=lambda kv: (kv[0] != "uniform noise", kv[0])))
        fig = ood_confidence_panels({f"Confidence on {k}": v for k, v in ordered.items()}, bins=bins)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")  # the temp name has no .png to infer it from
    return path
