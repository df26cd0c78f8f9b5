"""`sweeps.storage.set_aside_damaged_state`: Tune copies its state files into a local storage folder in
place, so a kill during the copy leaves a truncated file that stops every resume. The newest session
with an unreadable file (experiment state, search generator or searcher state) has its files renamed
``*.damaged`` so that Tune restores the session before; with no readable session left, nothing is
renamed and the error names ``resume``."""

from __future__ import annotations

import json
import pickle

import pytest

pytest.importorskip("ray")

import ray.cloudpickle  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402

from sweeps.spec import SpecError  # noqa: E402
from sweeps.storage import set_aside_damaged_state, tune_trial_ids  # noqa: E402

OLD, NEW = "2026-12-01_10-00-00", "2026-12-02_10-00-00"


def _session(folder, session: str, trial_ids: list[str]) -> str:
    """One Tune session's three state files; the experiment state from real trials' JSON states."""
    trials = [Trial("fn", config={}, trial_id=t, stub=True).get_json_state() for t in trial_ids]
    text = json.dumps({"trial_data": trials})
    (folder / f"experiment_state-{session}.json").write_text(text)
    # As Tune writes them: the generator's state with cloudpickle, an OptunaSearch's __dict__ pickled.
    (folder / f"search_gen_state-{session}.json").write_bytes(ray.cloudpickle.dumps({"counter": 2}))
    (folder / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"_ot_trials": {"a1": 0}}))
    return text


def test_a_truncated_newest_state_is_set_aside_with_its_session(tmp_path):
    _session(tmp_path, OLD, ["a1"])
    text = _session(tmp_path, NEW, ["a1", "b2"])
    (tmp_path / f"experiment_state-{NEW}.json").write_text(text[: len(text) // 2])  # the kill mid-copy
    moved = set_aside_damaged_state(str(tmp_path))
    names = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl")
    assert moved == [n.format(NEW) for n in names]
    assert sorted(p.name for p in tmp_path.glob("*.damaged")) == sorted(m + ".damaged" for m in moved)
    assert tune_trial_ids(tmp_path) == {"a1"}  # what Tune restores now: the session before
    assert set_aside_damaged_state(str(tmp_path)) == []  # readable now: nothing more to do


def test_valid_json_without_tunes_layout_counts_as_damaged(tmp_path):
    _session(tmp_path, OLD, ["a1"])
    _session(tmp_path, NEW, ["a1", "b2"])
    (tmp_path / f"experiment_state-{NEW}.json").write_text('{"runner_data": {}}')
    assert f"experiment_state-{NEW}.json" in set_aside_damaged_state(str(tmp_path))


def test_readable_states_are_left_alone(tmp_path):
    _session(tmp_path, OLD, ["a1"])
    _session(tmp_path, NEW, ["a1", "b2"])
    before = sorted(p.name for p in tmp_path.iterdir())
    assert set_aside_damaged_state(str(tmp_path)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert set_aside_damaged_state(str(tmp_path / "absent")) == []  # no state at all: the caller decides


def test_no_readable_state_is_an_error_and_nothing_is_renamed(tmp_path):
    text = _session(tmp_path, NEW, ["a1"])
    (tmp_path / f"experiment_state-{NEW}.json").write_bytes(text.encode()[:10] + b"\xff")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SpecError, match=r"^resume: no readable Tune experiment state .* new --name") as err:
        set_aside_damaged_state(str(tmp_path))
    assert err.value.field == "resume"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("name", ["search_gen_state-{}.json", "searcher-state-{}.pkl"])
def test_a_truncated_searcher_file_sets_its_session_aside(tmp_path, name):
    _session(tmp_path, OLD, ["a1"])
    _session(tmp_path, NEW, ["a1", "b2"])
    path = tmp_path / name.format(NEW)
    path.write_bytes(path.read_bytes()[:-3])  # the kill mid-copy: no STOP opcode
    moved = set_aside_damaged_state(str(tmp_path))
    assert len(moved) == 3 and all(NEW in m for m in moved)
    assert tune_trial_ids(tmp_path) == {"a1"}


def test_a_json_searcher_state_is_parsed(tmp_path):
    """`PointsSearcher` (search: grid) saves JSON, not a pickle."""
    _session(tmp_path, OLD, ["a1"])
    _session(tmp_path, NEW, ["a1", "b2"])
    path = tmp_path / f"searcher-state-{NEW}.pkl"
    path.write_text(json.dumps({"points": [{"lr": 0.1}], "next": 1, "given": {"a1": 0}}))
    assert set_aside_damaged_state(str(tmp_path)) == []
    path.write_text(path.read_text()[:-5])
    assert len(set_aside_damaged_state(str(tmp_path))) == 3


def test_cleanup_refuses_a_damaged_state_and_deletes_nothing(tmp_path, capsys):
    """`simlab-cleanup --sweep-dir` deletes the runs of trials the state does not hold: from a truncated
    newest state it must not guess (the session before lacks the newest trials): exit 2, a clear error."""
    from sweeps.cleanup import main
    from tests.support import sweep_store

    folder = tmp_path / "sweep"
    folder.mkdir()
    uri, client, exp_id, _ = sweep_store(folder, "sweep")
    run = client.create_run(exp_id, tags={"simlab.role": "trial", "mlflow.simlab.key": "b2"}).info.run_id
    _session(folder, OLD, ["a1"])
    text = _session(folder, NEW, ["a1", "b2"])
    (folder / f"experiment_state-{NEW}.json").write_text(text[: len(text) // 2])
    with pytest.raises(SystemExit) as exit_:
        main(["--tracking-uri", uri, "--sweep-dir", str(folder)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and "--resume" in err and "Traceback" not in err
    assert client.get_run(run).info.lifecycle_stage == "active"
