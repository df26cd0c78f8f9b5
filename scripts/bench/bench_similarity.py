#!/usr/bin/env python
"""Benchmark: exact L1/L2 class distances on the full CIFAR-10 training set vs a per-class-pair cdist loop.

Measures, in one run on this machine:

1. ``class_distance_matrix`` (what the ``l1``/``l2`` sources call) on all 50,000 x 3,072 training
   images as uint8 (the exact per-class-histogram path for p=1, exact integer Gram blocks for p=2),
   for the p values in ``--full-p``.
2. The baseline anyone would write first: for every class pair (a <= b, using symmetry)
   ``torch.cdist(X_a, X_b, p).mean()`` in float32. On the full set this takes hours for p=1, so the
   baseline runs on a seeded class-balanced subset of ``--baseline-per-class`` images per class and
   is extrapolated by the number of image pairs (cdist's work is proportional to it). Our method is
   timed on the same subset too, so one ratio compares equal work measured in the same run. For p
   not in ``--full-p`` our full-set time is extrapolated the same way (the p=2 path also does work
   proportional to the image pairs); the output says which figures are extrapolated.
3. The approximation error ``max_per_class`` brings on CIFAR-10 for a few sizes: max relative error
   of the off-diagonal distances and max absolute error of the row-wise z-scores that paper A eq. 17
   feeds to the softmax (β multiplies these z-scores, so this is the error that matters). Measured
   against the exact matrix when it was computed (``--full-p``), else as the spread between seeds.

Prints a markdown summary and writes JSON (``--out``). Usage::

    python scripts/bench/bench_similarity.py --data-dir ../shared/data/cifar10-jpeg.zip --cache-dir /tmp/c
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from simlab._io import write_text_atomic
from simlab.data import load_dataset
from simlab.similarity import class_distance_matrix


def cdist_loop(x: torch.Tensor, y: torch.Tensor, k: int, p: float) -> np.ndarray:
    """Baseline: per class pair torch.cdist in float32 on [0, 255] pixels, symmetric fill."""
    xs = [x[y == c].to(torch.float32) for c in range(k)]
    out = np.zeros((k, k))
    for a in range(k):
        for b in range(a, k):
            out[a, b] = out[b, a] = torch.cdist(xs[a], xs[b], p=p).mean().item()
    return out


def balanced_subset(y: torch.Tensor, k: int, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(k):
        members = (y == c).nonzero().flatten()
        idx.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(idx)


def zscores(d: np.ndarray) -> np.ndarray:
    """Row-wise z-scores of the off-diagonal distances (paper A §5.4 normalisation), [K, K-1]."""
    k = d.shape[0]
    off = d[~np.eye(k, dtype=bool)].reshape(k, k - 1)
    return (off - off.mean(1, keepdims=True)) / off.std(1, keepdims=True)


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m_at_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "git_commit": commit,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/cifar10-jpeg.zip")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--baseline-per-class", type=int, default=500)
    ap.add_argument("--approx-sizes", type=int, nargs="*", default=[100, 500, 1000, 2500])
    ap.add_argument("--approx-seeds", type=int, default=3)
    ap.add_argument("--p", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--full-p", type=int, nargs="*", default=[1, 2], help="p values timed on all 50k images")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("bench_similarity.json"))
    args = ap.parse_args()

    info = machine()
    data = load_dataset("cifar10", data_dir=args.data_dir, cache_dir=args.cache_dir, val_fraction=0.1)
    # The full training set: the training split plus the held-out validation split (50,000 images).
    x = torch.cat([data.train_x, data.val_x]).reshape(-1, 3 * 32 * 32)
    y = torch.cat([data.train_y, data.val_y])
    dev = torch.device(args.device)
    k = data.num_classes
    n = x.shape[0]
    sub = balanced_subset(y, k, args.baseline_per_class, seed=0)
    xs, ys = x[sub], y[sub]
    # cdist work ~ sum over class pairs a <= b of n_a n_b; same formula for the full set and the subset.
    counts_full = torch.bincount(y, minlength=k).double()
    counts_sub = torch.bincount(ys, minlength=k).double()

    def pair_work(c: torch.Tensor) -> float:
        outer = c[:, None] * c[None, :]
        return float(torch.triu(outer).sum())

    scale = pair_work(counts_full) / pair_work(counts_sub)
    results: dict = {"machine": info, "n": n, "features": int(x.shape[1]), "classes": k, "timings": {}}
    exact: dict[int, np.ndarray] = {}
    for p in args.p:
        t_full = None
        if p in args.full_p:
            full, t_full = timed(class_distance_matrix, x.to(dev), y.to(dev), k, p=float(p))
            exact[p] = full.cpu().numpy()
        ours_sub, t_ours_sub = timed(class_distance_matrix, xs.to(dev), ys.to(dev), k, p=float(p))
        base_sub, t_base_sub = timed(cdist_loop, xs, ys, k, float(p))
        ours_sub = ours_sub.cpu().numpy()
        agree = float(np.abs(ours_sub - base_sub).max() / np.abs(base_sub).max())
        results["timings"][f"l{p}"] = {
            "ours_full_s": t_full,
            # p=2 does work proportional to the image pairs too, so when the full run is skipped (hours
            # on a busy 2-core CPU) it is extrapolated by the same factor as the baseline.
            "ours_full_extrapolated_s": t_ours_sub * scale,
            "ours_subset_s": t_ours_sub,
            "cdist_loop_subset_s": t_base_sub,
            "cdist_loop_full_extrapolated_s": t_base_sub * scale,
            "extrapolation_factor": scale,
            "ratio_same_subset": t_base_sub / t_ours_sub,
            "ratio_full_vs_extrapolated": None if t_full is None else t_base_sub * scale / t_full,
            "max_rel_diff_vs_float32_cdist": agree,
        }
        print(
            f"l{p}: ours full {'-' if t_full is None else f'{t_full:.1f} s'}; subset ours {t_ours_sub:.2f} s "
            f"vs cdist {t_base_sub:.2f} s",
            flush=True,
        )

    approx: dict = {}
    off = ~np.eye(k, dtype=bool)
    for p in args.p:
        for m in args.approx_sizes:
            runs, secs = [], []
            for seed in range(args.approx_seeds):
                d, t = timed(
                    class_distance_matrix,
                    x.to(dev),
                    y.to(dev),
                    k,
                    p=float(p),
                    max_per_class=m,
                    generator=seed,
                )
                runs.append(d.cpu().numpy())
                secs.append(t)
            if p in exact:  # error against the exact matrix
                ref = exact[p]
                rel = max(float((np.abs(d - ref)[off] / ref[off]).max()) for d in runs)
                zerr = max(float(np.abs(zscores(d) - zscores(ref)).max()) for d in runs)
                how = "vs exact"
            else:  # no exact reference: spread between seeds (about sqrt(2) x the error's scale)
                rel = max(
                    float((np.abs(a - b)[off] / b[off]).max())
                    for i, a in enumerate(runs)
                    for b in runs[i + 1 :]
                )
                zerr = max(
                    float(np.abs(zscores(a) - zscores(b)).max())
                    for i, a in enumerate(runs)
                    for b in runs[i + 1 :]
                )
                how = "seed spread"
            approx[f"l{p}/{m}"] = {
                "max_rel_err": rel,
                "max_abs_z_err": zerr,
                "seconds": float(np.mean(secs)),
                "measured": how,
            }
            print(
                f"l{p} max_per_class={m} ({how}): rel {rel:.2e}, z {zerr:.3f}, {np.mean(secs):.2f} s",
                flush=True,
            )
    results["approximation"] = approx
    results["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]

    write_text_atomic(args.out, json.dumps(results, indent=1))

    head = "| source | ours, full 50k | cdist loop, full (extrap.) | ratio | subset: ours / cdist | ratio |"
    print("\n" + head)
    print("|---|---|---|---|---|---|")
    for name, t in results["timings"].items():
        ours = (
            f"{t['ours_full_s']:.1f} s"
            if t["ours_full_s"] is not None
            else f"{t['ours_full_extrapolated_s']:.0f} s (extrap.)"
        )
        ours_s = t["ours_full_s"] if t["ours_full_s"] is not None else t["ours_full_extrapolated_s"]
        print(
            f"| {name} | {ours} | {t['cdist_loop_full_extrapolated_s']:.0f} s "
            f"(x{t['extrapolation_factor']:.0f} of {args.baseline_per_class}/class) | "
            f"{t['cdist_loop_full_extrapolated_s'] / ours_s:.1f}x | "
            f"{t['ours_subset_s']:.2f} s / {t['cdist_loop_subset_s']:.2f} s "
            f"| {t['ratio_same_subset']:.1f}x |"
        )
    print(
        "\n| source | max_per_class | measured | max rel. error of D | max abs. error of z-scores | seconds |"
    )
    print("|---|---|---|---|---|---|")
    for key, a in approx.items():
        name, m = key.split("/")
        print(
            f"| {name} | {m} | {a['measured']} | {a['max_rel_err']:.2e} | {a['max_abs_z_err']:.3f} | "
            f"{a['seconds']:.2f} |"
        )
    print(f"\nmachine: {json.dumps(results['machine'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
