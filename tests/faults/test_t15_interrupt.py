"""Ctrl-C told apart from a scheduler stop (issue 15, item 1), with a real SIGINT on a real sweep.

- SIGINT to the driver (``kill -INT <pid>``) once every trial has logged epoch 1 of 6: the sweep ends
  promptly with exit 130 and the resume hint; the interrupted trials' MLflow runs end KILLED tagged
  ``simlab.interrupted`` (never FINISHED "stopped early by the trial scheduler"), the parent run KILLED
  with a reason, nothing RUNNING, and `scripts/report.py` counts none of them; ``--resume`` then
  finishes every interrupted trial from its checkpoint (FINISHED, tag gone, every epoch logged).
- SIGINT while Ray starts: not swallowed, exit 130 with the hint, no trial started.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.faults.helpers import Sweep, cmdline, descendants, record_faults, trial_steps

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EPOCHS = 6


def _runs(sweep: Sweep) -> tuple[list, list]:
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name(sweep.name)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    trials = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
    parents = [r for r in runs if r.data.tags.get("simlab.role") == "sweep"]
    return trials, parents


def test_sigint_mid_training_marks_trials_interrupted_and_resume_finishes_them(tmp_path: Path) -> None:
    from sweeps.results import load_runs

    sweep = Sweep(
        tmp_path,
        "t15int",
        f"epochs={EPOCHS}",
        args=("--num-samples", "2", "--max-concurrent", "2"),
    )
    sweep.start()
    try:
        deadline = time.monotonic() + 600
        while sum(1 in s for s in trial_steps(sweep.db).values()) < 2:
            assert sweep.proc.poll() is None, "the sweep ended before the interrupt:\n" + sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.3)
        sweep.proc.send_signal(signal.SIGINT)  # the driver alone, as `kill -INT $!`
        rc = sweep.wait(timeout=300)
    finally:
        sweep.kill_tree()
    out = sweep.output()
    assert rc == 130, sweep.tail()
    assert "--resume" in out and "interrupted" in out, sweep.tail()

    trials, parents = _runs(sweep)
    steps = trial_steps(sweep.db)
    assert len(trials) == 2, trials
    cut = [r for r in trials if max(steps[r.data.tags["mlflow.simlab.key"]]) < EPOCHS]
    assert cut, steps  # the interrupt landed mid-training
    for run in cut:
        assert run.info.status == "KILLED", (run.info.status, run.data.tags)
        assert "simlab.interrupted" in run.data.tags, run.data.tags
        assert "simlab.stopped_early" not in run.data.tags, run.data.tags
    assert all(r.info.status != "RUNNING" for r in trials + parents)
    (parent,) = parents
    assert parent.info.status == "KILLED", parent.info.status
    assert "interrupted" in parent.data.tags.get("simlab.failure_reason", ""), parent.data.tags
    _, counted = load_runs(sweep.uri, sweep.name)
    assert {r.run_id for r in counted}.isdisjoint({r.info.run_id for r in cut}), counted

    sweep.start(resume=True)
    assert sweep.wait() == 0, sweep.tail()
    trials, parents = _runs(sweep)
    steps = trial_steps(sweep.db)
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}, trials
    for run in trials:
        assert "simlab.interrupted" not in run.data.tags, run.data.tags
        assert "simlab.stopped_early" not in run.data.tags, run.data.tags
        assert sorted(set(steps[run.data.tags["mlflow.simlab.key"]])) == list(range(1, EPOCHS + 1))
    assert parents[0].info.status == "FINISHED"
    _, counted = load_runs(sweep.uri, sweep.name)
    assert len(counted) == 2
    record_faults(
        "T15 SIGINT mid-training",
        injected=1,
        survived=1,
        detail=f"{len(cut)} trials KILLED+interrupted (not 'stopped'), exit 130, resumed to FINISHED",
    )


def test_sigint_while_ray_starts_ends_the_sweep(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "t15early", args=("--num-samples", "2"))
    sweep.start()
    try:
        deadline = time.monotonic() + 300
        # Ray is starting once the driver has spawned its GCS server.
        while not any("gcs_server" in cmdline(p) for p in descendants(sweep.proc.pid)):
            assert sweep.proc.poll() is None, "the sweep ended before Ray started:\n" + sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.05)
        sweep.proc.send_signal(signal.SIGINT)
        rc = sweep.wait(timeout=300)
    finally:
        sweep.kill_tree()
    assert rc == 130, sweep.tail()
    assert "--resume" in sweep.output(), sweep.tail()
    trials, parents = _runs(sweep)
    assert trials == [], trials  # no trial started
    assert all(r.info.status == "KILLED" for r in parents), parents
    record_faults("T15 SIGINT during Ray start-up", injected=1, survived=1, detail="exit 130, no trial ran")
