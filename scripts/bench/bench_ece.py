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

Each figure is the median of ``--repeats`` interleaved rounds after one warm-up (the large case:
``--large-repeats`` rounds, no warm-up). Usage:
    python scripts/bench/bench_ece.py [--repeats 5] [--large-repeats 1] [--skip-large] [--kde-port-rows N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from benchenv import git_commit, machine  # noqa: E402  (scripts/bench/benchenv.py)
from reference_kde import binary_pairs, ece_kde_binary  # noqa: E402

from simlab.calibration import hist_ece, kde_ece  # noqa: E402


def timed(fns: dict[str, object], repeats: int, warmup: bool = True) -> dict[str, tuple[float, object]]:
    """Median seconds (and the value) per function, timed in interleaved rounds.

    Interleaving (one run of each function per round) exposes every method to the same load on a
    shared machine, so the ratios stay meaningful even when absolute times drift.
    """
    values = {name: fn() for name, fn in fns.items()} if warmup else {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), values[name]) for name in fns}


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


def bench_hist(n: int, k: int, repeats: int, warmup: bool = True) -> list[str]:
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = make_data(n, k)
    res = timed(
        {
            "ours": lambda: hist_ece(probs, labels, scope="output"),
            "loop": lambda: per_bin_loop_output_ece(probs, labels),
            "tm": lambda: multiclass_calibration_error(probs, labels, num_classes=k, n_bins=15, norm="l1"),
            "pred": lambda: hist_ece(probs, labels, scope="prediction"),
        },
        repeats,
        warmup=warmup,
    )
    (t_ours, v_ours), (t_loop, v_loop), (t_tm, _), (t_pred, _) = (
        res[key] for key in ("ours", "loop", "tm", "pred")
    )
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
    rows = min(port_rows, n)
    p_np, y_np = probs[:rows].double().numpy(), labels[:rows].numpy()
    stage: dict[str, float] = {}

    def port() -> float:
        start = time.perf_counter()
        conf, hit = binary_pairs(p_np, y_np, "output")
        stage["pairs"] = time.perf_counter() - start
        start = time.perf_counter()
        value = ece_kde_binary(conf, hit)
        stage["kde"] = time.perf_counter() - start
        return value

    res = timed({"ours": lambda: kde_ece(probs, labels, scope="output"), "port": port}, repeats)
    (t_ours, v_ours), (t_port_measured, v_port) = res["ours"], res["port"]
    # stage split of the port from its last round (for the extrapolation and the breakdown)
    t_pairs, t_kde = stage["pairs"], stage["kde"]
    lines = []
    if rows == n:
        t_port = t_port_measured
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
        f"| direct port: {t_port:,.2f} s (last round: pairs {t_pairs:.2f} s + KDE/grid loop {t_kde:.2f} s) "
        f"| {t_port / t_ours:.1f}x faster |"
    )
    lines.append(f"|  | {note} | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--large-repeats", type=int, default=1, help="rounds for 100,000 x 1,000 (no warm-up)"
    )
    parser.add_argument("--skip-large", action="store_true", help="skip the 100,000 x 1,000 hist case")
    parser.add_argument("--kde-port-rows", type=int, default=10_000)
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"commit:  {git_commit('simlab/calibration.py', 'scripts/bench/bench_ece.py')}")
    print(
        f"repeats: median of {args.repeats} interleaved rounds after one warm-up "
        f"({args.large_repeats} round(s), no warm-up, for 100,000 x 1,000); CPU, float32 probs\n"
    )
    print("| case | ours | baseline (same run) | ratio |")
    print("|---|---|---|---|")
    for line in bench_hist(10_000, 100, args.repeats):
        print(line, flush=True)
    if not args.skip_large:
        for line in bench_hist(100_000, 1_000, args.large_repeats, warmup=False):
            print(line, flush=True)
    for line in bench_kde(10_000, 100, args.repeats, args.kde_port_rows):
        print(line, flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
