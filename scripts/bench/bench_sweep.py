"""Sweep overhead: wall time of a local sweep vs the sum of its trials' `fit` called directly.

For each trial mode (in-process `fit` in the Tune actor; a Ray Train V2 `TorchTrainer` per trial) a
sweep runs one trial at a time (``max_concurrent = 1``, 1 CPU per trial, so wall time and summed time
are comparable) on a local Ray cluster (``ray.init(num_cpus=2)``, already up). The baseline, measured
in the same run after the sweeps: `simlab.train.fit` called directly in this process (no Ray, no
MLflow, 1 thread, after one warm-up call) on each trial's exact configuration, summed over the trials.

Trials: ``--trial tiny`` (default; the quickstart preset narrowed to one-hot labels, 1 epoch, 40
training images per class, no post-hoc recalibration: the figure BENCHMARKS.md has tracked) or
``--trial quickstart`` (the quickstart preset as it is: its search space, 4 epochs, recalibration,
similarity matrices computed by the driver inside the sweep's wall time).

Reported per mode: ``wall_s`` (`run_sweep` from call to return), ``fit_s`` (the baseline sum),
``ratio = wall_s / fit_s``, ``overhead_per_trial_s = (wall_s - fit_s) / trials``. For the in-process
mode also the per-phase breakdown from the trials' own timings (`sweeps.trainable.PROFILE_ENV`):
seconds inside each trial by phase, the driver's time before the first trial, the gaps between
trials, and the first trial's extra cost (a fresh actor: imports, MLflow store) vs the later ones;
and the overhead against `fit` as timed inside the trials (``overhead_per_trial_vs_in_trial_fit_s``),
which a shared machine's drifting load between the sweep and the baseline does not skew.

    python scripts/bench/bench_sweep.py --trial quickstart --trials 12 --trainer-trials 1 \
        --out /tmp/bench_sweep.json
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

TRIALS = {
    "tiny": (
        "label=onehot",
        "epochs=1",
        "subset_per_class=40",
        "batch_size=64",
        "recalibrate=false",
        "seed=0",
    ),
    "quickstart": (),
}


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


def phase_breakdown(
    profile_dir: Path, t_call: float, t_return: float, fit_by_trial: dict[str, float]
) -> dict:
    """Per-phase seconds of an in-process sweep from the trials' own timings (`_Phases` records).

    ``fit`` (in a trial) includes its MLflow logging and Tune reports (also given on their own rows);
    ``extra_s`` of a trial is its duration (first line to last report) minus the direct `fit` of its
    config: what the trial adds around `fit`, plus the first trial's cold start (imports etc.).
    """
    records = [json.loads(f.read_text()) for f in profile_dir.glob("*.json")]
    records.sort(key=lambda r: r["start"])
    records = [r for r in records if t_call <= r["start"] <= t_return]
    if not records:
        return {}
    names: list[str] = []
    for r in records:
        names += [k for k in r["phases_s"] if k not in names]

    def mean_phases(rs: list[dict]) -> dict[str, float]:
        return {k: sum(r["phases_s"].get(k, 0.0) for r in rs) / len(rs) for k in names} if rs else {}

    extra = [r["end"] - r["start"] - fit_by_trial.get(r["trial_id"], float("nan")) for r in records]
    gaps = [b["start"] - a["end"] for a, b in zip(records, records[1:], strict=False)]
    later = records[1:]
    # `fit` as timed inside the trials, less its MLflow logging and Tune reports: the same work as the
    # direct baseline, but measured at the same moment as the sweep (a shared machine's load drifts).
    pure_fit = sum(
        r["phases_s"].get("fit", 0.0)
        - r["phases_s"].get("fit_mlflow_logging", 0.0)
        - r["phases_s"].get("fit_tune_report", 0.0)
        for r in records
    )
    return {
        "trials_profiled": len(records),
        "in_trial_fit_s": pure_fit,
        "overhead_per_trial_vs_in_trial_fit_s": (t_return - t_call - pure_fit) / len(records),
        "actor_pids": sorted({r["pid"] for r in records}),
        "first_trial_phases_s": mean_phases(records[:1]),
        "later_trials_mean_phases_s": mean_phases(later),
        "first_trial_extra_s": extra[0],
        "later_trials_mean_extra_s": sum(extra[1:]) / len(later) if later else None,
        "before_first_trial_s": records[0]["start"] - t_call,
        "between_trials_mean_s": sum(gaps) / len(gaps) if gaps else None,
        "after_last_trial_s": t_return - records[-1]["end"],
        # What one more trial costs once the actor is warm: its extra plus one gap.
        "steady_overhead_per_trial_s": (sum(extra[1:]) / len(later) + sum(gaps) / len(gaps))
        if later
        else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trial", choices=sorted(TRIALS), default="tiny", help="trial configuration (see above)")
    p.add_argument("--trials", type=int, default=3, help="trials of the in-process sweep")
    p.add_argument("--trainer-trials", type=int, default=1, help="trials of the TorchTrainer sweep")
    p.add_argument("--modes", default="in_process,torch_trainer")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument(
        "--cprofile", action="store_true", help="also cProfile the driver and each in-process trial"
    )
    args = p.parse_args()

    import ray
    import torch

    from simlab.config import TrainConfig
    from simlab.data import load_split
    from simlab.train import fit
    from sweeps.driver import run_sweep
    from sweeps.overrides import apply_overrides
    from sweeps.presets import get_preset
    from sweeps.space import train_config_dict
    from sweeps.trial_phases import PROFILE_CPROFILE_ENV, PROFILE_ENV
    from sweeps.tune_setup import compute_matrices
    from sweeps.validation import build_spec

    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    overrides = TRIALS[args.trial]
    raw = apply_overrides(get_preset("quickstart"), [*overrides, f"cache_dir={tmp / 'cache'}"])
    results: dict = {
        "machine": machine(),
        "trial": args.trial,
        "overrides": list(overrides),
        "tmp": str(tmp),
        "modes": {},
    }
    print(f"work folder {tmp}", flush=True)

    # The trials write their phase timings here; set before ray.init so the workers inherit it.
    profile_dir = tmp / "trial_phases"
    os.environ[PROFILE_ENV] = str(profile_dir)
    if args.cprofile:
        os.environ[PROFILE_CPROFILE_ENV] = "1"
    # The decoded-dataset cache and the similarity store are warm, as on every run after a machine's
    # first (the driver then loads the matrices instead of computing them; the time is reported).
    spec0 = build_spec(raw, preset="quickstart", name="warm")
    t0 = time.perf_counter()
    results["similarity_warmup_s"] = (compute_matrices(spec0)[1], time.perf_counter() - t0)
    cfg0 = TrainConfig.from_dict(train_config_dict(spec0, {}))
    load_split(cfg0)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    sweeps: dict = {}
    try:
        for mode in args.modes.split(","):
            n = args.trials if mode == "in_process" else args.trainer_trials
            spec = build_spec(
                raw,
                preset="quickstart",
                name=f"bench-{mode}",
                storage=str(tmp / "sweeps"),
                num_samples=n,
                max_concurrent=1,
                in_process=mode == "in_process",
                workers_per_trial=1,
                cpus_per_trial=1.0,
            )
            t_call = time.time()
            t0 = time.perf_counter()
            if args.cprofile:  # <tmp>/trial_phases/driver-<mode>.prof
                import cProfile

                prof = cProfile.Profile()
                summary = prof.runcall(run_sweep, spec)
                profile_dir.mkdir(parents=True, exist_ok=True)
                prof.dump_stats(str(profile_dir / f"driver-{mode}.prof"))
            else:
                summary = run_sweep(spec)
            wall = time.perf_counter() - t0
            sweeps[mode] = (spec, summary, wall, t_call, time.time())
            print(mode, f"wall {wall:.1f} s, {summary.num_finished}/{n} finished", flush=True)
    finally:
        ray.shutdown()

    # Baseline: each trial's configuration through fit in this process, one thread (as a 1-CPU trial),
    # warm (imports, dataset cache, similarity store), like a trial in a warm actor.
    torch.set_num_threads(1)
    fit_by_trial: dict[str, float] = {}
    warm = False
    for spec, summary, *_ in sweeps.values():
        for row in summary.rows:
            cfg = TrainConfig.from_dict(train_config_dict(spec, row["params"]))
            if not warm:
                fit(cfg)
                warm = True
            t0 = time.perf_counter()
            fit(cfg)
            fit_by_trial[row["trial_id"]] = time.perf_counter() - t0
    results["direct_fit_s"] = fit_by_trial

    for mode, (_spec, summary, wall, t_call, t_return) in sweeps.items():
        n = len(summary.rows)
        fit_s = sum(fit_by_trial[r["trial_id"]] for r in summary.rows)
        in_trial = sum(r["time_total_s"] or 0.0 for r in summary.rows)
        figures = {
            "trials": n,
            "finished": summary.num_finished,
            "wall_s": wall,
            "fit_s": fit_s,
            "ratio": wall / fit_s,
            "overhead_per_trial_s": (wall - fit_s) / n,
            "in_trial_s": in_trial,  # Tune's time_total_s, summed
            "outside_trials_s": wall - in_trial,
        }
        if mode == "in_process":
            figures["phases"] = phase_breakdown(profile_dir, t_call, t_return, fit_by_trial)
        results["modes"][mode] = figures
    results["machine"]["load_avg_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
