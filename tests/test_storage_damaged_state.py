"""`sweeps.storage.set_aside_damaged_state`: Tune copies its experiment state into a local storage
folder in place, so a kill during the copy leaves a truncated file that stops every resume. The newest
unreadable state and its session's searcher files are renamed ``*.damaged`` so that Tune restores the
session before; with no readable state left, nothing is renamed and the error names ``resume``."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")

from ray.tune.experiment import Trial  # noqa: E402

from sweeps.spec import SpecError  # noqa: E402
from sweeps.storage import set_aside_damaged_state, tune_trial_ids  # noqa: E402

OLD, NEW = "2026-12-01_10-00-00", "2026-12-02_10-00-00"


def _session(folder, session: str, trial_ids: list[str]) -> str:
    """One Tune session's three state files; the experiment state from real trials' JSON states."""
    trials = [Trial("fn", config={}, trial_id=t, stub=True).get_json_state() for t in trial_ids]
    text = json.dumps({"trial_data": trials})
    (folder / f"experiment_state-{session}.json").write_text(text)
    (folder / f"search_gen_state-{session}.json").write_bytes(b"\x80\x05pickle")
    (folder / f"searcher-state-{session}.pkl").write_bytes(b"\x80\x05pickle")
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
