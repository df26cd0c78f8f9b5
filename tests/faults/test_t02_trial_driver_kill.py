"""T2: SIGKILL a trial's driver process; Tune retries the trial, which resumes from its checkpoint.

In-process mode: the trial's driver is the Ray actor that runs the Tune function (and `fit` in it).
It is SIGKILLed (found among the sweep's own descendants by its Ray process title) once epoch 2 has
been logged: `fit` logs an epoch before it checkpoints and reports it, so only then is the epoch-1
checkpoint surely registered with Tune. Tune must retry it (``num_failures == 1``); the retry
must start from the checkpoint: epoch 1 is never trained again (its point appears once in MLflow),
at most one epoch is redone, the trial finishes, and it keeps one MLflow run.
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
TRIAL_ACTOR = "ImplicitFunc"  # Ray's process title of a function-trainable actor: ray::ImplicitFunc.train


def test_sigkill_trial_driver_retries_from_checkpoint(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "t2", "tune_max_failures=2", args=("--num-samples", "1"))
    sweep.start()
    try:
        deadline = time.monotonic() + 600
        while not any(2 in steps for steps in trial_steps(sweep.db).values()):
            assert sweep.proc.poll() is None, sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.2)
        actors = [p for p in descendants(sweep.proc.pid) if TRIAL_ACTOR in cmdline(p)]
        assert len(actors) == 1, [cmdline(p)[:80] for p in descendants(sweep.proc.pid)]
        os.kill(actors[0], signal.SIGKILL)
        assert sweep.wait() == 0, sweep.tail()
    finally:
        sweep.kill_tree()

    (trial,) = tune_trials(sweep.sweep_dir)
    assert trial["status"] == "TERMINATED" and trial["num_failures"] == 1, trial
    steps = trial_steps(sweep.db)[trial["trial_id"]]
    assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), steps
    assert steps.count(1) == 1, steps  # resumed from the epoch-1 checkpoint, not from scratch
    assert len(steps) <= EPOCHS + 1, steps  # at most one epoch redone
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t2")
    children = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("simlab.role") == "trial"
    ]
    keyed = [(r.data.tags["mlflow.simlab.key"], r.info.status) for r in children]
    assert keyed == [(trial["trial_id"], "FINISHED")]
    record_faults("T2 SIGKILL trial driver", injected=1, survived=1, detail=f"epochs logged {steps}")
