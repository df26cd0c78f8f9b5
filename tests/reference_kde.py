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


# --------------------------------------------------------------------------------------------------
# The published loop structure (benchmark baseline, issue 13)
# --------------------------------------------------------------------------------------------------
def _mirror_column(d: np.ndarray) -> np.ndarray:
    """Reflection about [0, 1] of an ``[n, 1]`` column, as their ``mirror_1d(d, 0, 1)``."""
    return np.concatenate(((-d[d < 0.5]).reshape(-1, 1), d, (2.0 - d[d >= 0.5]).reshape(-1, 1)))


def published_ece_kde_binary(p: np.ndarray, label_onehot: np.ndarray, order: int = 1) -> float:
    """Zhang et al.'s ``ece_kde_binary(p, label)`` with the cost structure of the published code.

    Re-written here (not copied) step by step as their ``util_evaluation.py`` runs it: one-hot labels
    turned back into indices by a per-row ``np.where``; for ``K != 2`` a per-row torch loop (argmax,
    correctness, confidence divided by the row sum, stored in a float32 ``[N, 1]`` tensor as theirs
    is); for ``K == 2`` the binary path (``p[:, 1]`` against the label index). Then a second per-row
    loop for the integration points, two KDEpy ``FFTKDE`` fits, and the Python loop over the 2**14
    grid points in which each active point looks its densities up by ``argmin |x_int - x|`` (four
    lookups, two for inactive points), exactly as often as theirs.
    """
    import torch

    p = np.clip(p, 1e-256, 1 - 1e-256)
    p_int = np.copy(p)
    x_int = np.linspace(-0.6, 1.6, num=2**14)
    n = p.shape[0]
    label_index = np.array([np.where(row == 1)[0][0] for row in label_onehot])
    with torch.no_grad():
        if p.shape[1] != 2:
            p_t = torch.from_numpy(p)
            p_b = torch.zeros(n, 1)  # float32, as published
            label_binary = np.zeros((n, 1))
            for i in range(n):
                pred = int(torch.argmax(p_t[i]).numpy())
                if pred == label_index[i]:
                    label_binary[i] = 1
                p_b[i] = p_t[i, pred] / torch.sum(p_t[i, :])
        else:
            p_b = torch.from_numpy((p / np.sum(p, 1)[:, None])[:, 1])
            label_binary = label_index
    dconf_1 = p_b[np.where(label_binary == 1)].reshape(-1, 1).numpy()
    kbw = np.std(p_b.numpy()) * (n * 2) ** -0.2  # computed and overwritten, as published
    kbw = np.std(dconf_1) * (n * 2) ** -0.2
    pp1 = FFTKDE(bw=kbw, kernel="triweight").fit(_mirror_column(dconf_1)).evaluate(x_int)
    pp1[x_int <= 0.0] = 0
    pp1[x_int >= 1.0] = 0
    pp1 = pp1 * 2

    p_int = p_int / np.sum(p_int, 1)[:, None]
    with torch.no_grad():
        p_t = torch.from_numpy(p_int)
        pred_b_int = np.zeros((n, 1))
        for i in range(n):
            if p_int.shape[1] != 2:
                pred_b_int[i] = p_int[i, int(torch.argmax(p_t[i]).numpy())]
            else:
                pred_b_int[i] = p_int[i, 1]
    pp2 = FFTKDE(bw=kbw, kernel="triweight").fit(_mirror_column(pred_b_int)).evaluate(x_int)
    pp2[x_int <= 0.0] = 0
    pp2[x_int >= 1.0] = 0
    pp2 = pp2 * 2

    perc = np.mean(label_binary) if p.shape[1] != 2 else np.mean(label_index)
    integral = np.zeros(x_int.shape)
    for i in range(x_int.shape[0]):
        x = x_int[i]
        if np.max([pp1[np.abs(x_int - x).argmin()], pp2[np.abs(x_int - x).argmin()]]) > 1e-6:
            with np.errstate(divide="ignore", invalid="ignore"):
                accu = np.min([perc * pp1[np.abs(x_int - x).argmin()] / pp2[np.abs(x_int - x).argmin()], 1.0])
            if not np.isnan(accu):
                integral[i] = np.abs(x - accu) ** order * pp2[i]
        elif i > 1:
            integral[i] = integral[i - 1]
    ind = np.where((x_int >= 0.0) & (x_int <= 1.0))
    return float(np.trapezoid(integral[ind], x_int[ind]) / np.trapezoid(pp2[ind], x_int[ind]))


def published_kde_ece(probs: np.ndarray, labels: np.ndarray, scope: str = "prediction") -> float:
    """``kde_ece`` through ``published_ece_kde_binary``: the top-label path for ``scope="prediction"``
    (needs K > 2, as theirs), their binary path on the ``N*K`` pairs ``[1 - p_ik, p_ik]`` with outcome
    ``1[y_i = k]`` for ``scope="output"`` (building the pairs is this adapter's, vectorised)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    n, k = probs.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    if scope == "prediction":
        if k == 2:
            raise ValueError("the published top-label path needs K > 2")
        return published_ece_kde_binary(probs, onehot)
    c = probs.reshape(-1)
    h = onehot.reshape(-1).astype(np.int64)
    pairs = np.stack([1.0 - c, c], axis=1)
    return published_ece_kde_binary(pairs, np.eye(2)[h])
