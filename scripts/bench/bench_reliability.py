#!/usr/bin/env python
"""Reliability benchmarks (BENCHMARKS.md, section "Reliability").

1. Bad-config rejection (RELIABILITY T11, "< 2 s"): wall time of ``python sweeps/calibration.py`` on
   each bad config, against the baseline ``python sweeps/calibration.py --help`` (interpreter start +
   CLI import) measured in the same run.
2. Tracking overhead: per-call latency of `MlflowTracker.log_metrics` (retry wrapper + heartbeat) on
   a live local ``mlflow server``, against the baseline of the raw `MlflowClient.log_batch` call it
   wraps, interleaved in rounds so both see the same machine load; then the latency of a call while
   the server is down (spooled to disk after the outage is detected), which is what a training loop
   pays per epoch during an outage.

    python -m scripts.bench.bench_reliability [--rounds 5] [--calls 40] [--out FILE.json]

(from the repository root: a module, as it starts its server with the tests' ``tests/faults/helpers.py``)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BAD_CONFIGS = {
    "unknown key": ["--set", "alhpa=0.1"],
    "alpha out of range": ["--set", "alpha=2"],
    "beta with one-hot": ["--set", "label=onehot", "--set", "beta=1"],
    "missing data": ["--set", "data_dir=/nonexistent/cifar.zip"],
}


def _cli_seconds(args: list[str], expect_rc: int) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "sweeps/calibration.py", *args],
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != expect_rc:
        raise RuntimeError(f"{args}: exit {done.returncode}, expected {expect_rc}: {done.stderr[-500:]!r}")
    return elapsed


def bench_rejection(rounds: int) -> dict:
    times: dict[str, list[float]] = {"baseline --help": [], **{k: [] for k in BAD_CONFIGS}}
    words = REPO.parent / "shared" / "data" / "vectors" / "cifar10-words-300d.txt"
    with tempfile.TemporaryDirectory() as tmp:
        cases = dict(BAD_CONFIGS)
        if words.exists():  # the case that reads the vocabulary (and imports the torch-backed registries)
            lines = words.read_text().splitlines()
            kept = [line for line in lines[1:] if not line.startswith("cat ")]
            vectors = Path(tmp) / "no-cat.txt"
            vectors.write_text("\n".join([f"{len(kept)} {lines[0].split()[1]}", *kept]) + "\n")
            cases["missing words"] = [
                "--preset",
                "cifar10-calibration",
                "--set",
                "label=similarity",
                "--set",
                "similarity=we",
                "--set",
                f"source_args.we.vectors={vectors}",
            ]
            times["missing words"] = []
        for _ in range(rounds):  # interleaved: every case sees the same load
            times["baseline --help"].append(_cli_seconds(["--help"], 0))
            for name, args in cases.items():
                times[name].append(_cli_seconds([*args, "--storage", tmp], 2))
    base = statistics.median(times["baseline --help"])
    return {
        k: {
            "median_s": statistics.median(v),
            "max_s": max(v),
            "ratio_to_baseline": statistics.median(v) / base,
        }
        for k, v in times.items()
    }


def bench_tracker(rounds: int, calls: int) -> dict:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from sweeps import tracking as mt
    from tests.faults.helpers import MlflowServer

    with tempfile.TemporaryDirectory() as tmp:
        server = MlflowServer(Path(tmp) / "srv").start(timeout=300)
        try:
            exp = mt.ensure_experiment(server.uri, "bench")
            raw_run = mt.get_or_create_run(server.uri, exp, key="raw", run_name="raw")
            run = mt.get_or_create_run(server.uri, exp, key="tracked", run_name="tracked")
            client = MlflowClient(server.uri)
            tracker = mt.MlflowTracker(server.uri, run, spool_dir=Path(tmp) / "spool")
            metrics = {f"m{i}": 0.5 for i in range(20)}  # about one epoch's SPEC §6 metrics
            raw_s, tracked_s, step = [], [], 0
            for _ in range(rounds):
                for _ in range(calls):
                    step += 1
                    t0 = time.perf_counter()
                    stamp = int(time.time() * 1000)
                    client.log_batch(
                        raw_run,
                        metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()],
                        synchronous=True,
                    )
                    raw_s.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    tracker.log_metrics(metrics, step=step)
                    tracked_s.append(time.perf_counter() - t0)
            server.stop()
            outage_s = []
            for _ in range(calls):  # the first call detects the outage (retries), the rest spool at once
                step += 1
                t0 = time.perf_counter()
                tracker.log_metrics(metrics, step=step)
                outage_s.append(time.perf_counter() - t0)
            server.start(timeout=300)
            t0 = time.perf_counter()
            assert tracker.flush(timeout=60)
            replay_s = time.perf_counter() - t0
            tracker.close()
        finally:
            server.stop()
    raw, tracked = statistics.median(raw_s), statistics.median(tracked_s)
    return {
        "calls": len(raw_s),
        "raw_log_batch_median_ms": raw * 1e3,
        "tracker_log_metrics_median_ms": tracked * 1e3,
        "ratio_tracker_to_raw": tracked / raw,
        "outage_first_call_s": outage_s[0],
        "outage_spooled_call_median_ms": statistics.median(outage_s[1:]) * 1e3,
        "replay_of_outage_calls_s": replay_s,
        "outage_calls": len(outage_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--out")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "commit": commit,
        "rejection": bench_rejection(args.rounds),
        "tracker": bench_tracker(args.rounds, args.calls),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
