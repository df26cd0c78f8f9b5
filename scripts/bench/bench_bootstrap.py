"""Benchmark `simlab.stats.bootstrap_metrics` (vectorised over resamples) against the direct loop.

Data: seeded synthetic ``probs = softmax(2 * randn(N, K))`` (float32) with labels that agree with
the argmax 60 % of the time; the values do not change the cost.

- ours: ``bootstrap_metrics(probs, labels, n_resamples=R)``: accuracy, the confidence gap and the four
  ECEs (histogram / KDE x prediction / output) of R resamples, computed as weighted sums, sparse products and
  batched FFTs, ``--chunk`` resamples at a time.
- baseline (same run): the loop a reader would write: for each resample, index the test set and call
  `simlab.calibration`'s ``accuracy``, ``confidence_gap``, ``hist_ece`` and ``kde_ece`` (both scopes).
  Timed on ``--baseline-resamples`` resamples and extrapolated linearly to R (each resample costs the same).

Usage: python scripts/bench/bench_bootstrap.py [--n 10000] [--k 10] [--resamples 1000]
       [--baseline-resamples 50] [--chunk 50]
"""

from __future__ import annotations

import argparse
import time

import torch
from benchenv import git_commit, machine  # scripts/bench/benchenv.py (this script's folder)

from simlab import calibration as cal
from simlab.calibration import bootstrap_metrics


def data(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(n, k, generator=g)
    labels = torch.where(
        torch.rand(n, generator=g) < 0.6, logits.argmax(1), torch.randint(0, k, (n,), generator=g)
    )
    return logits.softmax(1), labels


def loop(probs: torch.Tensor, labels: torch.Tensor, resamples: int) -> None:
    g = torch.Generator().manual_seed(1)
    n = probs.shape[0]
    for _ in range(resamples):
        idx = torch.randint(0, n, (n,), generator=g)
        p, y = probs[idx], labels[idx]
        cal.accuracy(p, y)
        cal.confidence_gap(p, y)
        for scope in ("prediction", "output"):
            cal.hist_ece(p, y, 15, scope)
            cal.kde_ece(p, y, scope)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--baseline-resamples", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=50)
    args = ap.parse_args()
    probs, labels = data(args.n, args.k)
    print(f"machine: {machine()}")
    measured = ("simlab/calibration", "scripts/bench/bench_bootstrap.py")
    print(f"commit:  {git_commit(*measured)}")
    t0 = time.perf_counter()
    bootstrap_metrics(
        probs,
        labels,
        n_resamples=args.resamples,
        chunk=args.chunk,
        generator=torch.Generator().manual_seed(0),
    )
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop(probs, labels, args.baseline_resamples)
    base = (time.perf_counter() - t0) * args.resamples / args.baseline_resamples
    print(f"| case | ours | resample loop (same run, from {args.baseline_resamples} resamples) | ratio |")
    print("|---|---|---|---|")
    case = f"{args.resamples} resamples of {args.n} x {args.k}"
    print(f"| {case} | {ours:.2f} s | {base:.2f} s | {base / ours:.1f}x |")


if __name__ == "__main__":
    main()
