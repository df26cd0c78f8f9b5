"""The fault tests' readers of Tune's files while a sweep runs (tests/faults/helpers.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tests.faults.helpers import tune_trials


def _state(trial_id: str, status: str) -> str:
    meta = json.dumps({"trial_id": trial_id, "status": status, "config": {"alpha": 0.1}})
    runtime = json.dumps({"num_failures": 1})
    return json.dumps({"trial_data": [[meta, runtime]], "runner_data": {}, "stats": {}})


def test_tune_trials_reads_a_state_that_tune_is_rewriting_in_place(tmp_path: Path) -> None:
    # Tune opens the file with "w" (truncating it) and then dumps the JSON: a poll can see it empty.
    path = tmp_path / "experiment_state-2026-12-05_19-00-00.json"
    path.write_text("")
    writer = threading.Timer(0.5, path.write_text, args=(_state("abc_00000", "TERMINATED"),))
    writer.start()
    try:
        trials = tune_trials(tmp_path)
    finally:
        writer.join()
    assert trials == [
        {"trial_id": "abc_00000", "status": "TERMINATED", "num_failures": 1, "config": {"alpha": 0.1}}
    ]


def test_tune_trials_takes_the_newest_state_and_none_without_one(tmp_path: Path) -> None:
    assert tune_trials(tmp_path) == []
    (tmp_path / "experiment_state-2026-12-05_18-00-00.json").write_text(_state("old_00000", "RUNNING"))
    (tmp_path / "experiment_state-2026-12-05_19-00-00.json").write_text(_state("new_00000", "PENDING"))
    assert [t["trial_id"] for t in tune_trials(tmp_path)] == ["new_00000"]
