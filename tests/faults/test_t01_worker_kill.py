"""T1: SIGKILL a Ray Train worker mid-trial; the trial resumes from its last checkpoint and finishes.

TorchTrainer mode (`--train-workers`), one DDP worker, Train's ``FailureConfig(max_failures=1)`` and
no Tune-level retry, so only Train's own recovery can save the trial.

The event waited for is the one the guarantee rests on: the epoch-1 checkpoint persisted, complete, in
the trial's Train run folder (``<sweep>/train/<trial id>/epoch_000001``). The worker is SIGKILLed at
once — usually before Ray Train's controller has polled the worker and registered that checkpoint
(it polls every 2 s), which is the case that used to restart from scratch on fast machines
(``steps [1, 1, 2, 2, 3]``): Ray hands the restarted worker no checkpoint, and the product must find
the persisted one itself (`sweeps.trainable.newest_persisted_checkpoint`). By the time the kill lands,
a fast machine may have persisted later epochs too (and Ray registered some of them); whichever it is,
the restarted worker must resume from the newest complete one (the worker is SIGSTOPped while the
test reads which that is, then SIGKILLed): every epoch logged, none up to that checkpoint logged twice,
at most the one after it redone, the trial finished, one MLflow run. Nothing here depends on how long
an epoch takes: EPOCHS is large enough that the trial is still running when the first checkpoint
appears.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from simlab.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, load_latest
from sweeps.trial_checkpoints import epoch_checkpoint_name
from tests.faults.helpers import Sweep, cmdline, descendants, record_faults, trial_steps, tune_trials

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EPOCHS = 12
WORKER = "RayTrainWorker"  # Ray's process title of a Train worker actor: ray::RayTrainWorker...


def _first_checkpoint(sweep_dir: Path) -> Path | None:
    """The epoch-1 checkpoint file once it is completely persisted (it loads), else None."""
    for path in (sweep_dir / "train").glob(f"*/{epoch_checkpoint_name(1)}/{CHECKPOINT_NAME}"):
        try:
            if load_checkpoint(path)["epoch"] == 1:
                return path
        except (CheckpointError, FileNotFoundError, KeyError):
            pass  # still being copied
    return None


def _newest_complete_epoch(run_dir: Path) -> int:
    """The newest training state any epoch folder holds completely (what a restart must resume from)."""
    epochs = []
    for folder in run_dir.glob("epoch_*"):
        try:
            found = load_latest(folder)
        except CheckpointError:
            continue  # cut short by the kill
        if found is not None:
            epochs.append(int(found[0]["epoch"]))
    return max(epochs)


def _registered(run_dir: Path) -> list[str]:
    """Checkpoint folders Ray Train's controller has registered (its snapshot in the run folder)."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return sorted(
        json.loads(r)["checkpoint_dir_name"] if isinstance(r, str) else r.get("checkpoint_dir_name", "?")
        for r in snapshot.get("checkpoint_results", [])
    )


def test_sigkill_train_worker_resumes_from_checkpoint(tmp_path: Path) -> None:
    sweep = Sweep(
        tmp_path,
        "t1",
        f"epochs={EPOCHS}",
        "train_max_failures=1",
        "tune_max_failures=0",
        args=("--num-samples", "1", "--train-workers", "--workers-per-trial", "1"),
    )
    sweep.start()
    try:
        deadline = time.monotonic() + 800  # a hang guard, not a timing assumption
        while (ckpt := _first_checkpoint(sweep.sweep_dir)) is None:
            assert sweep.proc.poll() is None, sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.05)
        workers = [p for p in descendants(sweep.proc.pid) if WORKER in cmdline(p)]
        assert len(workers) == 1, [cmdline(p)[:80] for p in descendants(sweep.proc.pid)]
        os.kill(workers[0], signal.SIGSTOP)  # frozen: the run folder now holds what the kill leaves
        run_dir = ckpt.parent.parent
        persisted = sorted(p.name for p in run_dir.glob("epoch_*"))
        registered = _registered(run_dir)
        resume_at = _newest_complete_epoch(run_dir)
        os.kill(workers[0], signal.SIGKILL)
        assert sweep.wait() == 0, sweep.tail()
    finally:
        sweep.kill_tree()

    (trial,) = tune_trials(sweep.sweep_dir)
    assert trial["status"] == "TERMINATED" and trial["num_failures"] == 0, trial  # Train recovered it
    assert "[FailurePolicy] RETRY" in sweep.output(), sweep.tail()  # ...after seeing the worker die
    steps = trial_steps(sweep.db)[trial["trial_id"]]
    assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), steps
    # Resumed from the newest complete checkpoint at the kill: no epoch up to it logged twice; only
    # the epoch after it may have been logged before the kill and trained again (<= 1 epoch redone).
    redone = sorted(e for e, n in Counter(steps).items() if n > 1)
    assert redone in ([], [resume_at + 1]), (steps, resume_at, persisted, registered)
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t1")
    children = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("simlab.role") == "trial"
    ]
    keyed = [(r.data.tags["mlflow.simlab.key"], r.info.status) for r in children]
    assert keyed == [(trial["trial_id"], "FINISHED")]
    record_faults(
        "T1 SIGKILL Train worker",
        injected=1,
        survived=1,
        detail=f"killed with {persisted} persisted, {registered or 'none'} registered by Ray; resumed "
        f"after epoch {resume_at}; epochs logged {steps}",
    )
