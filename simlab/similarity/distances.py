"""Class distances and class similarities (SPEC §1, paper A §5).

``N`` samples, ``D`` features per sample, ``K`` classes. A distance matrix ``D[k, j]`` is the mean
distance between the samples of class k and the samples of class j (paper A eq. 13-15); a similarity
matrix ``S[k]`` is a distribution over the classes other than k (paper A eq. 17).

All pairs of samples are used, but no ``N x N`` matrix is ever built: temporaries hold about
``chunk_size**2`` numbers whatever ``N`` is.

- p = 2: blocks of ``||a||^2 + ||b||^2 - 2 a.b`` from matrix products on centred features in
  float64, clamped at 0, square-rooted and summed per class pair with one-hot matrix products; only
  blocks on or above the diagonal are computed. Why float64: on 3,072-d pixel vectors (0..255 plus
  an offset of 1,000) float32 products are off by 8e-6 relative (1e-7 after centring) against
  float64 brute force, float64 by < 1e-12. uint8 features (8-bit images) are exact and several
  times faster: shifted to int8, their squared distances are exact integers from the fastest Gram
  product that is exact on this machine (int8 ``torch._int_mm``, bf16/float32 over feature slices
  small enough that no partial sum rounds, or float64), chosen at run time and logged at INFO; one
  float64 sqrt per pair (see the exactness argument in `simlab.similarity.exact_l2`).
- p = 1, uint8 features (8-bit images): exact, from per-class per-dimension 256-bin histograms:
  ``sum_{pairs} |u - v| = sum_dims h_k^T |U - V| h_j`` (integer counts, exact in float64).
- p = 1, other features: exact per dimension from sorted values and prefix sums
  (``sum_b |a - b| = a (2c - n) - 2 P[c] + P[n]`` with ``c = #{b < a}``), O(N log N) per dimension
  and class pair instead of O(N^2).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

from simlab._validate import (
    as_generator,
    check_labels,
    check_num_classes,
    check_real,
    check_square,
    check_tensor,
    generator_device,
)
from simlab.config import SIMILARITY_NORMALISE
from simlab.progress import Progress
from simlab.similarity.exact_l2 import l2_pair_sums_uint8

logger = logging.getLogger(__name__)

__all__ = ["class_distance_matrix", "similarity_from_distances"]


def class_distance_matrix(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    p: float = 2.0,
    max_per_class: int | None = None,
    generator: torch.Generator | int | None = None,
    *,
    chunk_size: int = 2048,
) -> torch.Tensor:
    """Mean pairwise L_p distance between the samples of every two classes (paper A eq. 13, 15).

    Args:
        features: ``[N, ...]`` float or integer tensor, flattened to ``[N, D]`` per sample.
        labels: ``[N]`` integer class indices in ``[0, num_classes)``.
        num_classes: ``K``; every class must have at least one sample.
        p: 1 or 2.
        max_per_class: if set, a random subset of at most this many samples per class is used first
            (an approximation for large data; the result is then an estimate).
        generator: randomness of that subset (a ``torch.Generator`` or an integer seed).
        chunk_size: memory bound; temporaries hold about ``chunk_size**2`` numbers.

    Returns:
        float64 ``[K, K]`` on ``features.device``; ``D[k, j]`` = mean over all pairs ``(x in k,
        x' in j)`` of ``||x - x'||_p``, self-pairs included on the diagonal. Symmetric.
    """
    # --- validate -----------------------------------------------------------------------------
    features = check_tensor("features", features)
    if features.is_complex() or features.dtype == torch.bool:
        raise TypeError(f"features: expected a real float or integer tensor, got dtype {features.dtype}")
    if features.dim() < 1 or features.shape[0] == 0:
        raise ValueError(f"features: expected a non-empty [N, ...] tensor, got shape {tuple(features.shape)}")
    n = features.shape[0]
    num_classes = check_num_classes("num_classes", num_classes)
    labels = check_labels("labels", labels, num_classes, n=n)
    p = check_real("p", p)
    if p not in (1.0, 2.0):
        raise ValueError(f"p: expected 1 or 2, got {p!r}")
    if max_per_class is not None:
        max_per_class = check_num_classes("max_per_class", max_per_class)
    chunk_size = check_num_classes("chunk_size", chunk_size)
    gen = as_generator("generator", generator)
    x = features.reshape(n, -1)
    if x.shape[1] == 0:
        raise ValueError(
            f"features: expected at least one feature per sample, got shape {tuple(features.shape)}"
        )
    labels = labels.to(device=x.device, dtype=torch.long)
    counts = torch.bincount(labels, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"labels: class{'es' if len(empty) > 1 else ''} {', '.join(map(str, empty))} "
            f"of num_classes={num_classes} ha{'ve' if len(empty) > 1 else 's'} no samples"
        )
    if x.is_floating_point():  # chunked: an isfinite mask of all N x D would be large
        bad = sum(int((~torch.isfinite(x[i : i + chunk_size])).sum()) for i in range(0, n, chunk_size))
        if bad:
            raise ValueError(f"features: expected finite values, got {bad} NaN/inf entries")

    # --- transform ----------------------------------------------------------------------------
    if max_per_class is not None and int(counts.max()) > max_per_class:
        keep = _subset_per_class(labels, num_classes, max_per_class, gen)
        x, labels = x[keep], labels[keep]
        counts = torch.bincount(labels, minlength=num_classes)
    order = torch.argsort(labels, stable=True)  # class-contiguous blocks for the per-class paths
    x, labels = x[order], labels[order]
    logger.debug(
        "class_distance_matrix: N=%d D=%d K=%d p=%g dtype=%s device=%s",
        x.shape[0],
        x.shape[1],
        num_classes,
        p,
        x.dtype,
        x.device,
    )

    # --- compute ------------------------------------------------------------------------------
    if p == 2.0:
        sums = _l2_pair_sums(x, labels, num_classes, chunk_size)
    elif x.dtype == torch.uint8:
        sums = _l1_pair_sums_uint8(x, counts, num_classes, chunk_size)
    else:
        sums = _l1_pair_sums_sorted(x, counts, num_classes, chunk_size)
    c = counts.to(torch.float64)
    return sums / (c[:, None] * c[None, :])  # eq. 15: mean over |C(k)| |C(j)| pairs


def _subset_per_class(
    labels: torch.Tensor, num_classes: int, m: int, gen: torch.Generator | None
) -> torch.Tensor:
    """Indices of a uniformly random subset of at most m samples per class (sorted)."""
    keys = torch.rand(labels.shape[0], generator=gen, device=generator_device(gen)).to(labels.device)
    perm = torch.argsort(keys)
    by_class = perm[torch.argsort(labels[perm], stable=True)]  # grouped by class, random within
    counts = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.shape[0], device=labels.device) - starts[labels[by_class]]
    return torch.sort(by_class[rank < m]).values


def _l2_pair_sums(x: torch.Tensor, labels: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """``[K, K]`` sums of ||a - b||_2 over all sample pairs, by chunk x chunk blocks."""
    if x.dtype == torch.uint8:
        return l2_pair_sums_uint8(x, labels, k, chunk)
    n = x.shape[0]
    f64 = torch.float64
    # Translation invariant: centring shrinks ||a||^2 and with it the cancellation error.
    mean = torch.zeros(x.shape[1], dtype=f64, device=x.device)
    for i in range(0, n, chunk):
        mean += x[i : i + chunk].to(f64).sum(0)
    mean /= n
    sq = torch.cat([(x[i : i + chunk].to(f64) - mean).square().sum(1) for i in range(0, n, chunk)])
    onehot = torch.nn.functional.one_hot(labels, k).to(f64)  # [N, K]
    sums = torch.zeros(k, k, dtype=f64, device=x.device)

    def rows(i: int) -> torch.Tensor:
        return x[i : i + chunk].to(f64) - mean

    nb = -(-n // chunk)
    progress = Progress(nb * (nb + 1) // 2, "l2 pair distances", logger=logger, unit="blocks")
    for i in range(0, n, chunk):
        a = rows(i)
        for j in range(i, n, chunk):
            b = a if j == i else rows(j)
            d2 = sq[i : i + chunk, None] + sq[None, j : j + chunk] - 2.0 * (a @ b.T)
            d = d2.clamp_(min=0.0).sqrt_()
            if j == i:
                d.fill_diagonal_(0.0)  # a sample's distance to itself is exactly 0
            block = onehot[i : i + chunk].T @ d @ onehot[j : j + chunk]
            sums += block
            if j != i:  # the mirrored block (j, i) of the symmetric pair matrix
                sums += block.T
            progress.update()
    progress.close()
    return sums


def _l1_pair_sums_uint8(x: torch.Tensor, counts: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """``[K, K]`` exact sums of ||a - b||_1 for uint8 features via 256-bin histograms per class and dim.

    sum_{a in k, b in j} |a_d - b_d| = H_k[d]^T M H_j[d], M[u, v] = |u - v|; all integers below 2**53
    for any realistic size, so float64 matrix products are exact.
    """
    n, dims = x.shape
    f64 = torch.float64
    levels = torch.arange(256, dtype=f64, device=x.device)
    m = (levels[:, None] - levels[None, :]).abs()  # [256, 256]
    cls = torch.repeat_interleave(torch.arange(k, device=x.device), counts)  # x is class-sorted
    sums = torch.zeros(k, k, dtype=f64, device=x.device)
    dim_step = max(1, chunk * chunk // (k * 256))  # histogram block [K, dim_step, 256]
    row_step = max(1, chunk * chunk // dim_step)  # bin-index block [row_step, dim_step]
    progress = Progress(dims, "l1 pair distances", logger=logger, unit="dims")
    for d0 in range(0, dims, dim_step):
        progress.update(min(dim_step, dims - d0))
        dc = min(dim_step, dims - d0)
        hist = torch.zeros(k * dc * 256, dtype=f64, device=x.device)
        offs = torch.arange(dc, device=x.device) * 256
        for r0 in range(0, n, row_step):
            vals = x[r0 : r0 + row_step, d0 : d0 + dc].long()
            idx = (cls[r0 : r0 + row_step, None] * (dc * 256) + offs[None, :] + vals).flatten()
            hist += torch.bincount(idx, minlength=hist.numel()).to(f64)
        hist = hist.view(k, dc, 256)
        sums += (hist @ m).reshape(k, -1) @ hist.reshape(k, -1).T
    progress.close()
    return sums


def _l1_pair_sums_sorted(x: torch.Tensor, counts: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """``[K, K]`` sums of ||a - b||_1 from per-dimension sorted values and prefix sums (float64)."""
    n, dims = x.shape
    f64 = torch.float64
    bounds = torch.cumsum(counts, 0).tolist()
    starts = [0, *bounds[:-1]]
    dim_step = max(1, chunk * chunk // n)  # temporaries [N, dim_step]
    sums = torch.zeros(k, k, dtype=f64, device=x.device)
    progress = Progress(dims, "l1 pair distances", logger=logger, unit="dims")
    for d0 in range(0, dims, dim_step):
        progress.update(min(dim_step, dims - d0))
        xd = x[:, d0 : d0 + dim_step].to(f64)
        xd = xd - xd.mean(0)  # centring keeps the prefix sums small (translation invariant)
        # per class: sorted values [dc, n_k] and prefix sums [dc, n_k + 1] with a leading 0
        srt = [torch.sort(xd[s:e].T.contiguous(), dim=1).values for s, e in zip(starts, bounds, strict=True)]
        pre = [torch.nn.functional.pad(torch.cumsum(v, 1), (1, 0)) for v in srt]
        for a in range(k):
            for b in range(a, k):
                va, vb, pb = srt[a], srt[b], pre[b]
                na, nb = va.shape[1], vb.shape[1]
                c = torch.searchsorted(vb, va)  # [dc, n_a]: how many b-values lie below each a-value
                # sum_a [a (2c - n_b) - 2 P_b[c] + P_b[n_b]], as dot products (no [dc, n_a] temporaries)
                s = (
                    2.0 * torch.dot(va.flatten(), c.flatten().to(f64))
                    - nb * pre[a][:, -1].sum()
                    - 2.0 * torch.gather(pb, 1, c).sum()
                    + na * pb[:, -1].sum()
                )
                sums[a, b] += s
                if b != a:
                    sums[b, a] += s
    progress.close()
    return sums


# A row whose spread is at most this many rounding steps of its largest entry is constant (z = 0).
ROUNDING_STEPS = 16


def _zscore_rows(vals: torch.Tensor, *, eps: float, over: torch.Tensor | None = None) -> torch.Tensor:
    """Population z-scores of each row of float64 ``vals`` ``[K, M]`` against the mean and std of the
    same row of ``over`` ``[K, M']`` (default ``vals``); ``z = 0`` where that row is constant.

    Both are first divided by the row's largest magnitude (z-scores are scale-free), so huge but finite
    distances cannot overflow the mean or the variance. A row counts as constant when its std is
    within rounding of 0: ``std <= ROUNDING_STEPS * eps * max|row|``, ``eps`` that of the input dtype
    (equal distances computed in float32 differ by a few float32 ulps, not float64 ones). Below that,
    dividing by the std would blow rounding residue up to z = +-1.
    """
    over = vals if over is None else over
    scale = torch.maximum(over.abs().max(1, keepdim=True).values, vals.abs().max(1, keepdim=True).values)
    scale = torch.where(scale > 0, scale, 1.0)
    unit, unit_over = vals / scale, over / scale  # entries in [-1, 1]
    mean = unit_over.mean(1, keepdim=True)
    std = unit_over.std(1, correction=0, keepdim=True)
    constant = std <= ROUNDING_STEPS * eps  # relative to max|row| = 1 after the scaling
    return torch.where(constant, torch.zeros_like(unit), (unit - mean) / torch.where(constant, 1.0, std))


Normalise = Literal["row", "off_diagonal"]


def similarity_from_distances(
    distances: torch.Tensor, beta: float, normalise: Normalise = "row"
) -> torch.Tensor:
    """Class similarities from class distances (paper A eq. 17 with its §5.4 normalisation, SPEC §1).

    Each row ``d_k = D[k, :]`` is z-normalised (population std; ``z = 0`` when the normalised entries
    are all equal up to rounding, see `_zscore_rows`), then ``S[k, j] = softmax_{j != k}(-beta z_kj)``
    and ``S[k, k] = 0``, so rows sum to 1 and ``alpha`` in eq. 18 is exactly the off-class mass. Which
    entries the mean and std are taken over is ``normalise``:

    - ``"row"`` (default, paper A §5.4 literally: "the distances d_k"): the whole row, the diagonal
      ``D[k, k]`` included (eq. 15 makes it the mean within-class distance; 0 for word vectors).
      Softmax over all K then zeroing ``S[k, k]`` and rescaling equals a softmax over ``j != k``.
    - ``"off_diagonal"`` (SPEC's first version): only ``j != k``. The two differ by a per-row
      rescaling of beta (``std_row / std_off``), so the paper's beta grid means what the paper meant
      only with ``"row"``.

    Args:
        distances: ``[K, K]`` float, ``K >= 2``, finite.
        beta: ``>= 0``; 0 gives the uniform distribution over the other classes.
        normalise: ``"row"`` or ``"off_diagonal"``.

    Returns:
        ``[K, K]`` in ``distances``' dtype and device (computed in float64).
    """
    distances = check_square("distances", distances)
    k = distances.shape[0]
    if k < 2:
        raise ValueError(f"distances: expected at least 2 classes, got shape {tuple(distances.shape)}")
    beta = check_real("beta", beta, low=0.0)
    if normalise not in SIMILARITY_NORMALISE:
        raise ValueError(
            f"normalise: expected one of {', '.join(map(repr, SIMILARITY_NORMALISE))}, got {normalise!r}"
        )

    d = distances.to(torch.float64)
    off = ~torch.eye(k, dtype=torch.bool, device=d.device)
    vals = d[off].view(k, k - 1)  # row k without its diagonal entry
    over = d if normalise == "row" else vals  # the entries mean and std are taken over
    z = _zscore_rows(vals, eps=torch.finfo(distances.dtype).eps, over=over)
    # eq. 17 over j != k: the softmax over all K with S[k, k] zeroed and the row rescaled is exactly this
    s_off = torch.softmax(-beta * z, dim=1)
    if not bool(torch.isfinite(s_off).all()):
        row = int((~torch.isfinite(s_off)).any(1).nonzero()[0])
        raise ValueError(  # a guard: the scaling above keeps z finite, softmax takes +-inf
            f"distances: row {row} gives non-finite similarities with beta={beta!r} "
            f"(|z| up to {float(z[row].abs().max()):.3g}); check the distances' scale and beta"
        )
    s = torch.zeros_like(d)
    s[off] = s_off.flatten()
    return s.to(distances.dtype)
