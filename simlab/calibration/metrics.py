"""Calibration metrics of SPEC §5: histogram and KDE expected calibration error, accuracy, NLL, Brier;
and, beyond SPEC, the signed confidence gap (mean confidence - accuracy: over- or under-confident).

Every metric takes ``probs [N, K]`` (rows sum to 1) and integer ``labels [N]`` and returns a Python
``float`` as a fraction. Two scopes (paper A §3.1):

- ``scope="prediction"``: the top-label problem, ``N`` pairs (``max_k p_ik``, ``1[argmax_k p_ik = y_i]``);
- ``scope="output"``: every output, ``N*K`` pairs (``p_ik``, ``1[y_i = k]``) (paper A eq. 2-4).

Inputs are validated before any work (shape, dtype, range, finiteness, rows summing to one); nothing
here guesses whether a tensor holds logits or probabilities. Work is vectorised and done in float64
on the input's device, in row chunks so that ``N*K`` entries never need more than a few tens of MB.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch

from simlab import _validate

logger = logging.getLogger(__name__)

Scope = Literal["prediction", "output"]
SCOPES: tuple[str, ...] = ("prediction", "output")

# Row chunks hold at most this many entries: bounds memory for N*K up to 1e8 and beyond.
_CHUNK_ELEMENTS = 1 << 22

# Zhang et al. 2020 (Mix-n-Match) reference constants, SPEC §5 step 4.
_KDE_GRID_MIN = -0.6
_KDE_GRID_MAX = 1.6
_KDE_GRID_POINTS = 2**14
# Triweight kernel (35/32)(1-u^2)^3 on [-1, 1] has variance 1/9: support = 3 std.
_TRIWEIGHT_SUPPORT_IN_STD = 3.0


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def _as_tensor(x: object, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor (or numpy array), got {type(x).__name__}")


def _row_sum_tolerance(dtype: torch.dtype) -> float:
    # ~1e-3 for float32/float64; low-precision dtypes round each entry, so allow a few ulps of 1.
    return max(1e-3, 4.0 * torch.finfo(dtype).eps)


def check_probs(probs: object, name: str = "probs") -> torch.Tensor:
    """Validate ``probs [N, K]``: 2-D float, finite, non-negative, rows summing to 1. Returns it.

    Not `_validate.check_rows_stochastic`: the metrics' row-sum tolerance is `_row_sum_tolerance`
    (1e-3, not 1e-5), and this check is on the ECE hot path, so it reads the entries in one pass.
    """
    probs = _as_tensor(probs, name)
    if not torch.is_floating_point(probs):
        raise TypeError(f"{name} must be a floating-point tensor of probabilities, got dtype {probs.dtype}")
    if probs.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, K], got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(probs.shape)}")
    # Any NaN/inf entry makes its row sum non-finite, so one pass checks both (float32 accumulation
    # is ample for a 1e-3 tolerance and twice as fast as float64 on large inputs).
    acc_dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    sums = probs.sum(dim=1, dtype=acc_dtype)
    if not bool(torch.isfinite(sums).all()):
        if not bool(torch.isfinite(probs).all()):
            raise ValueError(f"{name} must be finite, got NaN or inf entries")
        sums = probs.sum(dim=1, dtype=torch.float64)  # finite entries whose float32 sum overflowed
    lowest = probs.min().item()
    if lowest < 0:
        raise ValueError(f"{name} must be non-negative (probabilities, not logits), got min {lowest}")
    tol = _row_sum_tolerance(probs.dtype)
    worst = (sums - 1.0).abs().max().item()
    if worst > tol:
        raise ValueError(
            f"{name} rows must sum to 1 (tolerance {tol:g}); got a row summing to "
            f"{sums[(sums - 1.0).abs().argmax()].item():.6g} (pass softmax(logits), not logits)"
        )
    return probs


def check_labels(labels: object, n: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Validate integer ``labels [N]`` with values in ``[0, K)``. Returns them as int64."""
    return _validate.check_labels(name, _as_tensor(labels, name), num_classes, n=n).long()


def _prepare(probs: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    probs = check_probs(probs)
    labels = check_labels(labels, probs.shape[0], probs.shape[1]).to(probs.device)
    return probs, labels


def _row_chunks(probs: torch.Tensor, labels: torch.Tensor):
    """Yield ``(p [R, K], y [R])`` row chunks (input dtype) of at most ``_CHUNK_ELEMENTS`` entries."""
    rows = max(1, _CHUNK_ELEMENTS // probs.shape[1])
    for start in range(0, probs.shape[0], rows):
        yield probs[start : start + rows], labels[start : start + rows]


# --------------------------------------------------------------------------------------------------
# simple metrics
# --------------------------------------------------------------------------------------------------
def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose argmax (first index on ties) equals the label.

    ``probs [N, K]``, ``labels [N]``.
    """
    probs, labels = _prepare(probs, labels)
    return (probs.argmax(dim=1) == labels).double().mean().item()


def confidence_gap(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean top-label confidence minus accuracy, ``1/N sum_i (max_k p_ik - 1[argmax_k p_ik = y_i])``:
    the sign the ECE leaves out (> 0 over-confident, < 0 under-confident).

    ``probs [N, K]``, ``labels [N]``. It is the prediction-scope histogram ECE without the absolute
    value, ``sum_m |B_m|/N (conf(B_m) - acc(B_m))``, for any binning, so ``|gap| <= hist_ece(scope=
    "prediction")``, with equality for one bin (or when every bin errs the same way).
    """
    probs, labels = _prepare(probs, labels)
    top, pred = probs.double().max(dim=1)
    return (top - (pred == labels).double()).mean().item()


def nll(probs: torch.Tensor, labels: torch.Tensor, *, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood ``-1/N sum_i log max(p_{i, y_i}, eps)``.

    ``probs [N, K]``, ``labels [N]``. ``eps`` keeps a zero probability on the true class finite
    (``-log 1e-12 ~ 27.6``) instead of returning inf.
    """
    probs, labels = _prepare(probs, labels)
    if not (isinstance(eps, (int, float)) and 0 <= eps < 1):
        raise ValueError(f"eps must be a float in [0, 1), got {eps!r}")
    p_true = probs.gather(1, labels[:, None]).squeeze(1).double()
    return (-torch.log(p_true.clamp_min(eps))).mean().item()


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Brier score: mean over samples of ``sum_k (p_ik - 1[y_i = k])^2`` (range [0, 2]).

    ``probs [N, K]``, ``labels [N]``. Summed over classes, averaged over samples (Brier 1950;
    the multi-class convention of Guo et al. 2017), not averaged over the ``N*K`` entries.
    """
    probs, labels = _prepare(probs, labels)
    total = torch.zeros((), dtype=torch.float64, device=probs.device)
    for p, y in _row_chunks(probs, labels):
        p = p.double()
        # sum_k (p - onehot)^2 = sum_k p^2 - 2 p_y + 1: no one-hot matrix needed.
        p_true = p.gather(1, y[:, None]).squeeze(1)
        total += ((p * p).sum(dim=1) - 2.0 * p_true + 1.0).sum()
    return (total / probs.shape[0]).item()


# --------------------------------------------------------------------------------------------------
# histogram ECE
# --------------------------------------------------------------------------------------------------
# Flat entries processed at a time inside a row chunk: ~0.5 MB of float64 per temporary, so the dozen
# elementwise passes below run in cache instead of streaming ``N*K``-sized temporaries through memory.
_CACHE_ELEMENTS = 1 << 16


def _bin_index(c: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin of each float64 confidence: m (0-based) with ``e_m < c <= e_{m+1}``, ``e_m = fl(m/M)``.

    Exactly ``torch.bucketize(c, arange(1, M) / M)`` (bin 0 also takes everything <= 1/M, the last
    everything above (M-1)/M), without its per-element binary search or any gather: the guess
    ``ceil(c M) - 1`` is off by at most one (``fl(c M)`` is within ``M 2^-53`` of ``c M``, and ``fl(m/M)``
    within an ulp of ``m/M``), and one comparison with each neighbouring edge, recomputed elementwise
    as the same correctly rounded division ``m / M``, corrects it.
    """
    m = torch.ceil(c * n_bins).sub_(1.0)  # float64 guess
    m += (c > (m + 1.0).div_(n_bins)).to(m.dtype)
    m -= (c <= m / n_bins).to(m.dtype)
    return m.clamp_(0, n_bins - 1).to(torch.int64)


def _bin_sums(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int, scope: str, *, with_counts: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Per-bin (count or None, sum of confidences, sum of outcomes) of validated inputs, float64."""
    device = probs.device
    f64 = torch.float64
    # Bin m (1-based) is ((m-1)/M, m/M], the first also takes 0; confidences are compared in float64
    # (every input dtype widens to it exactly) and summed in float64.
    count = torch.zeros(n_bins, dtype=f64, device=device) if with_counts else None
    conf = torch.zeros(n_bins, dtype=f64, device=device)
    hits = torch.zeros(n_bins, dtype=f64, device=device)
    for p, y in _row_chunks(probs, labels):
        if scope == "prediction":
            c, pred = p.max(dim=1)  # max is exact in any dtype; widen only the N maxima
            pieces = [(c.to(f64), (pred == y).to(f64))]
        else:
            # Outcomes are 1 only at (i, y_i): one per row into the bin of p_{i, y_i}.
            c_true = p.gather(1, y[:, None]).squeeze(1).to(f64)
            hits.scatter_add_(0, _bin_index(c_true, n_bins), torch.ones_like(c_true))
            flat = p.reshape(-1)
            step = _CACHE_ELEMENTS
            pieces = ((flat[s : s + step].to(f64), None) for s in range(0, flat.shape[0], step))
        for c, h in pieces:
            idx = _bin_index(c, n_bins)
            conf.scatter_add_(0, idx, c)
            if h is not None:
                hits.scatter_add_(0, idx, h)
            if count is not None:
                count.scatter_add_(0, idx, torch.ones_like(c))
    return count, conf, hits


def bin_statistics(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, scope: Scope = "prediction"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin ``(count, sum of confidences, sum of outcomes)``, each float64 ``[n_bins]``.

    ``probs [N, K]``, ``labels [N]``. Bin m (1-based) is ``((m-1)/M, m/M]``; the first bin also
    takes 0 (SPEC §5, paper A eq. 3). One vectorised pass (exact bin index + scatter-add), chunked
    over rows; works on any device.
    """
    probs, labels = _prepare(probs, labels)
    n_bins = _validate.check_num_classes("n_bins", n_bins)
    scope = _validate.check_choice("scope", scope, SCOPES)
    return _bin_sums(probs, labels, n_bins, scope, with_counts=True)


def hist_ece(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, scope: Scope = "prediction"
) -> float:
    """Histogram ECE ``sum_m |B_m|/n |acc(B_m) - conf(B_m)|`` (paper A eq. 3-4) as a fraction.

    ``probs [N, K]``, ``labels [N]``; ``n = N`` pairs for ``scope="prediction"`` (top label),
    ``n = N*K`` for ``scope="output"``. Bins ``((m-1)/M, m/M]``, the first also takes 0.
    With these weights the output scope is at most ``2 mean_i(1 - p_{i,y_i}) / K <= 2 / K`` (each row's
    absolute residuals add to ``2 (1 - p_y)``): small for many classes, whatever the model.
    """
    probs, labels = _prepare(probs, labels)
    n_bins = _validate.check_num_classes("n_bins", n_bins)
    scope = _validate.check_choice("scope", scope, SCOPES)
    _, conf, hits = _bin_sums(probs, labels, n_bins, scope, with_counts=False)
    n_pairs = probs.shape[0] * (probs.shape[1] if scope == "output" else 1)
    # |B_m|/n * |acc - conf| = |sum_{B_m} (h - c)| / n.
    return ((hits - conf).abs().sum() / n_pairs).item()


# --------------------------------------------------------------------------------------------------
# KDE ECE (Zhang et al. 2020, "Mix-n-Match", ece_kde_binary with order 1)
# --------------------------------------------------------------------------------------------------
def _kde_grid(device: torch.device) -> torch.Tensor:
    return torch.linspace(_KDE_GRID_MIN, _KDE_GRID_MAX, _KDE_GRID_POINTS, dtype=torch.float64, device=device)


def _linear_bin_mirrored(values: torch.Tensor, counts: torch.Tensor, x_min: float, dx: float) -> None:
    """Add the linear-binning weights of ``values`` and of their reflections into ``counts [G + 1]``.

    Reflection (SPEC §5 step 3): ``c < 0.5 -> -c``, ``c >= 0.5 -> 2 - c``. Linear binning as KDEpy's
    ``linbin_cython``: a point at fractional grid position ``t = (v - x_min) / dx`` gives
    ``1 - frac(t)`` to ``floor(t)`` and ``frac(t)`` to ``floor(t) + 1``, in cache-sized slices.
    """
    flat = values.reshape(-1)
    for start in range(0, flat.shape[0], _CACHE_ELEMENTS):
        v = flat[start : start + _CACHE_ELEMENTS].double()  # the reflection 2 - c must not round
        both = torch.cat([v, torch.where(v < 0.5, -v, 2.0 - v)])
        t = both.sub_(x_min).div_(dx)
        lo = torch.floor(t)
        frac = t.sub_(lo)
        lo = lo.to(torch.int64)
        counts.scatter_add_(0, lo, 1.0 - frac)
        counts.scatter_add_(0, lo + 1, frac)


def _triweight_fft_kde(counts: torch.Tensor, bw: float, dx: float) -> torch.Tensor:
    """Convolve grid counts ``[..., G]`` with the triweight kernel of std ``bw`` sampled at the grid spacing.

    Exactly KDEpy's FFTKDE: the kernel ``(35/32)(1-u^2)^3 / h`` with ``h = 3 bw`` (so its std is bw) is
    evaluated at offsets ``l*dx`` for ``|l| <= L = floor(h / dx)`` and convolved ("same" mode).
    """
    g = counts.shape[-1]
    h = _TRIWEIGHT_SUPPORT_IN_STD * bw
    half = int(min(math.floor(h / dx), g))
    offsets = torch.arange(-half, half + 1, dtype=torch.float64, device=counts.device) * dx
    u2 = (offsets / h) ** 2
    kernel = torch.where(u2 < 1, (35.0 / 32.0) * (1.0 - u2).clamp_min(0) ** 3, torch.zeros_like(u2)) / h
    # Linear convolution through a zero-padded real FFT; "same" output = full[half : half + g].
    n_full = g + 2 * half
    n_fft = 1 << (n_full - 1).bit_length()
    full = torch.fft.irfft(torch.fft.rfft(counts, n=n_fft) * torch.fft.rfft(kernel, n=n_fft), n=n_fft)
    return full[..., half : half + g]


def kde_ece(probs: torch.Tensor, labels: torch.Tensor, scope: Scope = "prediction") -> float:
    """KDE ECE of Zhang et al. 2020 (order 1, their ``ece_kde_binary``), SPEC §5 steps 1-6.

    ``probs [N, K]``, ``labels [N]``. Pairs ``(c, h)``: top label (``N`` pairs) or every output
    (``N*K`` pairs). Two triweight KDEs on the mirrored data, ``f1`` of correct confidences and ``f2``
    of all confidences, evaluated by linear binning onto ``linspace(-0.6, 1.6, 2**14)`` and an FFT
    convolution (as KDEpy's ``FFTKDE`` does); then ``acc(x) = min(rate f1/f2, 1)`` and
    ``ECE = int |x - acc(x)| f2(x) dx / int f2(x) dx`` over ``[0, 1]`` by the trapezoid rule.

    Returns ``nan`` (and logs a warning) when the estimator is undefined: no correct pair, or a zero
    bandwidth because all correct confidences are equal.
    """
    probs, labels = _prepare(probs, labels)
    scope = _validate.check_choice("scope", scope, SCOPES)
    device = probs.device
    x = _kde_grid(device)
    g = x.shape[0]
    x_min = x[0].item()
    dx = (x[-1].item() - x_min) / (g - 1)  # KDEpy: (max - min) / num_intervals

    # Steps 1-3 in one pass over the input: correct confidences (their std sets the bandwidth) and the
    # mirrored, linearly binned confidences of all pairs (+1 slot as KDEpy: the last is off the grid).
    n_pairs = probs.shape[0] * (probs.shape[1] if scope == "output" else 1)
    counts2 = torch.zeros(g + 1, dtype=torch.float64, device=device)
    correct_conf = []
    for p, y in _row_chunks(probs, labels):
        if scope == "prediction":
            c, pred = p.max(dim=1)
            correct_conf.append(c[pred == y].double())
            _linear_bin_mirrored(c, counts2, x_min, dx)
        else:
            correct_conf.append(p.gather(1, y[:, None]).squeeze(1).double())
            _linear_bin_mirrored(p, counts2, x_min, dx)
    c1 = torch.cat(correct_conf)
    n_correct = c1.shape[0]
    if n_correct == 0:
        logger.warning("kde_ece(scope=%r): no correct pair, the estimator is undefined; returning nan", scope)
        return math.nan
    # paper: Scott-like rule on the correct confidences, population std, with n = number of pairs.
    bw = c1.std(correction=0).item() * (2 * n_pairs) ** (-0.2)
    if not bw > 0:
        logger.warning("kde_ece(scope=%r): correct confidences have zero spread (bw=0); returning nan", scope)
        return math.nan
    rate = n_correct / n_pairs

    # Step 4: both densities in one batched FFT convolution; each integrates to 1 over the mirrored
    # data (2 points per pair).
    counts1 = torch.zeros(g + 1, dtype=torch.float64, device=device)
    _linear_bin_mirrored(c1, counts1, x_min, dx)
    both = torch.stack([counts1[:g] / (2 * n_correct), counts2[:g] / (2 * n_pairs)])
    f1, f2 = _triweight_fft_kde(both, bw, dx)
    outside = (x <= 0.0) | (x >= 1.0)
    f1 = torch.where(outside, torch.zeros_like(f1), f1 * 2.0)
    f2 = torch.where(outside, torch.zeros_like(f2), f2 * 2.0)

    # Step 5: integrand where a density is non-negligible, else the previous point's value.
    active = torch.maximum(f1, f2) > 1e-6
    acc = torch.clamp(rate * f1 / f2, max=1.0)  # inf (f2 = 0) -> 1; nan stays nan
    value = torch.where(active & ~torch.isnan(acc), (x - acc).abs() * f2, torch.zeros_like(f2))
    idx = torch.arange(g, device=device)
    last_active = torch.cummax(torch.where(active, idx, torch.full_like(idx, -1)), dim=0).values
    integrand = torch.where(last_active >= 0, value[last_active.clamp_min(0)], torch.zeros_like(value))

    # Step 6: ratio of trapezoid integrals over the grid points in [0, 1].
    inside = (x >= 0.0) & (x <= 1.0)
    xs = x[inside]
    den = torch.trapezoid(f2[inside], xs)
    if not den.item() > 0:
        logger.warning("kde_ece(scope=%r): density integrates to 0 on [0, 1]; returning nan", scope)
        return math.nan
    return (torch.trapezoid(integrand[inside], xs) / den).item()


METRICS = {"accuracy": accuracy, "nll": nll, "brier": brier}
