"""T5: Ctrl-C (SIGINT to the sweep's process group, as a terminal sends it), then ``--resume``.

Trials that had finished before the interrupt (TERMINATED in Tune's saved state; a trial whose MLflow
run is closed but whose end Tune had not yet recorded is resumed, which is right) must not run again:
their MLflow runs keep exactly the points they had (a rerun would log every epoch again, with new
timestamps) and their end time, and Tune keeps them TERMINATED with no new failure. The sweep then
completes every trial.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.faults.helpers import Sweep, record_faults, sql, trial_steps, tune_trials

pytestmark = [pytest.mark.fault, pytest.mark.slow]

NUM_SAMPLES = 3


def _finished_runs(db: Path) -> dict[str, tuple[str, int]]:
    """Trial key -> (run id, end time) of the FINISHED trial runs."""
    rows = sql(
        db,
        "SELECT t.value, r.run_uuid, r.end_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "JOIN tags role ON role.run_uuid = r.run_uuid "
        "WHERE t.key = 'mlflow.simlab.key' AND role.key = 'simlab.role' AND role.value = 'trial' "
        "AND r.status = 'FINISHED'",
    )
    return {key: (run_id, end) for key, run_id, end in rows}


def test_sigint_then_resume_reruns_no_finished_trial(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "t5", args=("--num-samples", str(NUM_SAMPLES), "--max-concurrent", "1"))
    sweep.start()
    try:
        deadline = time.monotonic() + 600
        while not any(t["status"] == "TERMINATED" for t in tune_trials(sweep.sweep_dir)):
            assert sweep.proc.poll() is None, "the sweep ended before the interrupt:\n" + sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.5)
        sweep.signal_tree(signal.SIGINT)
        rc = sweep.wait(timeout=300)
    finally:
        sweep.kill_tree()
    assert rc != 0 or "interrupted" in sweep.output(), sweep.tail()
    terminated = {t["trial_id"] for t in tune_trials(sweep.sweep_dir) if t["status"] == "TERMINATED"}
    done_before = {k: v for k, v in _finished_runs(sweep.db).items() if k in terminated}
    steps_before = trial_steps(sweep.db)
    assert 1 <= len(done_before) == len(terminated) < NUM_SAMPLES, (done_before, terminated)

    sweep.start(resume=True)
    assert sweep.wait() == 0, sweep.tail()

    done_after = _finished_runs(sweep.db)
    steps_after = trial_steps(sweep.db)
    for key, (run_id, end) in done_before.items():
        assert done_after[key] == (run_id, end), key  # same run, not reopened or ended again
        assert steps_after[key] == steps_before[key], key  # not one more point: not rerun
    trials = tune_trials(sweep.sweep_dir)
    assert len(trials) == NUM_SAMPLES and {t["status"] for t in trials} == {"TERMINATED"}, trials
    assert all(t["num_failures"] == 0 for t in trials if t["trial_id"] in done_before), trials
    assert len(done_after) == NUM_SAMPLES
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t5")
    assert all(r.info.status != "RUNNING" for r in client.search_runs([exp.experiment_id]))
    record_faults(
        "T5 SIGINT + resume", injected=1, survived=1, detail=f"{len(done_before)} finished before, none rerun"
    )
