#!/usr/bin/env python
"""Benchmark (issue 13 item 4): the exact ``l2`` source against a bare Gram product of the same size.

On the full CIFAR-10 training set (training + validation splits: 50,000 x 3,072 uint8 pixels, 10
classes), in one run:

1. ``l2``: ``class_distance_matrix(x, y, 10, p=2)`` on the uint8 pixels — exactly what the ``l2``
   source calls — with the Gram-path cache cleared first, so the run-time choice (exactness probe +
   timing of the candidates) is included in its time. The chosen path is read back from
   ``simlab.similarity.exact_l2._GRAM_PATHS`` and logged.
2. Bare Gram products in the chosen path's dtype on the same shifted int8 data (inputs converted to
   that dtype once, outside the timing; one GEMM per block over all D features, nothing else):
   - ``full``: every ``chunk x chunk`` block of the ``N x N`` Gram matrix ``X X^T`` — the N^2 D
     product that is the limit for exact L2 (the issue's baseline);
   - ``triangle``: only the blocks on or above the diagonal, i.e. the same GEMMs the ``l2`` source
     does (it uses the symmetry): ``l2 / triangle`` is the overhead of everything but the product.
3. Whether the int8 product runs on the CPU's int8 units: a child process runs one ``torch._int_mm``
   with ``ONEDNN_VERBOSE=1``; its ISA line (e.g. "Intel AVX-512 with Intel DL Boost" = VNNI, "... AMX")
   and the primitive line (implementation, e.g. ``gemm_api`` or ``brg_matmul:avx512_core_amx``) are
   recorded with the CPU's flags from /proc/cpuinfo (amx_int8, avx512_vnni, ...).
4. Exactness spot check: the ``l2`` matrix on a class-balanced subset against float64 ``torch.cdist``
   (direct differences, no matrix-product shortcut).

Writes JSON (``--out``, atomically) and prints a summary with CPU model, load average and commit.

Full run (the lead, alone on the machine)::

    python scripts/bench/bench_l2_gemm.py --data-dir ../shared/data/cifar10-jpeg.zip --out bench_l2_gemm.json

Smoke run: add ``--per-class 300`` (3,000 images).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from benchenv import git_commit, machine  # scripts/bench/benchenv.py (this script's folder)

import simlab.similarity.exact_l2 as gram
from simlab._io import write_text_atomic
from simlab.data import load_dataset
from simlab.similarity import class_distance_matrix

_VERBOSE_CHILD = """
import torch
a = torch.randint(-128, 128, (512, 3072), dtype=torch.int8)
torch._int_mm(a, a.T)
"""

# One child per oneDNN ISA cap: GMAC/s of torch._int_mm on a 2048 x 3072 block, and whether a worst-case
# product (all -128 / all 127 rows, where u8 x s8 pairs could saturate 16-bit adds) is exact.
_ISA_CHILD = """
import json, time, torch
torch.manual_seed(0)
a = torch.randint(-128, 128, (2048, 3072), dtype=torch.int8)
torch._int_mm(a, a.T)
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter(); torch._int_mm(a, a.T); best = min(best, time.perf_counter() - t0)
w = torch.cat([torch.full((8, 3072), -128, dtype=torch.int8), torch.full((8, 3072), 127, dtype=torch.int8),
               a[:16]])
exact = torch.equal(torch._int_mm(w, w.T).long(), w.long() @ w.long().T)
print(json.dumps({"gmac_per_s": 2048 * 2048 * 3072 / best / 1e9, "exact_worst_case": exact}))
"""

ISA_CAPS = ["AVX2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX", None]


def isa_sweep() -> dict:
    """torch._int_mm speed and exactness with oneDNN capped at each ISA (``ONEDNN_MAX_CPU_ISA``).

    The gemm_api verbose line does not name its kernel, so this is how the int8 units are identified:
    if the uncapped speed matches the AVX512_CORE_VNNI cap and beats AVX512_CORE, VNNI does the work;
    if it beats the VNNI cap by a wide margin on a CPU with amx_int8, AMX does. A cap above what the
    CPU has behaves as uncapped.
    """
    out = {}
    for cap in ISA_CAPS:
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
        if cap is not None:
            env["ONEDNN_MAX_CPU_ISA"] = cap
        try:
            res = subprocess.run(
                [sys.executable, "-c", _ISA_CHILD], env=env, capture_output=True, text=True, timeout=300
            )
            out[cap or "default"] = json.loads(res.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
            out[cap or "default"] = {"error": str(err)}
    return out


def onednn_int8_report() -> dict:
    """oneDNN's own account of the int8 GEMM (child process: ONEDNN_VERBOSE is read at start-up)."""
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), [])
    except OSError:
        pass
    wanted = ("amx_tile", "amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512bw")
    out: dict = {"cpu_flags": [f for f in wanted if f in flags]}
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    try:
        res = subprocess.run(
            [sys.executable, "-c", _VERBOSE_CHILD], env=env, capture_output=True, text=True, timeout=120
        )
        lines = [ln for ln in res.stdout.splitlines() if "dnnl_verbose" in ln or "onednn_verbose" in ln]
        out["isa_line"] = next((ln for ln in lines if ",isa:" in ln), None)
        out["exec_lines"] = [ln for ln in lines if ",exec," in ln]
        impl = " ".join(out["exec_lines"]).lower()
        isa = (out["isa_line"] or "").lower()
        out["isa_allows"] = (
            "amx" if "amx" in isa else "vnni" if "dl boost" in isa or "vnni" in isa else "none"
        )
        out["implementation"] = "gemm_api" if "gemm_api" in impl else impl[:200]
        sweep = isa_sweep()
        out["isa_cap_sweep"] = sweep
        speed = {k: v.get("gmac_per_s", 0.0) for k, v in sweep.items()}
        default, vnni = speed.get("default", 0.0), speed.get("AVX512_CORE_VNNI", 0.0)
        core = speed.get("AVX512_CORE", 0.0)
        if out["isa_allows"] == "amx" and vnni and default > 1.5 * vnni:
            used = "amx"
        elif vnni and core and default > 1.3 * core:
            used = "vnni"
        else:
            used = "no int8 units evident (uncapped speed ~ the AVX512_CORE cap)"
        out["int8_units_used"] = used
        out["how"] = (
            "ONEDNN_VERBOSE=1 on one torch._int_mm in a child process (the 'isa:' line is the highest "
            "ISA oneDNN may use; the exec line names the primitive, gemm_api for _int_mm, which does not "
            "name its kernel), plus child processes with ONEDNN_MAX_CPU_ISA capped at each ISA: the "
            "speed steps show which units the uncapped run uses"
        )
    except (OSError, subprocess.SubprocessError) as err:
        out["error"] = str(err)
    return out


def bare_gram(s: torch.Tensor, path: str, chunk: int, triangle: bool) -> float:
    """Seconds for the blocked Gram product X X^T in ``path``'s dtype, one GEMM per block, nothing else."""
    if path == "int8_int_mm":
        xs, mm = s, lambda a, b: torch._int_mm(a, b.T)
    elif path == "bf16_slices":
        xs, mm = s.to(torch.bfloat16), lambda a, b: torch.mm(a, b.T, out_dtype=torch.float32)
    elif path == "fp32_slices":
        xs, mm = s.to(torch.float32), lambda a, b: a @ b.T
    else:
        xs, mm = s.to(torch.float64), lambda a, b: a @ b.T
    n = xs.shape[0]
    mm(xs[:chunk], xs[:chunk])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, n, chunk):
        for j in range(i if triangle else 0, n, chunk):
            mm(xs[i : i + chunk], xs[j : j + chunk])
    if xs.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/cifar10-jpeg.zip")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--per-class", type=int, default=None, help="smoke runs: first N images per class")
    ap.add_argument("--check-per-class", type=int, default=100, help="cdist exactness spot check size")
    ap.add_argument("--chunk", type=int, default=2048, help="class_distance_matrix's chunk_size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("bench_l2_gemm.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    info = {
        "machine": machine(),
        "commit": git_commit("simlab/similarity.py"),
        "load_avg_at_start": os.getloadavg(),
    }
    data = load_dataset("cifar10", data_dir=args.data_dir, cache_dir=args.cache_dir, val_fraction=0.1)
    x = torch.cat([data.train_x, data.val_x]).reshape(-1, 3 * 32 * 32)
    y = torch.cat([data.train_y, data.val_y])
    k = data.num_classes
    if args.per_class is not None:
        keep = torch.cat([(y == c).nonzero().flatten()[: args.per_class] for c in range(k)])
        x, y = x[keep], y[keep]
    dev = torch.device(args.device)
    x, y = x.to(dev), y.to(dev)
    n, dims = x.shape

    gram._GRAM_PATHS.clear()  # the run-time choice is part of the l2 source's time
    gram._GRAM_EXACT.clear()
    t0 = time.perf_counter()
    dist = class_distance_matrix(x, y, k, p=2.0, chunk_size=args.chunk)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_l2 = time.perf_counter() - t0
    path = gram._GRAM_PATHS.get((str(dev), dims)) or gram._choose_gram_path(dev, dims, time_it=False)

    order = torch.argsort(y, stable=True)
    s = torch.bitwise_xor(x[order], 128).view(torch.int8)  # what the l2 source multiplies
    t_tri = bare_gram(s, path, args.chunk, triangle=True)
    t_full = bare_gram(s, path, args.chunk, triangle=False)
    del s

    # exactness spot check against float64 cdist on direct differences
    sub = torch.cat([(y == c).nonzero().flatten()[: args.check_per_class] for c in range(k)])
    xs, ys = x[sub], y[sub]
    got = class_distance_matrix(xs, ys, k, p=2.0, chunk_size=args.chunk).cpu()
    xf = xs.cpu().to(torch.float64)
    want = torch.empty(k, k, dtype=torch.float64)
    for a in range(k):
        for b in range(k):
            want[a, b] = torch.cdist(
                xf[ys.cpu() == a], xf[ys.cpu() == b], compute_mode="donot_use_mm_for_euclid_dist"
            ).mean()
    rel = float(((got - want).abs() / want.abs().clamp_min(1e-300)).max())

    gmacs = n * n * dims / 1e9
    res = {
        **info,
        "n": n,
        "features": dims,
        "classes": k,
        "chunk": args.chunk,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "gram_path": path,
        "l2_s": t_l2,
        "bare_gram_full_s": t_full,
        "bare_gram_triangle_s": t_tri,
        "ratio_l2_over_full_gram": t_l2 / t_full,
        "ratio_l2_over_triangle_gram": t_l2 / t_tri,
        "bare_gram_full_gmac_per_s": gmacs / t_full,
        "int8_units": onednn_int8_report() if dev.type == "cpu" else None,
        "exactness_check": {"per_class": args.check_per_class, "max_rel_diff_vs_float64_cdist": rel},
        "distance_matrix_pixel_units": dist.cpu().tolist(),
        "load_avg_at_end": os.getloadavg(),
    }
    write_text_atomic(args.out, json.dumps(res, indent=1))

    print(f"\nmachine: {res['machine']}; commit {res['commit']}")
    print(f"N={n} D={dims} K={k} chunk={args.chunk} path={path!r}")
    print(f"| l2 source | bare Gram N^2 D ({path}) | ratio | bare Gram, triangle blocks | ratio |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {t_l2:.2f} s | {t_full:.2f} s ({gmacs / t_full:.0f} GMAC/s) | {t_l2 / t_full:.2f}x "
        f"| {t_tri:.2f} s | {t_l2 / t_tri:.2f}x |"
    )
    if res["int8_units"]:
        u = res["int8_units"]
        print(f"int8 units: {u.get('int8_units_used')}; cpu flags {u['cpu_flags']}; {u.get('isa_line')}")
        for ln in u.get("exec_lines", [])[:2]:
            print(f"  {ln}")
        for cap, r in u.get("isa_cap_sweep", {}).items():
            print(f"  ONEDNN_MAX_CPU_ISA={cap}: {r}")
    print(f"exactness: max rel diff vs float64 cdist ({args.check_per_class}/class) {rel:.2e}")
    print(f"load average start {info['load_avg_at_start']} end {res['load_avg_at_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
