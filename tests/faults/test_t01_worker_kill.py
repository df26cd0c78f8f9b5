"""T1: SIGKILL a Ray Train worker mid-trial; the trial resumes from its last checkpoint and finishes.

TorchTrainer mode (`--train-workers`), one DDP worker, Train's ``FailureConfig(max_failures=1)`` and
no Tune-level retry, so only Train's own recovery can save the trial. The worker (found among the
sweep's descendants by its Ray process title) is SIGKILLed once epoch 2 is logged — `fit` logs an
epoch before checkpointing and reporting it, so the epoch-1 checkpoint is then surely registered.
The restarted worker group must resume from that checkpoint: epoch 1 trained once, at most one epoch
redone, the trial finished, one MLflow run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.faults.helpers import Sweep, cmdline, descendants, record_faults, trial_steps, tune_trials

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EPOCHS = 3
WORKER = "RayTrainWorker"  # Ray's process title of a Train worker actor: ray::RayTrainWorker...


def test_sigkill_train_worker_resumes_from_checkpoint(tmp_path: Path) -> None:
    sweep = Sweep(
        tmp_path,
        "t1",
        "train_max_failures=1",
        "tune_max_failures=0",
        args=("--num-samples", "1", "--train-workers", "--workers-per-trial", "1"),
    )
    sweep.start()
    try:
        deadline = time.monotonic() + 800
        while not any(2 in steps for steps in trial_steps(sweep.db).values()):
            assert sweep.proc.poll() is None, sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.2)
        workers = [p for p in descendants(sweep.proc.pid) if WORKER in cmdline(p)]
        assert len(workers) == 1, [cmdline(p)[:80] for p in descendants(sweep.proc.pid)]
        os.kill(workers[0], signal.SIGKILL)
        assert sweep.wait() == 0, sweep.tail()
    finally:
        sweep.kill_tree()

    (trial,) = tune_trials(sweep.sweep_dir)
    assert trial["status"] == "TERMINATED" and trial["num_failures"] == 0, trial  # Train recovered it
    assert "[FailurePolicy] RETRY" in sweep.output(), sweep.tail()  # ...after seeing the worker die
    steps = trial_steps(sweep.db)[trial["trial_id"]]
    assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), steps
    assert steps.count(1) == 1, steps  # resumed from a checkpoint, not from scratch
    assert len(steps) <= EPOCHS + 1, steps  # at most one epoch redone
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t1")
    children = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("simlab.role") == "trial"
    ]
    keyed = [(r.data.tags["mlflow.simlab.key"], r.info.status) for r in children]
    assert keyed == [(trial["trial_id"], "FINISHED")]
    record_faults("T1 SIGKILL Train worker", injected=1, survived=1, detail=f"epochs logged {steps}")
