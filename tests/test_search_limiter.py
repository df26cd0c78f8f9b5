"""`sweeps.search.ReconcilingSearchGenerator` through Tune's own trial creation, save and restore
(`next_trial`, `save_to_dir`, `restore_from_dir`; no Ray start). Tune saves its trials (experiment
state) and its searcher state as separate files and uploads them one by one: a SIGKILL in between
leaves a pair from two moments. Restored from such a pair, Tune's plain `SearchGenerator` +
`ConcurrencyLimiter` keep a finished trial's slot forever and the resumed sweep waits forever (the
control test below); the reconciling generator agrees with the restored trials instead."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("ray")

from optuna.trial import TrialState  # noqa: E402
from ray.tune.experiment import Experiment, Trial  # noqa: E402
from ray.tune.search import ConcurrencyLimiter  # noqa: E402
from ray.tune.search.search_generator import SearchGenerator  # noqa: E402

from sweeps import search  # noqa: E402
from sweeps.presets import get_preset  # noqa: E402
from sweeps.validation import build_spec  # noqa: E402

NUM_SAMPLES = 3
GRID_SPACE = {"label": {"choice": ["onehot", "uniform"]}, "lr": {"choice": [0.05, 0.1]}}


def _fn(config):  # the trainable the trials name (never run here)
    pass


def _spec(tmp_path, **top):
    top = {"max_concurrent": 1, **top}
    return build_spec(get_preset("quickstart"), preset="quickstart", name="lim", storage=str(tmp_path), **top)


def _started(gen, tmp_path):
    """``gen`` as Tune starts it: the experiment added, the search properties set."""
    gen.add_configurations(Experiment("lim", run=_fn, num_samples=NUM_SAMPLES, storage_path=str(tmp_path)))
    gen.set_search_properties(None, None, {})
    return gen


def _experiment_state(folder, trials: list[Trial]) -> None:
    """The experiment state as `TuneController.save_to_dir` writes it (the trials' own JSON states)."""
    state = {"trial_data": [t.get_json_state() for t in trials]}
    (folder / "experiment_state-s.json").write_text(json.dumps(state))


def _restored(folder, gen, tmp_path):
    gen = _started(gen, tmp_path)
    gen.restore_from_dir(str(folder))
    return gen


def _first_trial(tmp_path, gen, status: str):
    """A folder for the saved state, ``gen`` started, and its first trial (given ``status``)."""
    folder = tmp_path / "state"
    folder.mkdir()
    gen = _started(gen, tmp_path)
    first = gen.next_trial()
    assert first is not None and gen.next_trial() is None  # max_concurrent = 1
    first.status = status
    return folder, gen, first


def _older_searcher_newer_trials(tmp_path, make):
    """The searcher saved while trial 1 ran (1 created, 1 running); the trials saved after trial 1
    finished and trial 2 started. Returns the folder and the two trials."""
    folder, gen, first = _first_trial(tmp_path, make(), Trial.TERMINATED)
    gen.save_to_dir(str(folder), session_str="s")  # the searcher state, older
    gen.on_trial_complete(first.trial_id, result={"val_nll": 1.0})
    second = gen.next_trial()
    second.status = Trial.RUNNING
    _experiment_state(folder, [first, second])  # the trials, newer
    return folder, first, second


def test_tunes_plain_generator_keeps_a_finished_trials_slot_forever(tmp_path):
    spec = _spec(tmp_path)

    def plain():
        return SearchGenerator(ConcurrencyLimiter(search.make_searcher(spec), max_concurrent=1))

    folder, first, _ = _older_searcher_newer_trials(tmp_path, plain)
    gen = _restored(folder, plain(), tmp_path)
    assert gen.searcher.live_trials == {first.trial_id}
    assert all(gen.next_trial() is None for _ in range(5)) and not gen.is_finished()  # waits forever


@pytest.mark.parametrize("kind", ["optuna", "grid"])
def test_an_older_searcher_state_is_made_to_agree_with_the_restored_trials(tmp_path, kind, caplog):
    spec = _spec(tmp_path, **({"search": "grid", "space": GRID_SPACE} if kind == "grid" else {}))
    folder, first, second = _older_searcher_newer_trials(tmp_path, lambda: search.make_search_alg(spec))
    gen = search.make_search_alg(spec)
    with caplog.at_level(logging.WARNING, logger="sweeps.search"):
        gen = _restored(folder, gen, tmp_path)
    assert "different moments" in caplog.text
    assert gen.searcher.live_trials == {second.trial_id}  # what Tune runs again holds the slot
    assert gen._counter == 2
    assert gen.next_trial() is None  # second runs: the limit holds
    gen.on_trial_complete(second.trial_id, result={"val_nll": 2.0})
    third = gen.next_trial()
    assert third is not None and gen.next_trial() is None
    gen.on_trial_complete(third.trial_id, result={"val_nll": 3.0})
    assert gen.is_finished()  # exactly NUM_SAMPLES trials, not one more


def test_a_newer_searcher_state_replaces_the_lost_trial_and_fails_it_in_optuna(tmp_path, caplog):
    spec = _spec(tmp_path)
    folder, gen, first = _first_trial(tmp_path, search.make_search_alg(spec), Trial.TERMINATED)
    gen.on_trial_complete(first.trial_id, result={"val_nll": 1.0})
    _experiment_state(folder, [first])  # the trials, older: the next trial never reached them
    lost = gen.next_trial()
    gen.save_to_dir(str(folder), session_str="s")  # the searcher state, newer: `lost` running

    gen = search.make_search_alg(spec)
    with caplog.at_level(logging.WARNING, logger="sweeps.search"):
        gen = _restored(folder, gen, tmp_path)
    assert lost.trial_id in caplog.text
    assert gen._counter == 1 and gen.searcher.live_trials == set()
    optuna = gen.searcher.searcher
    study_trial = optuna._ot_study.trials[optuna._ot_trials[lost.trial_id].number]
    assert study_trial.state == TrialState.FAIL  # not left RUNNING
    made = [gen.next_trial()]
    gen.on_trial_complete(made[0].trial_id, result={"val_nll": 2.0})
    made.append(gen.next_trial())
    gen.on_trial_complete(made[1].trial_id, result={"val_nll": 3.0})
    assert all(made) and gen.is_finished()  # the lost trial replaced: NUM_SAMPLES trials in all


def test_a_consistent_pair_is_left_as_it_is(tmp_path, caplog):
    spec = _spec(tmp_path)
    folder, gen, first = _first_trial(tmp_path, search.make_search_alg(spec), Trial.RUNNING)
    _experiment_state(folder, [first])
    gen.save_to_dir(str(folder), session_str="s")
    with caplog.at_level(logging.WARNING, logger="sweeps.search"):
        gen = _restored(folder, search.make_search_alg(spec), tmp_path)
    assert not [r for r in caplog.records if r.name == "sweeps.search"]
    assert gen.searcher.live_trials == {first.trial_id} and gen._counter == 1 and gen.next_trial() is None


def test_no_experiment_state_beside_the_searcher_state_changes_nothing(tmp_path):
    spec = _spec(tmp_path)
    folder, first, _ = _older_searcher_newer_trials(tmp_path, lambda: search.make_search_alg(spec))
    (folder / "experiment_state-s.json").unlink()
    gen = _restored(folder, search.make_search_alg(spec), tmp_path)
    assert gen.searcher.live_trials == {first.trial_id} and gen._counter == 1


def test_unfinished_trial_ids_in_state(tmp_path):
    trials = []
    for i, status in enumerate((Trial.TERMINATED, Trial.ERROR, Trial.RUNNING, Trial.PENDING, Trial.PAUSED)):
        trials.append(Trial("fn", config={}, trial_id=f"t{i}", stub=True))
        trials[-1].status = status
    _experiment_state(tmp_path, trials)
    text = (tmp_path / "experiment_state-s.json").read_text()
    assert search.unfinished_trial_ids_in_state(text) == {"t2", "t3", "t4"}
    assert search.trial_ids_in_state(text) == {f"t{i}" for i in range(5)}


def test_without_max_concurrent_no_limiter(tmp_path):
    gen = search.make_search_alg(_spec(tmp_path, max_concurrent=0))
    assert isinstance(gen, SearchGenerator) and not isinstance(gen.searcher, ConcurrencyLimiter)
