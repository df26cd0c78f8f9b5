"""No hangs (issue 15, item 2): hopeless requests are refused up front, deterministic errors not retried.

- ``--gpus-per-trial 2`` on a machine Ray sees without 2 GPUs (a local cluster this sweep starts: fixed):
  exit 2 naming ``gpus_per_trial`` before any trial starts (it used to stay PENDING forever).
- A trial whose `fit` raises a non-retryable error (`simlab.errors.DataError`) with
  ``tune_max_failures=-1`` (retry forever): `fit` runs once, the trial ends at once with the reason in
  the summary and MLflow (FAILED), Optuna records FAIL, the sweep ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.faults.helpers import Sweep, record_faults, sql

pytestmark = [pytest.mark.fault, pytest.mark.slow]

CALLS_ENV = "SIMLAB_TEST_FIT_CALLS"


def test_gpu_request_no_node_has_is_refused_before_any_trial(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "t16gpu", args=("--num-samples", "1", "--gpus-per-trial", "2"))
    sweep.start()
    try:
        rc = sweep.wait(timeout=300)  # a hang (trials PENDING forever) ends here as a failure
    finally:
        sweep.kill_tree()
    assert rc == 2, sweep.tail()
    assert "gpus_per_trial" in sweep.output() and "Traceback" not in sweep.output(), sweep.tail()
    trial_runs = sql(
        sweep.db,
        "SELECT COUNT(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'simlab.role' AND t.value = 'trial'",
    )
    assert not trial_runs or trial_runs[0][0] == 0, trial_runs
    assert not list(sweep.sweep_dir.glob("inprocess_trainable_*")), "a trial started"
    record_faults("T16 infeasible GPU request", injected=1, survived=1, detail="exit 2 before any trial")


def _failing_fit() -> None:
    """Ray worker setup hook (and driver): `simlab.train.fit` raises a DataError, counting its calls."""
    import simlab.train
    from simlab.errors import DataError

    if getattr(simlab.train.fit, "_failing", False):
        return

    def fit(cfg, **kwargs):
        with open(os.environ[CALLS_ENV], "a") as fh:
            fh.write(f"{os.getpid()}\n")
        raise DataError("data_dir: the image archive holds one class (bad data, the same on every retry)")

    fit._failing = True
    simlab.train.fit = fit


@pytest.mark.timeout(900)  # the old behaviour (retry forever) ends here as a failure
@pytest.mark.parametrize("in_process", [True, False], ids=["in_process", "torch_trainer"])
def test_non_retryable_error_is_not_retried_even_with_infinite_retries(
    tmp_path: Path, monkeypatch, in_process: bool
) -> None:
    import ray
    from mlflow.tracking import MlflowClient
    from ray import cloudpickle

    from sweeps.driver import run_sweep
    from sweeps.overrides import apply_overrides
    from sweeps.presets import get_preset
    from sweeps.validation import build_spec
    from tests.faults.helpers import TINY_SWEEP, tune_trials

    calls = tmp_path / "calls.log"
    monkeypatch.setenv(CALLS_ENV, str(calls))
    if ray.is_initialized():
        ray.shutdown()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Both retry layers set to retry forever: Tune's (the trial) and, in TorchTrainer mode, Train's
    # (the worker group): neither may retry an error a retry cannot fix.
    raw = apply_overrides(
        get_preset("quickstart"),
        [*TINY_SWEEP, f"cache_dir={tmp_path / 'cache'}", "tune_max_failures=-1", "train_max_failures=-1"],
    )
    spec = build_spec(
        raw,
        preset="quickstart",
        name="t16bad",
        storage=str(tmp_path / "sweeps"),
        num_samples=1,
        in_process=in_process,
    )
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            runtime_env={"env_vars": {CALLS_ENV: str(calls)}, "worker_process_setup_hook": _failing_fit},
        )
        summary = run_sweep(spec)
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert len(calls.read_text().splitlines()) == 1  # fit ran once: no retry (Tune's nor Train's)
    (row,) = summary.rows
    assert row["status"] == "error" and "DataError" in row["error"] and "one class" in row["error"], row
    (trial,) = tune_trials(spec.sweep_dir)
    assert trial["num_failures"] == 0, trial
    client = MlflowClient(spec.resolved_tracking_uri)
    exp = client.get_experiment_by_name(spec.name)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("simlab.role") == "trial"]
    assert [r.info.status for r in runs] == ["FAILED"], runs
    assert "DataError" in runs[0].data.tags.get("simlab.failure_reason", ""), runs[0].data.tags
    record_faults(
        f"T16 non-retryable error, max_failures=-1, {'in-process' if in_process else 'TorchTrainer'}",
        injected=1,
        survived=1,
        detail="1 call, FAILED at once",
    )


@pytest.mark.cluster
def test_joined_cluster_that_never_fits_the_request_times_out_clearly(tmp_path: Path) -> None:
    """A cluster joined through RAY_ADDRESS may autoscale: warn, then stop after SIMLAB_START_TIMEOUT_S."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        sweep = Sweep(
            tmp_path,
            "t16wait",
            args=("--num-samples", "1", "--gpus-per-trial", "1"),
            env={"RAY_ADDRESS": cluster.address, "SIMLAB_START_TIMEOUT_S": "20"},
        )
        sweep.start()
        try:
            rc = sweep.wait(timeout=400)  # a hang ends here as a failure
        finally:
            sweep.kill_tree()
    finally:
        cluster.shutdown()
    out = sweep.output()
    assert rc == 2, sweep.tail()
    assert "waiting up to 20 s" in out, sweep.tail()  # the warning up front
    assert "gpus_per_trial" in out and "no trial started within 20 s" in out, sweep.tail()
    assert "Traceback" not in out.split("waiting up to")[-1], sweep.tail()
    record_faults(
        "T16 request no node fits, joined cluster", injected=1, survived=1, detail="warned, exit 2 after 20 s"
    )
