"""Ray's and Optuna's private state that `sweeps.search` uses, checked on the installed classes (no Ray
start): the test fails when Ray is not the version pinned in pyproject.toml, or when one of the private
names `sweeps.search.PRIVATE_API` lists is gone or means something else.
"""

from __future__ import annotations

import inspect
import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

from sweeps import search  # noqa: E402
from sweeps.presets import get_preset  # noqa: E402
from sweeps.validation import build_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"ray\[.*\]==", d)]
    return pin.split("==", 1)[1]


def test_installed_ray_is_the_pinned_version():
    assert ray.__version__ == _ray_pin(), (
        f"Ray {ray.__version__} installed, {_ray_pin()} pinned: re-check sweeps.search.PRIVATE_API "
        "against the new Ray, then move the pin"
    )


def test_the_pin_comment_names_every_private_attribute():
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    at = next(i for i, x in enumerate(lines) if "ray[" in x and "==" in x)
    comment = []
    while lines[at - 1 - len(comment)].strip().startswith("#"):
        comment.append(lines[at - 1 - len(comment)])
    text = " ".join(comment)
    assert "sweeps/search.py" in text
    names = ("_ot_trials", "_ot_study", "_completed_trials", "_experiment_analysis", "_global_node")
    for name in (*names, "live_trials", "_counter"):
        assert name in text, name


def _spec(tmp_path, **top):
    return build_spec(get_preset("quickstart"), preset="quickstart", name="pin", storage=str(tmp_path), **top)


def test_optuna_search_keeps_its_trials_study_and_told_set_where_search_reads_them(tmp_path):
    import optuna

    searcher = search.make_searcher(_spec(tmp_path))
    assert isinstance(searcher._ot_trials, dict) and not searcher._ot_trials
    assert isinstance(searcher._ot_study, optuna.Study)
    assert isinstance(searcher._completed_trials, set)
    config = searcher.suggest("t1")
    assert "label" in config
    assert search.optuna_trial(searcher, "t1").params["label"] == config["label"]
    searcher.on_trial_complete("t1", result={"val_nll": 0.5})
    assert "t1" in searcher._completed_trials
    assert search.optuna_trial(searcher, "t1").value == 0.5

    # Tune's save (Searcher.save_to_dir -> OptunaSearch.save: a pickle of __dict__), read back.
    searcher.save_to_dir(str(tmp_path), session_str="s")
    assert [p.name for p in tmp_path.glob(search.SEARCHER_STATE_GLOB)] == ["searcher-state-s.pkl"]
    study, trials = search.saved_optuna_study(tmp_path)
    assert set(trials) == {"t1"}  # (the warm-start points wait in the study, enqueued)
    assert study.trials[trials["t1"].number].state.name == "COMPLETE"
    assert study.trials[trials["t1"].number].value == 0.5


def test_result_grid_keeps_tunes_trial_states_in_its_experiment_analysis():
    from ray.tune import ResultGrid

    analysis = SimpleNamespace(trials=[])
    grid = ResultGrid(analysis)
    assert grid._experiment_analysis is analysis
    analysis.trials = [SimpleNamespace(trial_id="a", status="TERMINATED")]
    assert search.trial_states(grid) == {"a": "TERMINATED"}


def test_experiment_state_files_and_their_trial_data():
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher
    from ray.tune.search.search_generator import SearchGenerator

    assert TuneController.CKPT_FILE_TMPL.format("*") == search.EXPERIMENT_STATE_GLOB
    assert Searcher.CKPT_FILE_TMPL.format("*") == search.SEARCHER_STATE_GLOB
    templates = (TuneController.CKPT_FILE_TMPL, SearchGenerator.CKPT_FILE_TMPL, Searcher.CKPT_FILE_TMPL)
    assert search.SESSION_STATE_FILES == templates
    assert '"trial_data": list(self._get_trial_checkpoints().values())' in inspect.getsource(
        TuneController.save_to_dir
    )
    assert "get_json_state()" in inspect.getsource(TuneController._get_trial_checkpoints)
    # The state as save_to_dir writes it, from real trials' JSON states.
    trials = [Trial("fn", config={"lr": 0.1}, trial_id=i, stub=True) for i in ("a1", "b2")]
    state = json.dumps({"trial_data": [t.get_json_state() for t in trials]})
    assert search.trial_ids_in_state(state) == {"a1", "b2"}


def test_the_local_head_flags_search_reads(monkeypatch):
    import ray._private.node as ray_node
    import ray._private.worker as ray_worker
    from ray._private.parameter import RayParams

    assert hasattr(ray_worker, "_global_node")
    init = inspect.getsource(ray_node.Node.__init__)
    assert "self.head = head" in init and "self._ray_params = ray_params" in init
    assert RayParams().autoscaling_config is None
    monkeypatch.setattr(ray_worker, "_global_node", SimpleNamespace(head=True, _ray_params=RayParams()))
    assert search.local_head_fixed() is True
    monkeypatch.setattr(ray_worker._global_node._ray_params, "autoscaling_config", "autoscaler.yaml")
    assert search.local_head_fixed() is False
    monkeypatch.setattr(ray_worker, "_global_node", None)
    assert search.local_head_fixed() is False


def test_the_restore_order_and_the_limiter_state_the_reconciling_generator_relies_on():
    """`ReconcilingSearchGenerator.restore_from_dir` reads the experiment state from the folder Tune
    restores the searcher from: Tune must download it there first, then restore the searcher, and the
    limiter's running set and the generator's count must be the attributes Tune saves and checks."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search import ConcurrencyLimiter, Searcher
    from ray.tune.search.search_generator import SearchGenerator

    resume = inspect.getsource(TuneController.resume)
    down = resume.index("self._checkpoint_manager.sync_down_experiment_state()")
    assert down < resume.index("self._search_alg.restore_from_dir(driver_staging_dir)")
    sync_down = inspect.getsource(_ExperimentCheckpointManager.sync_down_experiment_state)
    assert 'path.endswith(".json")' in sync_down  # experiment_state-*.json comes down too
    limiter = ConcurrencyLimiter(Searcher(metric="m", mode="min"), max_concurrent=2)
    assert limiter.live_trials == set() and limiter.num_unfinished_live_trials == 0 and not limiter.batch
    assert "len(self.live_trials) >= self.max_concurrent" in inspect.getsource(ConcurrencyLimiter.suggest)
    gen = SearchGenerator(limiter)
    assert gen._counter == 0 and "self._counter >= self._total_samples" in inspect.getsource(gen.is_finished)
    assert "searcher.get_state()" in inspect.getsource(SearchGenerator.save_to_dir)  # the limiter's
