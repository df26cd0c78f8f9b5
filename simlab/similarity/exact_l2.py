"""Exact L2 pair sums for uint8 features (8-bit images): the fast path of `class_distance_matrix`, p=2.

Squared distances are exact integers from the fastest Gram product that is exact on this machine
(int8 ``torch._int_mm``, bf16/float32 over feature slices small enough that no partial sum rounds,
or float64), chosen at run time and logged at INFO; one float64 sqrt per pair. The exactness
argument follows.
"""

from __future__ import annotations

import logging
import time

import torch

logger = logging.getLogger(__name__)

__all__ = ["l2_pair_sums_uint8"]

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


def l2_pair_sums_uint8(
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
