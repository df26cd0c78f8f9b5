"""Benchmark the ECE estimators of `simlab.calibration` against baselines timed in the same run.

Data: seeded synthetic ``probs = softmax(2 * randn(N, K))`` in float32 with labels drawn from the
probabilities (the values do not change the cost of any method here).

- ``hist_ece(scope="output")`` (one bucketize + index_add pass over the ``N*K`` entries, float64,
  row-chunked) on 10,000 x 100 and 100,000 x 1,000, against
  (a) torchmetrics' ``multiclass_calibration_error`` (prediction scope, i.e. only ``N`` pairs, float32)
  on the same probabilities, and
  (b) a per-bin loop over the same ``N*K`` entries (one masked pass per bin, float64 sums), the
  straightforward way to write eq. 3-4.
  (c) the previous implementation (bucketize + index_add over float64 copies of all entries, as of
  commit 86f63b3), to show the change in the same run. Issue 13 goal: output scope on 10,000 x 100
  <= 30 ms.
- ``kde_ece`` on 10,000 x 100 in both scopes against Zhang et al.'s ``ece_kde_binary`` with its
  published loop structure (``tests/reference_kde.py::published_kde_ece``: per-row Python/torch
  loops, KDEpy FFTKDE, the Python loop over the 2**14 grid points with argmin look-ups): the
  top-label path for ``scope="prediction"`` and their binary path on the ``N*K`` pairs for
  ``scope="output"``. Timed over ``--published-repeats`` rounds (default 1: it takes seconds), ours
  over ``--repeats``. Issue 13 goal: >= 100x at the same value (|ours - published| is printed; on
  general float32-rounded inputs the published code's float32 confidence storage moves the value by
  ~1e-8 relative in the prediction scope; the tests show equality to 1e-12 where that is exact).

Each figure is the median of ``--repeats`` interleaved rounds after one warm-up (the large case:
``--large-repeats`` rounds, no warm-up). Usage, from the repository root (a module: it imports the
tests' reference ``tests/reference_kde.py``):
    python -m scripts.bench.bench_ece [--repeats 5] [--large-repeats 1] [--skip-large] [--published-repeats 1]
        [--kde-n 10000] [--out bench_ece.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from scripts.bench.benchenv import git_commit, machine
from simlab._io import write_text_atomic
from simlab.calibration import hist_ece, kde_ece
from tests.reference_kde import published_kde_ece

RESULTS: dict = {}


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


def previous_hist_output_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Baseline: the previous ``hist_ece(scope="output")`` core (bucketize + index_add over float64
    copies of every entry, row chunks of 2**22), without its input validation."""
    edges = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    conf = torch.zeros(n_bins, dtype=torch.float64)
    hits = torch.zeros(n_bins, dtype=torch.float64)
    rows = max(1, (1 << 22) // probs.shape[1])
    for s in range(0, probs.shape[0], rows):
        p, y = probs[s : s + rows], labels[s : s + rows]
        c = p.reshape(-1).double()
        idx = torch.bucketize(c, edges)
        c_true = p.gather(1, y[:, None]).squeeze(1).double()
        hits.index_add_(0, torch.bucketize(c_true, edges), torch.ones_like(c_true))
        conf.index_add_(0, idx, c)
    return ((hits - conf).abs().sum() / probs.numel()).item()


def bench_hist(n: int, k: int, repeats: int, warmup: bool = True) -> list[str]:
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = make_data(n, k)
    res = timed(
        {
            "ours": lambda: hist_ece(probs, labels, scope="output"),
            "prev": lambda: previous_hist_output_ece(probs, labels),
            "loop": lambda: per_bin_loop_output_ece(probs, labels),
            "tm": lambda: multiclass_calibration_error(probs, labels, num_classes=k, n_bins=15, norm="l1"),
            "pred": lambda: hist_ece(probs, labels, scope="prediction"),
        },
        repeats,
        warmup=warmup,
    )
    (t_ours, v_ours), (t_prev, v_prev), (t_loop, v_loop), (t_tm, _), (t_pred, _) = (
        res[key] for key in ("ours", "prev", "loop", "tm", "pred")
    )
    assert abs(v_ours - v_loop) < 1e-9, (v_ours, v_loop)
    assert abs(v_ours - v_prev) < 1e-12, (v_ours, v_prev)
    RESULTS[f"hist_output_{n}x{k}_ms"] = t_ours * 1e3
    RESULTS[f"hist_output_{n}x{k}_previous_ms"] = t_prev * 1e3
    RESULTS[f"hist_prediction_{n}x{k}_ms"] = t_pred * 1e3
    return [
        f"| hist_ece output, {n:,} x {k:,} | {t_ours * 1e3:,.1f} ms "
        f"| previous implementation (bucketize + index_add): {t_prev * 1e3:,.1f} ms "
        f"| {t_prev / t_ours:.2f}x faster |",
        f"| hist_ece output, {n:,} x {k:,} ({n * k:,} entries) | {t_ours * 1e3:,.1f} ms "
        f"| per-bin loop (output): {t_loop * 1e3:,.1f} ms | {t_loop / t_ours:.2f}x faster |",
        f"| hist_ece output, {n:,} x {k:,} | {t_ours * 1e3:,.1f} ms "
        f"| torchmetrics prediction scope ({n:,} pairs only): {t_tm * 1e3:,.1f} ms "
        f"| {t_ours / t_tm:.2f}x the time for {k}x the pairs |",
        f"| hist_ece prediction, {n:,} x {k:,} | {t_pred * 1e3:,.1f} ms "
        f"| torchmetrics prediction scope: {t_tm * 1e3:,.1f} ms | {t_tm / t_pred:.2f}x (>1: ours faster) |",
    ]


def bench_kde(n: int, k: int, repeats: int, published_repeats: int) -> list[str]:
    probs, labels = make_data(n, k, seed=1)
    p_np, y_np = probs.double().numpy(), labels.numpy()
    lines = []
    for scope in ("prediction", "output"):
        ours = timed({"ours": lambda scope=scope: kde_ece(probs, labels, scope=scope)}, repeats)["ours"]
        pub = timed(
            {"pub": lambda scope=scope: published_kde_ece(p_np, y_np, scope)}, published_repeats, warmup=False
        )["pub"]
        (t_ours, v_ours), (t_pub, v_pub) = ours, pub
        diff = abs(v_ours - v_pub)
        assert diff < 1e-4, (scope, v_ours, v_pub)  # SPEC §5 tolerance
        pairs = n if scope == "prediction" else n * k
        RESULTS[f"kde_{scope}_{n}x{k}"] = {
            "ours_ms": t_ours * 1e3,
            "published_loop_s": t_pub,
            "ratio": t_pub / t_ours,
            "ours_value": v_ours,
            "published_value": v_pub,
            "abs_diff": diff,
            "rel_diff": diff / abs(v_pub),
        }
        lines.append(
            f"| kde_ece {scope}, {n:,} x {k:,} ({pairs:,} pairs) | {t_ours * 1e3:,.1f} ms "
            f"| Zhang et al. published loop structure: {t_pub:,.2f} s | {t_pub / t_ours:,.0f}x faster; "
            f"values {v_ours:.12g} vs {v_pub:.12g} (rel. diff {diff / abs(v_pub):.1e}) |"
        )
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
    parser.add_argument("--published-repeats", type=int, default=1, help="rounds of the published KDE code")
    parser.add_argument("--hist-n", type=int, default=10_000, help="rows of the hist case (K = 100)")
    parser.add_argument("--kde-n", type=int, default=10_000, help="rows of the KDE case (K = 100)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    RESULTS.update(
        machine=machine(), commit=git_commit("simlab/calibration.py"), load_avg_start=os.getloadavg()
    )

    print(f"machine: {machine()}")
    print(f"commit:  {git_commit('simlab/calibration.py', 'scripts/bench/bench_ece.py')}")
    print(
        f"repeats: median of {args.repeats} interleaved rounds after one warm-up "
        f"({args.large_repeats} round(s), no warm-up, for 100,000 x 1,000); CPU, float32 probs\n"
    )
    print("| case | ours | baseline (same run) | ratio |")
    print("|---|---|---|---|")
    for line in bench_hist(args.hist_n, 100, args.repeats):
        print(line, flush=True)
    if not args.skip_large:
        for line in bench_hist(100_000, 1_000, args.large_repeats, warmup=False):
            print(line, flush=True)
    for line in bench_kde(args.kde_n, 100, args.repeats, args.published_repeats):
        print(line, flush=True)
    RESULTS["load_avg_end"] = os.getloadavg()
    print(f"load average: start {RESULTS['load_avg_start']}, end {RESULTS['load_avg_end']}")
    if args.out:
        write_text_atomic(args.out, json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
