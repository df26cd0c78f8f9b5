"""Benchmark `--reuse` (sweeps/reuse.py): what a trial costs when it adopts a finished run, and what the
search costs a trial that finds none, against the training the adoption replaces.

Source: a real sweep's MLflow store, read only (default: the paper A CIFAR-10 sweep, 40 epochs of
ResNet-20 on 5,000 images). For each of ``--runs`` of its finished trial runs:

- adopt: `sweeps.reuse.find_reusable` (the search, with the run's own params and environment) plus
  `sweeps.reuse.adopt_run` (params, every metric history, artifacts, tags) into a new run of a fresh
  temporary sqlite store, through the sweep's own `MlflowTracker`;
- miss: the same search for a configuration no run has (a trial that trains pays this);
- baseline: the source run's own training, as MLflow recorded it (end - start of the run, which
  includes its start-up and final evaluation): a run cannot be retrained inside a benchmark, so this
  one figure comes from the store, not from this run.

Usage: python scripts/bench/bench_reuse.py [--store sqlite:////work/runs16/repro2-a-cifar10/mlflow.db]
       [--experiment repro2-a-cifar10] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchenv import git_commit, machine  # scripts/bench/benchenv.py (this script's folder)

from sweeps.reuse import DERIVED_PARAMS, ENV_TAGS, Reusable, adopt_run, find_reusable, source_environment
from sweeps.tracking import MlflowTracker, configure_client_env, mlflow_client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="sqlite:////work/runs16/repro2-a-cifar10/mlflow.db")
    ap.add_argument("--experiment", default="repro2-a-cifar10")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    configure_client_env()  # as a sweep sets it up (no download progress bars)
    print(f"machine: {machine()}")
    print(f"commit: {git_commit('sweeps/reuse.py', 'sweeps/tracking', 'scripts/bench/bench_reuse.py')}")
    client = mlflow_client(args.store)
    exp = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs(
        [exp.experiment_id],
        "attributes.status = 'FINISHED' and tags.`simlab.role` = 'trial'",
        order_by=["attributes.start_time ASC"],
        max_results=args.runs,
    )
    source = [{"tracking_uri": args.store, "experiment_id": exp.experiment_id, "given": args.experiment}]
    adopt, miss, trained = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        dest = mlflow_client(uri)
        dest_exp = dest.create_experiment("bench", artifact_location=f"{tmp}/artifacts")
        for run in runs:
            params = {k: v for k, v in run.data.params.items() if k not in DERIVED_PARAMS}
            env = source_environment(run, client)
            if any(env.get(k) is None for k in ENV_TAGS):
                print(f"skipped {run.info.run_name}: its environment is not known")
                continue
            t0 = time.perf_counter()
            found = find_reusable(source, params, env)
            own = dest.create_run(dest_exp).info.run_id
            tracker = MlflowTracker(uri, own, spool_dir=Path(tmp) / "spool", heartbeat_interval=0)
            adopt_run(tracker, found or Reusable(args.store, run.info.run_id, args.experiment))
            tracker.close("FINISHED")
            adopt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert find_reusable(source, {**params, "seed": "-1"}, env) is None
            miss.append(time.perf_counter() - t0)
            trained.append((run.info.end_time - run.info.start_time) / 1000)
            print(
                f"{run.info.run_name}: adopt {adopt[-1]:.2f} s, miss {miss[-1]:.2f} s, "
                f"trained in {trained[-1] / 60:.1f} min"
            )
    med = statistics.median
    print(
        f"\nmedian over {len(adopt)} runs: adopt {med(adopt):.2f} s, miss {med(miss):.2f} s, "
        f"training (recorded) {med(trained) / 60:.1f} min; adopting is {med(trained) / med(adopt):.0f}x "
        "faster than training"
    )


if __name__ == "__main__":
    main()
