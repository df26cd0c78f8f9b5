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


def phase_breakdown(profile_dir: Path, t_call: float, t_return: float, fit_times: list[float]) -> dict:
    """Per-phase seconds of the in-process sweep: inside each trial (from the trials' own timings,
    `sweeps.trainable._Phases`) and between trials (the gaps the trials' start/end stamps leave).

    ``fit`` (in a trial) includes its MLflow logging and Tune reports, given again on their own rows;
    ``fit_excess`` is the trial's ``fit`` minus the mean direct `fit` (the baseline), i.e. what MLflow
    logging and Tune reports add inside `fit`.
    """
    records = sorted(
        (json.loads(f.read_text()) for f in profile_dir.glob("*.json")), key=lambda r: r["start"]
    )
    if not records:
        return {}
    n = len(records)
    mean_fit = sum(fit_times) / len(fit_times)
    names: list[str] = []
    for r in records:
        names += [k for k in r["phases_s"] if k not in names]
    per_trial = {k: sum(r["phases_s"].get(k, 0.0) for r in records) / n for k in names}
    per_trial["fit_excess"] = per_trial.get("fit", 0.0) - mean_fit
    gaps = [b["start"] - a["end"] for a, b in zip(records, records[1:], strict=False)]
    return {
        "trials_profiled": n,
        "actor_pids": sorted({r["pid"] for r in records}),
        "per_trial_mean_s": per_trial,
        "before_first_trial_s": records[0]["start"] - t_call,
        "between_trials_mean_s": sum(gaps) / len(gaps) if gaps else None,
        "after_last_trial_s": t_return - records[-1]["end"],
        "direct_fit_mean_s": mean_fit,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--modes", default="in_process,torch_trainer")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument(
        "--cprofile", action="store_true", help="also cProfile each in-process trial (<tmp>/trial_phases)"
    )
    args = p.parse_args()

    import ray
    import torch

    from simlab.config import TrainConfig
    from simlab.train import fit
    from sweeps.driver import run_sweep
    from sweeps.presets import get_preset
    from sweeps.space import train_config_dict
    from sweeps.spec import apply_overrides, build_spec
    from sweeps.trainable import PROFILE_CPROFILE_ENV, PROFILE_ENV

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

    # The trials write their phase timings here (sweeps.trainable.PROFILE_ENV); set before ray.init so
    # the local cluster's workers inherit it.
    profile_dir = tmp / "trial_phases"
    os.environ[PROFILE_ENV] = str(profile_dir)
    if args.cprofile:
        os.environ[PROFILE_CPROFILE_ENV] = "1"
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
            t_call = time.time()
            t0 = time.perf_counter()
            if args.cprofile:  # the driver too: <tmp>/trial_phases/driver-<mode>.prof
                import cProfile

                prof = cProfile.Profile()
                summary = prof.runcall(run_sweep, spec)
                profile_dir.mkdir(parents=True, exist_ok=True)
                prof.dump_stats(str(profile_dir / f"driver-{mode}.prof"))
            else:
                summary = run_sweep(spec)
            wall = time.perf_counter() - t0
            t_return = time.time()
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
            if mode == "in_process":
                results["modes"][mode]["phases"] = phase_breakdown(profile_dir, t_call, t_return, fit_times)
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
