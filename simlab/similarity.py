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
  float64 sqrt per pair (see the exactness argument above ``_l2_pair_sums_uint8``).
- p = 1, uint8 features (8-bit images): exact, from per-class per-dimension 256-bin histograms:
  ``sum_{pairs} |u - v| = sum_dims h_k^T |U - V| h_j`` (integer counts, exact in float64).
- p = 1, other features: exact per dimension from sorted values and prefix sums
  (``sum_b |a - b| = a (2c - n) - 2 P[c] + P[n]`` with ``c = #{b < a}``), O(N log N) per dimension
  and class pair instead of O(N^2).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

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

logger = logging.getLogger(__name__)

__all__ = [
    "autoencoder_distances",
    "class_distance_matrix",
    "similarity_from_distances",
    "word_vector_distances",
]


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
        return _l2_pair_sums_uint8(x, labels, k, chunk)
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


# --- exact L2 for uint8 features --------------------------------------------------------------
#
# Exactness argument. Distances are translation invariant, so every pixel u in 0..255 is replaced
# by s = u - 128 in -128..127 (int8; ``u ^ 0x80`` reinterpreted). Then for two samples a, b of D
# features:
#
#   ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b,   |a|^2 <= D * 2^14,   |a.b| <= D * 2^14,
#
# all integers. Each Gram path below returns a.b exactly (argument per path); norms are summed in
# float64 (exact while D * 2^14 < 2^53, i.e. D < 2^39) and ``|a|^2 + |b|^2 - 2 a.b`` is formed in
# float64 from exact integers whose every intermediate is an integer of magnitude <= 4 D 2^14 < 2^53:
# exact. So the squared distance is the exact integer, >= 0 without clamping, exactly 0 for equal
# samples, and the only rounding is one correctly rounded float64 sqrt per pair plus the float64
# summation of the per-class-pair totals (relative error ~ 1e-16 * log2(pairs)).
#
# - ``int8_int_mm``: ``torch._int_mm`` (int8 x int8 -> int32; oneDNN's s8s8s32 GEMM on CPU, which
#   uses VNNI / AMX int8 units where the CPU has them; cuBLASLt IMMA on CUDA). Its accumulator is
#   int32; oneDNN may add 128 to one operand (u8 x s8 + compensation), so intermediate sums are
#   bounded by D * 255 * 128 < 2^31 for D <= 2^15: D is cut into slices of 2^15 features whose
#   int32 results are added in float64. Platforms without VNNI can compute u8 x s8 pairs with
#   saturating 16-bit adds (vpmaddubsw); that would be inexact, which is why every path is checked
#   at run time on worst-case inputs (``_gram_probe``) before it is used.
# - ``fp32_slices``: float32 GEMM over slices of 1,024 features: every partial sum, in whatever order
#   or blocking the GEMM adds (FMA included), is an integer of magnitude <= 1024 * 2^14 = 2^24, and
#   every such integer is a float32, so no addition rounds; int8 values are exact in float32 (and in
#   TF32/bf16 inputs: 8 significant bits suffice). Slices add up in float64. A float32 product over
#   all 3,072 pixels would NOT be exact: partial sums reach 3072 * 2^14 ~ 5e7 > 2^24.
# - ``bf16_slices``: the same with bfloat16 inputs (-128..127 are exact in bf16's 8 significant bits)
#   and a float32 output, where ``torch.mm(..., out_dtype=torch.float32)`` exists for the device
#   (CUDA); the float32 accumulation is exact by the fp32 argument. (A bf16 *output* would round.)
# - ``fp64``: one float64 GEMM; partial sums <= D * 2^14 < 2^53.
#
# The fastest path that passes the probe is picked per (device, D) and logged at INFO.

_INT_MM_SLICE = 1 << 15
_F32_SLICE = 1 << 10
_GRAM_PATHS: dict[tuple[str, int], str] = {}  # (device, D) -> timed choice (process-wide cache)
_GRAM_EXACT: dict[tuple[str, int], list[str]] = {}  # (device, D) -> paths that passed the probe


def _gram_int8_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    m, n, dims = a.shape[0], b.shape[0], a.shape[1]
    if a.is_cuda:  # cuBLASLt shape rules: m > 16, k and n multiples of 8 (zero rows/dims add nothing)
        up8 = lambda v: -(-v // 8) * 8  # noqa: E731
        pm, pn, pd = max(24, up8(m)), max(8, up8(n)), up8(dims)
        a = torch.nn.functional.pad(a, (0, pd - dims, 0, pm - m))
        b = torch.nn.functional.pad(b, (0, pd - dims, 0, pn - n))
    if a.shape[1] <= _INT_MM_SLICE:
        return torch._int_mm(a, b.T)[:m, :n]
    out = torch.zeros(m, n, dtype=torch.float64, device=a.device)
    for d0 in range(0, a.shape[1], _INT_MM_SLICE):
        sa, sb = a[:, d0 : d0 + _INT_MM_SLICE], b[:, d0 : d0 + _INT_MM_SLICE]
        out += torch._int_mm(sa.contiguous(), sb.T)[:m, :n]
    return out


def _gram_sliced(
    a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, out_dtype: torch.dtype | None
) -> torch.Tensor:
    if a.shape[1] <= _F32_SLICE:
        sa, sb = a.to(dtype), b.to(dtype)
        return torch.mm(sa, sb.T, out_dtype=out_dtype) if out_dtype is not None else sa @ sb.T
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for d0 in range(0, a.shape[1], _F32_SLICE):
        sa, sb = a[:, d0 : d0 + _F32_SLICE].to(dtype), b[:, d0 : d0 + _F32_SLICE].to(dtype)
        out += torch.mm(sa, sb.T, out_dtype=out_dtype) if out_dtype is not None else sa @ sb.T
    return out


_GRAM_FNS = {  # in order of preference when the block is too small to be worth timing
    "int8_int_mm": _gram_int8_int_mm,
    "bf16_slices": lambda a, b: _gram_sliced(a, b, torch.bfloat16, torch.float32),
    "fp32_slices": lambda a, b: _gram_sliced(a, b, torch.float32, None),
    "fp64": lambda a, b: a.to(torch.float64) @ b.to(torch.float64).T,
}


def _gram_probe(device: torch.device, dims: int) -> torch.Tensor:
    """``[64, dims]`` int8 worst cases: all -128, all 127, alternating signs, and random rows."""
    g = torch.Generator().manual_seed(0)
    rows = [
        torch.full((8, dims), -128, dtype=torch.int8),
        torch.full((8, dims), 127, dtype=torch.int8),
        (torch.arange(dims) % 2 * 255 - 128).to(torch.int8).expand(8, dims),  # -128, 127, -128, ...
        torch.randint(-128, 128, (40, dims), generator=g, dtype=torch.int8),
    ]
    return torch.cat(rows).to(device)


def _cpu_int8_units() -> str:
    """The CPU's int8 matrix/dot-product extensions named in /proc/cpuinfo (Linux), for the log."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    found = [f for f in ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16") if f in flags]
    return ",".join(found) or "none"


def _exact_gram_paths(device: torch.device, dims: int) -> list[str]:
    """The Gram paths that reproduce an exact float64 product on ``_gram_probe`` (in preference order)."""
    probe = _gram_probe(device, dims)
    want = probe.cpu().to(torch.float64) @ probe.cpu().to(torch.float64).T
    exact: list[str] = []
    for name, fn in _GRAM_FNS.items():
        try:
            ok = torch.equal(fn(probe, probe).cpu().to(torch.float64), want)
        except (RuntimeError, TypeError, NotImplementedError) as err:
            logger.debug("L2 Gram path %s unavailable on %s: %s", name, device, err)
            continue
        if ok:
            exact.append(name)
        else:
            logger.warning("L2 Gram path %s is not exact on %s (worst-case probe); not used", name, device)
    if not exact:  # fp64 is exact for any realistic D; guard anyway
        raise RuntimeError(f"no exact Gram path for uint8 L2 distances on {device} with D={dims}")
    return exact


def _choose_gram_path(device: torch.device, dims: int, *, time_it: bool) -> str:
    """The fastest Gram path that is exact on this machine for ``dims`` features (cached).

    Every candidate is run once per (device, D) on ``_gram_probe`` and compared with an exact float64
    product on the CPU; those that differ (or raise) are dropped. When ``time_it`` (large inputs) the
    survivors are timed on a 512 x 512 block and the fastest wins (cached), else the first in
    ``_GRAM_FNS`` order. The choice is logged at INFO the first time.
    """
    key = (str(device), dims)
    if key in _GRAM_PATHS:
        return _GRAM_PATHS[key]
    fresh = key not in _GRAM_EXACT
    if fresh:
        _GRAM_EXACT[key] = _exact_gram_paths(device, dims)
    exact = _GRAM_EXACT[key]
    speeds: dict[str, float] = {}
    if time_it and len(exact) > 1:
        blk = torch.randint(-128, 128, (512, dims), dtype=torch.int8, device=device)
        for name in exact:
            fn = _GRAM_FNS[name]
            fn(blk, blk)  # warm-up
            best = float("inf")
            for _ in range(2):
                _sync(device)
                t0 = time.perf_counter()
                fn(blk, blk)
                _sync(device)
                best = min(best, time.perf_counter() - t0)
            speeds[name] = 512 * 512 * dims / best / 1e9
        chosen = max(speeds, key=speeds.__getitem__)
    else:
        chosen = exact[0]
    units = _cpu_int8_units() if device.type == "cpu" else torch.cuda.get_device_name(device)
    logger.log(
        logging.INFO if fresh or time_it else logging.DEBUG,
        "class_distance_matrix: exact uint8 L2 Gram path %r on %s (D=%d; exact candidates %s; "
        "GMAC/s %s; CPU capability %s; int8/bf16 units %s)",
        chosen,
        device,
        dims,
        exact,
        {n: round(v, 1) for n, v in speeds.items()} or "not timed (small input)",
        torch.backends.cpu.get_cpu_capability(),
        units,
    )
    if time_it:  # a small input's untimed choice must not stick for later large ones
        _GRAM_PATHS[key] = chosen
    return chosen


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _l2_pair_sums_uint8(
    x: torch.Tensor, labels: torch.Tensor, k: int, chunk: int, *, path: str | None = None
) -> torch.Tensor:
    """``[K, K]`` sums of ||a - b||_2 for class-sorted uint8 features, exact up to one sqrt per pair.

    See the exactness argument above. Only blocks on or above the diagonal are computed; each block's
    Gram product is followed by a row-tiled epilogue (``|a|^2 + |b|^2 - 2 a.b``, sqrt, per-class
    sums by a product with the block's local one-hot matrix) whose temporaries stay cache-sized.
    ``path`` forces a Gram path (tests); by default the fastest exact one is chosen.
    """
    n, dims = x.shape
    f64 = torch.float64
    dev = x.device
    s = torch.bitwise_xor(x, 128).view(torch.int8)  # u - 128 as int8, one pass
    # |a|^2 <= D * 2^14: exact as int16 squares (<= 2^14) summed in int64, then exact in float64
    step = max(1, (1 << 18) // dims)  # cache-sized row slices
    sq = torch.cat(
        [s[i : i + step].to(torch.int16).square_().sum(1, dtype=torch.int64) for i in range(0, n, step)]
    ).to(f64)
    if path is None:
        # timing the candidates (~1 s) pays off only for large N; smaller inputs take the first exact one
        path = _choose_gram_path(dev, dims, time_it=n >= 16384)
    gram = _GRAM_FNS[path]
    lab = labels.tolist()  # class-sorted
    sums = torch.zeros(k, k, dtype=f64, device=dev)
    # epilogue rows: tile x chunk float64 ~ 1 MiB stays in a CPU core's cache; a GPU takes whole blocks
    tile = max(1, (1 << 17) // chunk) if dev.type == "cpu" else chunk

    def local(i0: int, i1: int) -> tuple[int, int, torch.Tensor]:
        lo, hi = lab[i0], lab[i1 - 1] + 1  # the classes present in rows i0..i1 (contiguous)
        return lo, hi, torch.nn.functional.one_hot(labels[i0:i1] - lo, hi - lo).to(f64)

    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        a, (alo, ahi, la) = s[i0:i1], local(i0, i1)
        for j0 in range(i0, n, chunk):
            j1 = min(n, j0 + chunk)
            b, (blo, bhi, lb) = s[j0:j1], local(j0, j1)
            g = gram(a, b)
            acc = torch.zeros(i1 - i0, bhi - blo, dtype=f64, device=dev)  # row sums per class of b
            for r0 in range(0, i1 - i0, tile):
                r1 = min(i1 - i0, r0 + tile)
                d = sq[i0 + r0 : i0 + r1, None] + sq[None, j0:j1]
                d.add_(g[r0:r1], alpha=-2.0).sqrt_()  # exact integer >= 0, then one sqrt
                torch.mm(d, lb, out=acc[r0:r1])
            block = la.T @ acc
            sums[alo:ahi, blo:bhi] += block
            if j0 != i0:  # the mirrored block (j, i) of the symmetric pair matrix
                sums[blo:bhi, alo:ahi] += block.T
    # Diagonal blocks add (a, b) and (b, a) pairs in different orders: make the result exactly symmetric.
    return (sums + sums.T) / 2


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


def word_vector_distances(class_names: Any, vectors: Any, **kwargs: Any) -> Any:
    """Word-embedding class distances (paper A eq. 16); see `simlab.word_vectors`."""
    from simlab.word_vectors import word_vector_distances as impl  # lazy: gensim is heavy

    return impl(class_names, vectors, **kwargs)


def autoencoder_distances(*args: Any, **kwargs: Any) -> Any:
    """Autoencoder latent-space class distances (paper A eq. 14); see `simlab.autoencoder`."""
    from simlab.autoencoder import autoencoder_distances as impl  # lazy: trains a network

    return impl(*args, **kwargs)
