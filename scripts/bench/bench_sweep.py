"""Sweep overhead: wall time of a local sweep of N short trials vs the sum of their training times.

For each trial mode (in-process `fit` in the Tune actor; a Ray Train V2 `TorchTrainer` per trial) a
sweep of ``--trials`` one-epoch trials runs one trial at a time (``max_concurrent = 1``, so wall time
and summed time are comparable) on a small local Ray cluster. The baseline, measured in the same run,
is `simlab.train.fit` called directly in this process on the same config (no Ray, no MLflow),
``--trials`` times. Reported per mode:

- ``wall_s``: the sweep (`run_sweep`, Ray already up) from call to return;
- ``fit_s``: the summed direct `fit` time (the baseline); ``ratio = wall_s / fit_s``;
- ``in_trial_s``: summed time inside the trainables as Tune measured it (`time_total_s`); the rest of
  the wall time (``wall_s - in_trial_s``) is Tune's scheduling, actor start-up, the driver's MLflow
  and similarity set-up; ``in_trial_s - fit_s`` is what a trial adds around `fit` (MLflow run, tracker,
  imports, and in TorchTrainer mode the Train controller + worker group start).

    python scripts/bench/bench_sweep.py --trials 3 --out /tmp/bench_sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TRIAL = (
    "label=onehot",
    "epochs=1",
    "subset_per_class=40",
    "batch_size=64",
    "recalibrate=false",
    "seed=0",
)


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit,
        "load_avg_start": os.getloadavg(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--modes", default="in_process,torch_trainer")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()

    import ray
    import torch

    from simlab.config import TrainConfig
    from simlab.train import fit
    from sweeps.driver import run_sweep
    from sweeps.presets import get_preset
    from sweeps.space import train_config_dict
    from sweeps.spec import apply_overrides, build_spec

    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    raw = apply_overrides(get_preset("quickstart"), [*TRIAL, f"cache_dir={tmp / 'cache'}"])
    results: dict = {"machine": machine(), "trials": args.trials, "trial": list(TRIAL), "modes": {}}

    # Baseline: fit in this process, same config, one thread (as a 1-CPU trial).
    torch.set_num_threads(1)
    spec0 = build_spec(raw, preset="quickstart", name="baseline", storage=str(tmp))
    cfg = TrainConfig.from_dict(train_config_dict(spec0, {}))
    fit(cfg)  # warm the dataset cache and imports, like a warm sweep
    fit_times = []
    for _ in range(args.trials):
        t0 = time.perf_counter()
        fit(cfg)
        fit_times.append(time.perf_counter() - t0)
    results["fit_s_each"] = fit_times
    fit_s = sum(fit_times)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for mode in args.modes.split(","):
            spec = build_spec(
                raw,
                preset="quickstart",
                name=f"bench-{mode}",
                storage=str(tmp / "sweeps"),
                num_samples=args.trials,
                max_concurrent=1,
                in_process=mode == "in_process",
                workers_per_trial=1,
                cpus_per_trial=1.0,
            )
            t0 = time.perf_counter()
            summary = run_sweep(spec)
            wall = time.perf_counter() - t0
            in_trial = sum(r["time_total_s"] or 0.0 for r in summary.rows)
            results["modes"][mode] = {
                "finished": summary.num_finished,
                "wall_s": wall,
                "fit_s": fit_s,
                "ratio": wall / fit_s,
                "in_trial_s": in_trial,
                "outside_trials_s": wall - in_trial,
                "around_fit_in_trial_s": in_trial - fit_s,
                "per_trial_overhead_s": (wall - fit_s) / args.trials,
            }
            print(mode, json.dumps(results["modes"][mode], indent=1), flush=True)
    finally:
        ray.shutdown()
    results["machine"]["load_avg_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
