"""Bootstrap intervals of the calibration metrics within one run (the finite test set).

`bootstrap_metrics` resamples the test samples of one run's saved probabilities (``test_probs.npz``)
with replacement, vectorised over resamples, and gives percentile intervals for accuracy, the four
ECEs (histogram / KDE x prediction / output) and the signed confidence gap, computed exactly as
`simlab.calibration.metrics` computes them on the resampled set: each metric is rewritten as a linear
function of per-sample parts (bin sums, linear-binning weights on the KDE grid), so it shares that
module's grid and kernel constants.
The between-seeds statistics (summaries, Welch, Holm, power) are `simlab.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import simlab.calibration.metrics as cal
from simlab import _validate
from simlab.stats import check_level

__all__ = ["BOOTSTRAP_METRICS", "BootstrapInterval", "bootstrap_metrics"]


BOOTSTRAP_METRICS: tuple[str, ...] = (
    "accuracy",
    "ece_hist_prediction",
    "ece_hist_output",
    "ece_kde_prediction",
    "ece_kde_output",
    "confidence_gap",
)


@dataclass(frozen=True)
class BootstrapInterval:
    """The metric on the full test set and a percentile interval over ``n_resamples`` resamples."""

    estimate: float
    low: float
    high: float
    n_resamples: int


def bootstrap_metrics(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    n_bins: int = 15,
    generator: torch.Generator | None = None,
    chunk: int = 50,
) -> dict[str, BootstrapInterval]:
    """Percentile bootstrap intervals over test samples for accuracy, the four ECEs and the confidence gap.

    ``probs [N, K]`` (rows sum to 1), ``labels [N]``. Each resample draws N samples with replacement;
    a resample is a weight vector ``w [N]`` (how often each sample was drawn), and every metric is the
    `simlab.calibration` metric of the resampled set written as a function of ``w`` (weighted bin
    sums; weighted linear binning, bandwidth and rate for the KDE), so ``chunk`` resamples are computed
    at once with matrix products and batched FFTs instead of one call per resample. ``generator``
    seeds the draws (explicit randomness: nothing global is touched).

    Returns ``{metric: BootstrapInterval}`` for `BOOTSTRAP_METRICS`; a resample where the KDE
    estimator is undefined (no correct pair) is left out of that metric's interval.
    """
    probs, labels = cal._prepare(probs, labels)
    n_resamples = _validate.check_num_classes("n_resamples", n_resamples)
    confidence = check_level("confidence", confidence)
    chunk = _validate.check_num_classes("chunk", chunk)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    n_bins = _validate.check_num_classes("n_bins", n_bins)

    p = probs.detach().to("cpu", torch.float64)
    y = labels.detach().to("cpu")
    n, k = p.shape
    estimates = {
        "accuracy": cal.accuracy(probs, labels),
        "ece_hist_prediction": cal.hist_ece(probs, labels, n_bins, scope="prediction"),
        "ece_hist_output": cal.hist_ece(probs, labels, n_bins, scope="output"),
        "ece_kde_prediction": cal.kde_ece(probs, labels, scope="prediction"),
        "ece_kde_output": cal.kde_ece(probs, labels, scope="output"),
        "confidence_gap": cal.confidence_gap(probs, labels),
    }
    parts = _per_sample_parts(p, y, n_bins)
    draws: dict[str, list[torch.Tensor]] = {m: [] for m in BOOTSTRAP_METRICS}
    done = 0
    while done < n_resamples:
        r = min(chunk, n_resamples - done)
        idx = torch.randint(0, n, (r, n), generator=generator)
        w = torch.zeros(r, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(r, n, dtype=torch.float64))
        for name, values in _weighted_metrics(w, parts, n, k).items():
            draws[name].append(values)
        done += r
    q = (1 - confidence) / 2
    out = {}
    for name in BOOTSTRAP_METRICS:
        values = torch.cat(draws[name])
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            low = high = math.nan
        else:
            low, high = (
                float(v) for v in torch.quantile(values, torch.tensor([q, 1 - q], dtype=values.dtype))
            )
        out[name] = BootstrapInterval(float(estimates[name]), low, high, n_resamples)
    return out


@dataclass(frozen=True)
class _Parts:
    """Per-sample quantities every metric of a weighted resample is a linear function of."""

    correct: torch.Tensor  # [N] 1[argmax = y]
    top: torch.Tensor  # [N] max_k p_ik
    true_conf: torch.Tensor  # [N] p_{i, y_i}
    hist_pred_conf: torch.Tensor  # [N, M] c_i in its bin
    hist_pred_hits: torch.Tensor  # [N, M] h_i in its bin
    hist_out_conf: torch.Tensor  # [N, M] sum_k p_ik over the k in bin m
    hist_out_hits: torch.Tensor  # [N, M] 1 in the bin of p_{i, y_i}
    kde_pred_all: torch.Tensor  # sparse [N, G + 1] linear-binning weights of c_i and its mirror
    kde_pred_correct: torch.Tensor  # sparse [N, G + 1] the same, only for correct i
    kde_out_all: torch.Tensor  # sparse [N, G + 1] of every p_ik and its mirror
    kde_out_correct: torch.Tensor  # sparse [N, G + 1] of p_{i, y_i} and its mirror


def _linear_bin_rows(values: torch.Tensor, rows: torch.Tensor, n: int, x_min: float, dx: float, g: int):
    """Sparse ``[N, G + 1]``: row ``rows[j]`` gets the linear-binning weights of ``values[j]`` and of its
    reflection, exactly as `simlab.calibration.metrics._linear_bin_mirrored` adds them into grid counts."""
    mirrored = torch.where(values < 0.5, -values, 2.0 - values)
    idx_r, idx_c, vals = [], [], []
    for v in (values, mirrored):
        t = (v - x_min) / dx
        lo = torch.floor(t)
        frac = t - lo
        lo = lo.long()
        idx_r += [rows, rows]
        idx_c += [lo, lo + 1]
        vals += [1.0 - frac, frac]
    index = torch.stack([torch.cat(idx_r), torch.cat(idx_c)])
    return torch.sparse_coo_tensor(index, torch.cat(vals), (n, g + 1), check_invariants=True).coalesce()


def _per_sample_parts(p: torch.Tensor, y: torch.Tensor, n_bins: int) -> _Parts:
    n, k = p.shape
    edges = torch.arange(1, n_bins, dtype=torch.float64) / n_bins  # as metrics._bin_sums
    top, pred = p.max(dim=1)
    correct = (pred == y).double()
    true_conf = p.gather(1, y[:, None]).squeeze(1)
    rows = torch.arange(n)
    b_top = torch.bucketize(top, edges)
    hist_pred_conf = torch.zeros(n, n_bins, dtype=torch.float64).index_put_((rows, b_top), top)
    hist_pred_hits = torch.zeros(n, n_bins, dtype=torch.float64).index_put_((rows, b_top), correct)
    b_all = torch.bucketize(p, edges)  # [N, K]
    hist_out_conf = torch.zeros(n, n_bins, dtype=torch.float64).scatter_add_(1, b_all, p)
    hist_out_hits = torch.zeros(n, n_bins, dtype=torch.float64).index_put_(
        (rows, torch.bucketize(true_conf, edges)), torch.ones(n, dtype=torch.float64)
    )
    x = cal._kde_grid(torch.device("cpu"))
    g = x.shape[0]
    x_min = x[0].item()
    dx = (x[-1].item() - x_min) / (g - 1)
    hit_rows = rows[correct.bool()]
    return _Parts(
        correct=correct,
        top=top,
        true_conf=true_conf,
        hist_pred_conf=hist_pred_conf,
        hist_pred_hits=hist_pred_hits,
        hist_out_conf=hist_out_conf,
        hist_out_hits=hist_out_hits,
        kde_pred_all=_linear_bin_rows(top, rows, n, x_min, dx, g),
        kde_pred_correct=_linear_bin_rows(top[hit_rows], hit_rows, n, x_min, dx, g),
        kde_out_all=_linear_bin_rows(p.reshape(-1), rows.repeat_interleave(k), n, x_min, dx, g),
        kde_out_correct=_linear_bin_rows(true_conf, rows, n, x_min, dx, g),
    )


def _weighted_metrics(w: torch.Tensor, parts: _Parts, n: int, k: int) -> dict[str, torch.Tensor]:
    """Every metric of the ``R`` weighted resamples ``w [R, N]`` (weights sum to N per row): ``[R]`` each."""
    out = {"accuracy": w @ parts.correct / n}
    out["ece_hist_prediction"] = (w @ parts.hist_pred_hits - w @ parts.hist_pred_conf).abs().sum(1) / n
    out["ece_hist_output"] = (w @ parts.hist_out_hits - w @ parts.hist_out_conf).abs().sum(1) / (n * k)
    # KDE, prediction scope: the correct pairs are the correct samples, weighted.
    wc = w * parts.correct
    out["ece_kde_prediction"] = _weighted_kde_ece(
        w, wc, parts.top, parts.kde_pred_all, parts.kde_pred_correct, n_pairs=n
    )
    # output scope: each sample has exactly one correct pair, (p_{i,y_i}, 1).
    out["ece_kde_output"] = _weighted_kde_ece(
        w, w, parts.true_conf, parts.kde_out_all, parts.kde_out_correct, n_pairs=n * k
    )
    out["confidence_gap"] = w @ (parts.top - parts.correct) / n
    return out


def _weighted_kde_ece(
    w: torch.Tensor,
    w_correct: torch.Tensor,
    correct_values: torch.Tensor,
    bins_all: torch.Tensor,
    bins_correct: torch.Tensor,
    *,
    n_pairs: int,
) -> torch.Tensor:
    """`simlab.calibration.metrics.kde_ece` (SPEC §5 steps 2-6) for ``R`` weighted resamples at once.

    ``w [R, N]`` sample weights, ``w_correct [R, N]`` the weight of each sample's correct pair (0 where
    it has none), ``correct_values [N]`` that pair's confidence; ``bins_*`` the per-sample sparse
    linear-binning weights on the grid. Returns ``[R]``, nan where the estimator is undefined.
    """
    x = cal._kde_grid(torch.device("cpu"))
    g = x.shape[0]
    dx = (x[-1].item() - x[0].item()) / (g - 1)
    n_correct = w_correct.sum(1)  # [R]
    # Step 2: bandwidth from the population std of the (weighted) correct confidences; centred on
    # the unweighted mean first so the variance does not come from a difference of large numbers.
    centre = correct_values.mean()
    dev = correct_values - centre
    m1 = (w_correct @ dev) / n_correct
    var = ((w_correct @ dev**2) / n_correct - m1**2).clamp_min(0)
    bw = var.sqrt() * (2 * n_pairs) ** (-0.2)
    rate = n_correct / n_pairs
    # Steps 3-4: weighted grid counts, each density normalised over its mirrored data (2 per pair).
    counts1 = torch.sparse.mm(bins_correct.t(), w.t()).t()[:, :g] / (2 * n_correct[:, None])
    counts2 = torch.sparse.mm(bins_all.t(), w.t()).t()[:, :g] / (2 * n_pairs)
    kernel, half = _triweight_kernels(bw, dx)
    f1, f2 = _batched_convolve(torch.stack([counts1, counts2]), kernel, half)
    outside = (x <= 0.0) | (x >= 1.0)
    f1 = torch.where(outside, torch.zeros_like(f1), f1 * 2.0)
    f2 = torch.where(outside, torch.zeros_like(f2), f2 * 2.0)
    # Step 5 (as kde_ece): integrand where a density is non-negligible, else the previous point's.
    active = torch.maximum(f1, f2) > 1e-6
    acc = torch.clamp(rate[:, None] * f1 / f2, max=1.0)
    value = torch.where(active & ~torch.isnan(acc), (x - acc).abs() * f2, torch.zeros_like(f2))
    idx = torch.arange(g).expand_as(value)
    last_active = torch.cummax(torch.where(active, idx, torch.full_like(idx, -1)), dim=1).values
    integrand = torch.where(
        last_active >= 0, value.gather(1, last_active.clamp_min(0)), torch.zeros_like(value)
    )
    # Step 6
    inside = (x >= 0.0) & (x <= 1.0)
    xs = x[inside]
    den = torch.trapezoid(f2[:, inside], xs, dim=1)
    ece = torch.trapezoid(integrand[:, inside], xs, dim=1) / den
    undefined = (n_correct == 0) | ~(bw > 0) | ~(den > 0)
    return torch.where(undefined, torch.full_like(ece, math.nan), ece)


def _triweight_kernels(bw: torch.Tensor, dx: float) -> tuple[torch.Tensor, int]:
    """``[R, 2H + 1]`` triweight kernels of std ``bw [R]`` at offsets ``l dx`` (``|l| <= H``, the largest
    half-width), as `simlab.calibration.metrics._triweight_fft_kde` samples them (0 beyond each support)."""
    g = cal._KDE_GRID_POINTS
    h = cal._TRIWEIGHT_SUPPORT_IN_STD * torch.where(bw > 0, bw, torch.ones_like(bw))
    half = int(min(math.floor(float(h.max()) / dx), g))
    offsets = torch.arange(-half, half + 1, dtype=torch.float64) * dx
    u2 = (offsets[None, :] / h[:, None]) ** 2
    kernel = torch.where(u2 < 1, (35.0 / 32.0) * (1.0 - u2).clamp_min(0) ** 3, torch.zeros_like(u2))
    return kernel / h[:, None], half


def _batched_convolve(counts: torch.Tensor, kernel: torch.Tensor, half: int) -> torch.Tensor:
    """Row-wise linear convolution, "same" mode: ``counts [..., R, G]`` with ``kernel [R, 2 half + 1]``
    (one kernel transform for every leading index)."""
    from scipy.fft import next_fast_len

    g = counts.shape[-1]
    # any length >= the full convolution is exact; a 5-smooth one is about half of the next power of 2
    n_fft = next_fast_len(g + 2 * half, real=True)
    spectrum = torch.fft.rfft(counts, n=n_fft) * torch.fft.rfft(kernel, n=n_fft)
    return torch.fft.irfft(spectrum, n=n_fft)[..., half : half + g]
