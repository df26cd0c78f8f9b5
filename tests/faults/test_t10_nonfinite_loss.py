"""T10: a NaN/inf loss stops training at that step with a clear reason, and nothing after it is kept.

The fault is real state, not a mock: the model weights in the epoch-1 checkpoint are overwritten with
NaN (or inf), as a diverged run would leave them, and training resumes from that checkpoint. The very
first step of epoch 2 then has a non-finite loss, so `fit` must raise `NonFiniteLossError` naming
epoch 2, step 1 and the value, log no metric for that epoch and write no checkpoint after it.
The sweep-level half of T10 (Tune error, MLflow run FAILED with the reason, Optuna trial not RUNNING,
other trials go on) is in test_sweep_faults.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from simlab.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from simlab.config import TrainConfig
from simlab.train import NonFiniteLossError, fit
from tests.faults.helpers import record_faults
from tests.support import TINY_SYNTHETIC, RecordingTracker, tiny_synthetic_data

pytestmark = pytest.mark.fault


class _StopAfterEpoch1(Exception):
    pass


def _stop_after_epoch_1(report: Any) -> None:
    if report.epoch == 1:
        raise _StopAfterEpoch1


@pytest.mark.parametrize("poison", [math.nan, math.inf], ids=["nan", "inf"])
def test_nonfinite_loss_stops_at_that_step_with_the_reason(tmp_path: Path, poison: float) -> None:
    cfg = TrainConfig.from_dict(
        {**TINY_SYNTHETIC, "epochs": 3, "recalibrate": False, "cache_dir": str(tmp_path)}
    )
    data = tiny_synthetic_data(str(tmp_path))
    ckpt = tmp_path / "ckpt"
    with pytest.raises(_StopAfterEpoch1):
        fit(cfg, data=data, checkpoint_dir=ckpt, on_epoch_end=_stop_after_epoch_1)
    path = checkpoint_paths(ckpt)[0]
    state = load_checkpoint(path)
    assert state["epoch"] == 1
    # Diverged weights: every floating tensor of the model becomes non-finite.
    state["model"] = {
        k: torch.full_like(v, poison) if v.is_floating_point() else v for k, v in state["model"].items()
    }
    save_checkpoint(state, path)

    tracker = RecordingTracker()
    epochs_seen: list[int] = []
    with pytest.raises(NonFiniteLossError) as info:
        fit(
            cfg,
            data=data,
            checkpoint_dir=ckpt,
            tracker=tracker,
            on_epoch_end=lambda r: epochs_seen.append(r.epoch),
        )
    message = str(info.value)
    assert "epoch 2" in message and "step 1/" in message, message  # the first step of the resumed epoch
    assert ("nan" in message) or ("inf" in message), message  # the value is named
    assert isinstance(info.value, FloatingPointError)
    assert tracker.metrics == [] and epochs_seen == []  # nothing reported for the failed epoch
    assert load_checkpoint(path)["epoch"] == 1  # no checkpoint written after the bad step
    record_faults(f"T10 {poison} weights", injected=1, survived=1)


# ------------------------------------------------------------------------------------------------
# T10 in a sweep
@pytest.mark.slow
def test_nan_trial_in_a_sweep_fails_cleanly_and_the_sweep_goes_on(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from sweeps.tracking import FAILURE_TAG
    from tests.faults.helpers import Sweep, optuna_study, tune_trials

    # lr 1e30 makes the first SGD step overflow the weights: the loss of step 2 is NaN.
    sweep = Sweep(
        tmp_path,
        "t10",
        "lr=0.05,1e30",
        "tune_max_failures=0",
        args=("--num-samples", "4", "--max-concurrent", "1"),
    )
    sweep.start()
    try:
        assert sweep.wait() == 0, sweep.tail()  # the sweep finished despite the failed trial(s)
    finally:
        sweep.kill_tree()

    trials = {t["trial_id"]: t for t in tune_trials(sweep.sweep_dir)}
    bad = {i for i, t in trials.items() if t["config"]["lr"] == 1e30}
    good = set(trials) - bad
    assert len(trials) == 4 and bad and good, f"need both lr values among the trials: {trials}"
    assert {trials[i]["status"] for i in bad} == {"ERROR"}
    assert {trials[i]["status"] for i in good} == {"TERMINATED"}  # the other trials went on

    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t10")
    runs = {
        r.data.tags["mlflow.simlab.key"]: r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("simlab.role") == "trial"
    }
    assert set(runs) == set(trials)
    for i in bad:
        assert runs[i].info.status == "FAILED"
        reason = runs[i].data.tags[FAILURE_TAG]
        assert "NonFiniteLossError" in reason and "epoch 1, step 2/" in reason and "nan" in reason, reason
        assert "train_loss" not in runs[i].data.metrics  # stopped within the first epoch: nothing reported
    assert {runs[i].info.status for i in good} == {"FINISHED"}
    assert "NonFiniteLossError" in sweep.output()  # the reason in Tune's error report too

    study, ot_trials = optuna_study(sweep.sweep_dir)
    states = {i: ot_trials[i].number for i in trials}
    by_number = {t.number: t.state.name for t in study.trials}
    assert {by_number[states[i]] for i in bad} == {"FAIL"}  # told, not left RUNNING
    assert {by_number[states[i]] for i in good} == {"COMPLETE"}
    record_faults("T10 NaN trial in a sweep", injected=len(bad), survived=len(bad))
