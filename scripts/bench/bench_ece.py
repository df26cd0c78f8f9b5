"""Benchmark the ECE estimators of `simlab.calibration` against baselines timed in the same run.

Data: seeded synthetic ``probs = softmax(2 * randn(N, K))`` in float32 with labels drawn from the
probabilities (the values do not change the cost of any method here).

- ``hist_ece(scope="output")`` (one bucketize + index_add pass over the ``N*K`` entries, float64,
  row-chunked) on 10,000 x 100 and 100,000 x 1,000, against
  (a) torchmetrics' ``multiclass_calibration_error`` (prediction scope, i.e. only ``N`` pairs, float32)
  on the same probabilities, and
  (b) a per-bin loop over the same ``N*K`` entries (one masked pass per bin, float64 sums), the
  straightforward way to write eq. 3-4.
- ``kde_ece(scope="output")`` on 10,000 x 100 (a million pairs) against the direct port of Zhang
  et al.'s code in ``tests/reference_kde.py`` (Python loop to build the pairs, KDEpy FFTKDE, Python
  loop over the 2**14 grid points). The port is timed on ``--kde-port-rows`` rows (default: all)
  and, if that is a subset, extrapolated linearly in rows for its pair-building loop only (its KDE
  and grid-loop stages do not grow with N) -- the output says which.

Each figure is the median of ``--repeats`` runs after one warm-up. Usage:
    python scripts/bench/bench_ece.py [--repeats 3] [--skip-large] [--kde-port-rows 10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from reference_kde import binary_pairs, ece_kde_binary  # noqa: E402

from simlab.calibration import hist_ece, kde_ece  # noqa: E402


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, 1-min load average at start {load:.1f}"
    )


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                ROOT,
                "status",
                "--porcelain",
                "--",
                "simlab/calibration.py",
                "scripts/bench/bench_ece.py",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def timed(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up (and the value, for the agreement check)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def make_data(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = (2.0 * torch.randn(n, k, generator=g)).softmax(dim=1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    return probs, labels


def per_bin_loop_output_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Baseline: eq. 3-4 written bin by bin (a masked pass over all N*K entries per bin)."""
    c = probs.reshape(-1)
    h = torch.zeros_like(probs, dtype=torch.bool)
    h[torch.arange(probs.shape[0]), labels] = True
    h = h.reshape(-1)
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        mask = (c > lo) & (c <= hi)
        if m == 1:
            mask |= c == 0
        size = int(mask.sum())
        if size:
            total += abs(float(h[mask].double().sum()) - float(c[mask].double().sum()))
    return total / c.numel()


def bench_hist(n: int, k: int, repeats: int) -> list[str]:
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = make_data(n, k)
    t_ours, v_ours = timed(lambda: hist_ece(probs, labels, scope="output"), repeats)
    t_loop, v_loop = timed(lambda: per_bin_loop_output_ece(probs, labels), repeats)
    t_tm, _ = timed(
        lambda: multiclass_calibration_error(probs, labels, num_classes=k, n_bins=15, norm="l1"), repeats
    )
    t_pred, _ = timed(lambda: hist_ece(probs, labels, scope="prediction"), repeats)
    assert abs(v_ours - v_loop) < 1e-9, (v_ours, v_loop)
    return [
        f"| hist_ece output, {n:,} x {k:,} ({n * k:,} entries) | {t_ours * 1e3:,.1f} ms "
        f"| per-bin loop (output): {t_loop * 1e3:,.1f} ms | {t_loop / t_ours:.2f}x faster |",
        f"| hist_ece output, {n:,} x {k:,} | {t_ours * 1e3:,.1f} ms "
        f"| torchmetrics prediction scope ({n:,} pairs only): {t_tm * 1e3:,.1f} ms "
        f"| {t_ours / t_tm:.2f}x the time for {k}x the pairs |",
        f"| hist_ece prediction, {n:,} x {k:,} | {t_pred * 1e3:,.1f} ms "
        f"| torchmetrics prediction scope: {t_tm * 1e3:,.1f} ms | {t_tm / t_pred:.2f}x (>1: ours faster) |",
    ]


def bench_kde(n: int, k: int, repeats: int, port_rows: int) -> list[str]:
    probs, labels = make_data(n, k, seed=1)
    t_ours, v_ours = timed(lambda: kde_ece(probs, labels, scope="output"), repeats)
    rows = min(port_rows, n)
    p_np, y_np = probs[:rows].double().numpy(), labels[:rows].numpy()
    start = time.perf_counter()
    conf, hit = binary_pairs(p_np, y_np, "output")
    t_pairs = time.perf_counter() - start
    start = time.perf_counter()
    v_port = ece_kde_binary(conf, hit)
    t_kde = time.perf_counter() - start
    lines = []
    if rows == n:
        t_port = t_pairs + t_kde
        agree = abs(v_ours - v_port)
        note = f"measured on all {n:,} rows; |ours - port| = {agree:.1e}"
        assert agree < 1e-4, (v_ours, v_port)
    else:
        # the pair loop is linear in rows; KDEpy's binning is O(n) but tiny next to it, the grid loop fixed
        t_port = t_pairs * n / rows + t_kde
        note = (
            f"port timed on {rows:,} of {n:,} rows, pair-building loop extrapolated linearly "
            f"({t_pairs:.2f} s -> {t_pairs * n / rows:.1f} s), KDE + grid loop as measured ({t_kde:.2f} s)"
        )
    lines.append(
        f"| kde_ece output, {n:,} x {k:,} ({n * k:,} pairs) | {t_ours * 1e3:,.1f} ms "
        f"| direct port: {t_port:,.2f} s (pairs {t_pairs:.2f} s + KDE/grid loop {t_kde:.2f} s) "
        f"| {t_port / t_ours:.1f}x faster |"
    )
    lines.append(f"|  | {note} | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="skip the 100,000 x 1,000 hist case")
    parser.add_argument("--kde-port-rows", type=int, default=10_000)
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"commit:  {git_commit()}")
    print(f"repeats: median of {args.repeats} after one warm-up, CPU, float32 probs\n")
    print("| case | ours | baseline (same run) | ratio |")
    print("|---|---|---|---|")
    sizes = [(10_000, 100)] + ([] if args.skip_large else [(100_000, 1_000)])
    for n, k in sizes:
        for line in bench_hist(n, k, args.repeats):
            print(line, flush=True)
    for line in bench_kde(10_000, 100, args.repeats, args.kde_port_rows):
        print(line, flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
