"""Fast checks of issue 15's building blocks: feasibility of a trial's request (against a brute-force
placement search), the start-up timeout, non-retryable errors, the SIGINT guard (real signals)."""

from __future__ import annotations

import itertools
import os
import signal
import time
from types import SimpleNamespace

import pytest

from simlab.checkpoint import CheckpointError
from simlab.errors import ConfigError, DataError, is_non_retryable
from simlab.train import NonFiniteLossError
from sweeps.feasibility import StartTimeout, infeasible_reason
from sweeps.spec import SpecError
from sweeps.stops import (
    INTERRUPTED,
    SCHEDULER,
    UNKNOWN,
    SigintGuard,
    clear_interrupted,
    mark_scheduler_stop,
    scheduler_stops,
    stop_cause,
    was_interrupted,
)


def _brute_force_fits(bundles, nodes) -> bool:
    """Try every assignment of bundles to nodes."""
    for assign in itertools.product(range(len(nodes)), repeat=len(bundles)):
        used = [dict.fromkeys(("CPU", "GPU"), 0.0) for _ in nodes]
        for b, n in zip(bundles, assign, strict=True):
            for k, v in b.items():
                used[n][k] = used[n].get(k, 0.0) + v
        if all(used[i][k] <= nodes[i].get(k, 0.0) + 1e-9 for i in range(len(nodes)) for k in used[i]):
            return True
    return False


CASES = [
    ([{"CPU": 1, "GPU": 2}], [{"CPU": 2}]),  # --gpus-per-trial 2 on a CPU-only machine
    ([{"CPU": 1, "GPU": 0.5}], [{"CPU": 2, "GPU": 1}]),
    ([{"CPU": 3, "GPU": 0}], [{"CPU": 2}, {"CPU": 2}]),
    (
        [{"CPU": 0.01}, {"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}],
        [{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}],
    ),
    ([{"CPU": 0.01}, {"CPU": 2}, {"CPU": 2}], [{"CPU": 2}, {"CPU": 2}]),  # driver share does not fit
    ([{"CPU": 0.01}, {"CPU": 1}, {"CPU": 1}, {"CPU": 1}], [{"CPU": 2}, {"CPU": 2}]),
    ([{"CPU": 1}], []),
]


@pytest.mark.parametrize(("bundles", "nodes"), CASES)
def test_infeasible_reason_agrees_with_brute_force(bundles, nodes):
    found = infeasible_reason(bundles, nodes)
    assert (found is None) == _brute_force_fits(bundles, nodes), found


def test_infeasible_reason_names_the_field():
    assert infeasible_reason([{"CPU": 1, "GPU": 2}], [{"CPU": 2}])[0] == "gpus_per_trial"
    assert infeasible_reason([{"CPU": 8, "GPU": 0}], [{"CPU": 2}])[0] == "cpus_per_trial"
    field, message = infeasible_reason([{"CPU": float("inf"), "GPU": 0}], [{"CPU": 2}])
    assert field == "cpus_per_trial" and "finite" in message
    assert infeasible_reason([{"CPU": 0.01}, {"CPU": 2}, {"CPU": 2}], [{"CPU": 2}, {"CPU": 2}])[0] == (
        "workers_per_trial"
    )


def test_start_timeout_raises_only_while_no_trial_started():
    watch = StartTimeout(1.0, what="a trial asks {'GPU': 2}")
    watch._deadline = time.monotonic() - 1.0  # past the deadline
    with pytest.raises(SpecError, match="gpus_per_trial.*no trial started"):
        watch.step([SimpleNamespace(status="PENDING")])
    started = StartTimeout(1.0)
    started._deadline = time.monotonic() - 1.0
    started.step([SimpleNamespace(status="PENDING"), SimpleNamespace(status="RUNNING")])
    started.step([SimpleNamespace(status="PENDING")])  # disarmed once a trial has started


def test_non_retryable_errors():
    assert is_non_retryable(DataError("empty zip")) and is_non_retryable(ConfigError("bad model_args"))
    assert is_non_retryable(ValueError("x")) and is_non_retryable(KeyError("x"))
    assert isinstance(DataError("x"), ValueError)  # callers that catch ValueError still do
    try:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as err:
        assert is_non_retryable(err)
    assert not is_non_retryable(RuntimeError("worker died"))
    assert not is_non_retryable(OSError("disk"))
    assert not is_non_retryable(CheckpointError("damaged; falls back to .prev"))
    assert not is_non_retryable(NonFiniteLossError("nan"))  # T10 keeps Tune's ERROR status


def test_stop_records(tmp_path):
    sweep = str(tmp_path / "sweep")
    os.makedirs(sweep)
    assert stop_cause(sweep, "t1") == UNKNOWN
    mark_scheduler_stop(sweep, "t1")
    assert stop_cause(sweep, "t1") == SCHEDULER and scheduler_stops(sweep) == {"t1"}
    with SigintGuard(sweep) as guard, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this ends
    assert guard.interrupted and was_interrupted(sweep)
    assert stop_cause(sweep, "t2") == INTERRUPTED and stop_cause(sweep, "t1") == SCHEDULER
    clear_interrupted(sweep)
    assert not was_interrupted(sweep) and stop_cause(sweep, "t2") == UNKNOWN


def test_sigint_guard_defers_during_ray_start_then_raises(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    with SigintGuard(str(tmp_path)) as guard:
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # not raised inside the deferred section
        assert guard.interrupted
        with pytest.raises(KeyboardInterrupt):
            guard.check()
        assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == "1"
    assert signal.getsignal(signal.SIGINT) is before


def test_infeasible_reason_names_gpus_first_when_both_are_short():
    assert infeasible_reason([{"CPU": 0.5, "GPU": 0.5}], [{"CPU": 0}])[0] == "gpus_per_trial"
