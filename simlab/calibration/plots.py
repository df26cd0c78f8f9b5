"""Calibration figures: the reliability diagram of paper A Fig. 1, drawn from the histogram ECE's bins.

Figures are returned as matplotlib ``Figure`` objects on an Agg canvas (no pyplot global state); the
caller saves them. matplotlib is imported inside the function: the metrics are used without it.
"""

from __future__ import annotations

import numpy as np
import torch

from simlab.calibration.metrics import Scope, bin_statistics


def reliability_diagram(
    probs: torch.Tensor,
    labels: torch.Tensor,
    n_bins: int = 15,
    scope: Scope = "prediction",
    *,
    title: str | None = None,
):
    """Reliability diagram as in paper A Fig. 1, returned as a matplotlib ``Figure`` (Agg canvas).

    ``probs [N, K]``, ``labels [N]``. Top: per-bin accuracy (outcome frequency) bars against the bin
    centres, the gap to the bin's mean confidence in red, the diagonal of perfect calibration and the
    histogram ECE. Bottom: the fraction of pairs per bin (confidence histogram) with the mean accuracy
    and mean confidence marked. No pyplot global state: save it with ``fig.savefig(path)``.
    """
    # matplotlib is heavy and only figures need it: imported here, not with the metrics.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count, conf, hits = bin_statistics(probs, labels, n_bins=n_bins, scope=scope)
    count, conf, hits = count.cpu().numpy(), conf.cpu().numpy(), hits.cpu().numpy()
    n = count.sum()
    nonempty = count > 0
    safe = np.where(nonempty, count, 1.0)
    acc_bin = np.where(nonempty, hits / safe, 0.0)
    conf_bin = np.where(nonempty, conf / safe, 0.0)
    ece = float(np.abs(hits - conf).sum() / n)
    width = 1.0 / n_bins
    left = np.arange(n_bins) * width

    fig = Figure(figsize=(4.5, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(left, acc_bin, width=width, align="edge", color="tab:blue", edgecolor="black", label="Outputs")
    gap_bottom = np.minimum(acc_bin, conf_bin)
    gap_height = np.abs(conf_bin - acc_bin)
    ax.bar(
        left[nonempty],
        gap_height[nonempty],
        bottom=gap_bottom[nonempty],
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="Gap",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="Perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy" if scope == "prediction" else "Outcome frequency")
    ax.text(
        0.04,
        0.92,
        f"ECE = {100 * ece:.2f}%",
        transform=ax.transAxes,
        fontsize=10,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"Reliability ({scope} scope, {n_bins} bins)")

    ax_hist.bar(left, count / n, width=width, align="edge", color="tab:blue", edgecolor="black")
    ax_hist.axvline(hits.sum() / n, color="black", linestyle="--", label="Accuracy")
    ax_hist.axvline(conf.sum() / n, color="tab:red", linestyle=":", label="Avg. confidence")
    ax_hist.set_xlabel("Confidence")
    ax_hist.set_ylabel("Fraction")
    ax_hist.legend(loc="upper left", fontsize=8)
    return fig
