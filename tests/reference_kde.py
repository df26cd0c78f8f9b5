"""Slow, direct port of Zhang et al. 2020 ("Mix-n-Match") ``ece_kde_binary`` with order 1.

Reference only (tests and benchmarks): a loop over the grid exactly as their code, with KDEpy's
``FFTKDE(kernel="triweight")`` as the density, following SPEC §5 steps 1-6 literally. The binary
reduction (step 1) is written as a per-sample loop too, as in their code. The library version
(``simlab.calibration.kde_ece``) must agree with this to 1e-4 absolute.
"""

from __future__ import annotations

import numpy as np
from KDEpy import FFTKDE


def mirror_1d(d: np.ndarray, xmin: float = 0.0, xmax: float = 1.0) -> np.ndarray:
    """Their ``mirror_1d``: reflect values below the middle about xmin, the others about xmax."""
    xmed = (xmin + xmax) / 2
    return np.concatenate((2 * xmin - d[d < xmed], d, 2 * xmax - d[d >= xmed]))


def binary_pairs(probs: np.ndarray, labels: np.ndarray, scope: str) -> tuple[np.ndarray, np.ndarray]:
    """Step 1 with explicit loops: ``(confidence, outcome)`` pairs."""
    conf, hit = [], []
    for i in range(probs.shape[0]):
        row = probs[i] / np.sum(probs[i])
        if scope == "prediction":
            pred = int(np.argmax(row))
            conf.append(row[pred])
            hit.append(1.0 if pred == labels[i] else 0.0)
        elif scope == "output":
            for k in range(probs.shape[1]):
                conf.append(row[k])
                hit.append(1.0 if k == labels[i] else 0.0)
        else:
            raise ValueError(scope)
    return np.asarray(conf, dtype=np.float64), np.asarray(hit, dtype=np.float64)


def ece_kde_binary(conf: np.ndarray, hit: np.ndarray, order: int = 1) -> float:
    """Their estimator on binary pairs: steps 2-6 of SPEC §5, grid point by grid point."""
    # As their code: keep the data strictly inside (0, 1) before mirroring.
    conf = np.clip(conf, 1e-256, 1 - 1e-256)
    x_int = np.linspace(-0.6, 1.6, num=2**14)
    n = conf.shape[0]
    dconf_1 = conf[hit == 1]
    kbw = np.std(dconf_1) * (n * 2) ** -0.2

    pp1 = FFTKDE(bw=kbw, kernel="triweight").fit(mirror_1d(dconf_1)).evaluate(x_int)
    pp1[x_int <= 0.0] = 0
    pp1[x_int >= 1.0] = 0
    pp1 = pp1 * 2

    pp2 = FFTKDE(bw=kbw, kernel="triweight").fit(mirror_1d(conf)).evaluate(x_int)
    pp2[x_int <= 0.0] = 0
    pp2[x_int >= 1.0] = 0
    pp2 = pp2 * 2

    perc = np.mean(hit)
    integral = np.zeros(x_int.shape)
    for i in range(x_int.shape[0]):
        x = x_int[i]
        j = np.abs(x_int - x).argmin()
        if max(pp1[j], pp2[j]) > 1e-6:
            with np.errstate(divide="ignore", invalid="ignore"):
                accu = min(perc * pp1[j] / pp2[j], 1.0)
            if not np.isnan(accu):
                integral[i] = np.abs(x - accu) ** order * pp2[i]
        elif i > 1:
            integral[i] = integral[i - 1]
    ind = np.where((x_int >= 0.0) & (x_int <= 1.0))
    return float(np.trapezoid(integral[ind], x_int[ind]) / np.trapezoid(pp2[ind], x_int[ind]))


def reference_kde_ece(probs: np.ndarray, labels: np.ndarray, scope: str = "prediction") -> float:
    """``kde_ece`` computed the slow way: ``probs [N, K]`` numpy, ``labels [N]`` ints."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf, hit = binary_pairs(probs, labels, scope)
    return ece_kde_binary(conf, hit)
