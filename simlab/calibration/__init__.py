"""The calibration room (SPEC §5): how well probabilities match outcomes, and how to fix them post hoc.

- `metrics`: histogram and KDE ECE (both scopes), accuracy, NLL, Brier, the signed confidence gap;
  the ``probs``/``labels`` checks.
- `recalibration`: temperature scaling, ensemble temperature scaling, Dirichlet ODIR; `RECALIBRATORS`.
- `plots`: the reliability diagram (paper A Fig. 1).
- `bootstrap`: percentile intervals of the metrics over resampled test samples of one run.

The names below are the public API, so ``from simlab.calibration import hist_ece`` works.
"""

from simlab.calibration.bootstrap import BOOTSTRAP_METRICS, BootstrapInterval, bootstrap_metrics
from simlab.calibration.metrics import (
    METRICS,
    SCOPES,
    Scope,
    accuracy,
    bin_statistics,
    brier,
    check_labels,
    check_probs,
    confidence_gap,
    hist_ece,
    kde_ece,
    nll,
)
from simlab.calibration.plots import reliability_diagram
from simlab.calibration.recalibration import (
    RECALIBRATORS,
    DirichletCalibration,
    EnsembleTemperatureScaling,
    TemperatureScaling,
    check_logits,
    fit_dirichlet_odir,
    fit_temperature,
)

__all__ = [
    "BOOTSTRAP_METRICS",
    "METRICS",
    "RECALIBRATORS",
    "SCOPES",
    "BootstrapInterval",
    "DirichletCalibration",
    "EnsembleTemperatureScaling",
    "Scope",
    "TemperatureScaling",
    "accuracy",
    "bin_statistics",
    "bootstrap_metrics",
    "brier",
    "check_labels",
    "check_logits",
    "check_probs",
    "confidence_gap",
    "fit_dirichlet_odir",
    "fit_temperature",
    "hist_ece",
    "kde_ece",
    "nll",
    "reliability_diagram",
]
