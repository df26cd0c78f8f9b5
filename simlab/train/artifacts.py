"""The files `fit` leaves behind (rank 0): reliability diagrams, the label matrices, the test
probabilities, the OOD confidences and the config, each written atomically and logged to the tracker;
and the OOD confidence figure of paper A Fig. 3.

Files (``<name>`` -> ``<artifact_dir>/<file>``): ``reliability_{raw,ts}_{prediction,output}`` (PNG;
``ts`` when temperature scaling ran), ``label_matrix`` (.npy) and ``label_matrix_png``,
``trusted_label_matrix`` (.npy, when it differs), ``test_probs`` (.npz: probs, labels),
``ood_noise_confidences`` (.npz, when scored: ``confidences`` on uniform noise, ``ood_<key>`` on a
real OOD dataset) and ``config`` (config.json).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from simlab._io import atomic_write
from simlab.calibration import reliability_diagram
from simlab.config import TrainConfig
from simlab.tracking import Tracker

__all__ = ["ood_confidence_figure", "ood_confidence_panels", "write_artifacts"]


def write_artifacts(
    artifact_dir: str | os.PathLike | None,
    *,
    cfg: TrainConfig,
    test_probs: torch.Tensor,
    test_labels: torch.Tensor,
    recal_probs: Mapping[str, torch.Tensor],
    label_matrix: torch.Tensor,
    trusted_label_matrix: torch.Tensor,
    class_names: Sequence[str],
    ood_confidences: torch.Tensor | Mapping[str, torch.Tensor] | None,
    tracker: Tracker,
) -> dict[str, Path]:
    """Write the artifacts into ``artifact_dir`` (None: a fresh temporary folder), log each to
    ``tracker``, and return ``name -> path``.

    ``test_probs`` ``[N, K]`` float32 and ``test_labels`` ``[N]``; ``recal_probs``: recalibrator key ->
    its test probabilities; the label matrices ``[K, K]`` float64; ``ood_confidences``: array name -> ``[M]``
    (`simlab.train.evaluation.ood_scores`; a tensor is the noise array ``confidences``) or None.
    """
    if artifact_dir is None:
        root = Path(tempfile.mkdtemp(prefix="simlab-artifacts-"))
    else:
        root = Path(artifact_dir)
        root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def write(name: str, filename: str, fn) -> None:
        path = root / filename
        atomic_write(path, fn)
        out[name] = path

    variants = {"raw": test_probs}
    if "ts" in recal_probs:
        variants["ts"] = recal_probs["ts"]
    for variant, probs in variants.items():
        for scope in ("prediction", "output"):
            name = f"reliability_{variant}_{scope}"
            fig = reliability_diagram(
                probs,
                test_labels,
                n_bins=cfg.n_bins,
                scope=scope,
                title=f"{cfg.model} {cfg.label} {variant.upper()} ({scope})",
            )
            write(name, f"{name}.png", lambda fh, fig=fig: fig.savefig(fh, format="png", dpi=100))
    matrix = label_matrix.numpy()
    write("label_matrix", "label_matrix.npy", lambda fh: np.save(fh, matrix))
    write(
        "label_matrix_png",
        "label_matrix.png",
        lambda fh: _heatmap(matrix, class_names, f"label matrix ({cfg.label})").savefig(
            fh, format="png", dpi=100
        ),
    )
    if not torch.equal(trusted_label_matrix, label_matrix):
        trusted = trusted_label_matrix.numpy()
        write("trusted_label_matrix", "trusted_label_matrix.npy", lambda fh: np.save(fh, trusted))
    probs_np, labels_np = test_probs.numpy(), test_labels.numpy()
    write("test_probs", "test_probs.npz", lambda fh: np.savez(fh, probs=probs_np, labels=labels_np))
    if ood_confidences is not None:
        if isinstance(ood_confidences, torch.Tensor):
            ood_confidences = {"confidences": ood_confidences}
        conf_np = {k: v.numpy() for k, v in ood_confidences.items()}
        write("ood_noise_confidences", "ood_noise_confidences.npz", lambda fh: np.savez(fh, **conf_np))
    config_text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)
    write("config", "config.json", lambda fh: fh.write(config_text.encode()))
    for path in out.values():
        tracker.log_artifact(path)
    return out


def ood_confidence_figure(
    confidences: Mapping[str, torch.Tensor | np.ndarray], *, bins: int = 20, title: str | None = None
):
    """Histogram of max-softmax confidences per method, as in paper A Fig. 3 (matplotlib ``Figure``).

    ``confidences``: method name -> ``[N]`` confidences in [0, 1] (e.g. from `evaluate_ood`).
    Each histogram is normalised to a density so methods with different N compare.
    """
    return ood_confidence_panels({title or "": confidences}, bins=bins)


def ood_confidence_panels(panels: Mapping[str, Mapping[str, torch.Tensor | np.ndarray]], *, bins: int = 20):
    """`ood_confidence_figure` once per OOD set, side by side: ``panels`` = panel title (e.g. "uniform
    noise", "tinyimagenet") -> method name -> ``[N]`` confidences (paper A Fig. 3's two panels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: heavy, figures only
    from matplotlib.figure import Figure

    if not isinstance(panels, Mapping) or not panels:
        raise ValueError("panels: expected a non-empty mapping of title -> {method: confidences}")
    if not (isinstance(bins, int) and bins > 0):
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    fig = Figure(figsize=(5.0 * len(panels), 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, (title, confidences) in zip(axes, panels.items(), strict=True):
        if not isinstance(confidences, Mapping) or not confidences:
            raise ValueError("confidences: expected a non-empty mapping of method name -> [N] confidences")
        for name, conf in confidences.items():
            values = conf.detach().cpu().numpy() if isinstance(conf, torch.Tensor) else np.asarray(conf)
            if values.ndim != 1 or values.size == 0:
                raise ValueError(
                    f"confidences[{name!r}]: expected a non-empty [N] array, got shape {values.shape}"
                )
            ax.hist(values, bins=edges, density=True, histtype="step", linewidth=1.5, label=str(name))
        ax.set_xlim(0, 1)
        ax.set_xlabel("Confidence")
        ax.set_ylabel("Density")
        ax.legend(fontsize=8)
        if title:
            ax.set_title(title)
    return fig


def _heatmap(matrix: np.ndarray, class_names: Sequence[str], title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: heavy, figures only
    from matplotlib.figure import Figure

    k = matrix.shape[0]
    size = min(12.0, 2.0 + 0.35 * k)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="viridis", vmin=0.0)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if k <= 30:
        ax.set_xticks(range(k), labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels=list(class_names), fontsize=7)
    ax.set_xlabel("target class")
    ax.set_ylabel("labelled class")
    ax.set_title(title)
    return fig
