"""`--reuse` (sweeps/reuse.py): a trial whose configuration already finished adopts that run.

Real sqlite MLflow stores throughout; the last tests run real sweeps (Ray Tune, in-process trials) and
check the adopted numbers against an independent training of the same configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sweeps.reuse import (
    REUSED_COMMIT_TAG,
    REUSED_FROM_TAG,
    Reusable,
    adopt_run,
    find_reusable,
    resolve_sources,
    reuse_preview,
    trained_here,
)
from sweeps.spec import SpecError
from sweeps.tracking import MlflowTracker
from sweeps.trial_runs import STOPPED_TAG
from tests.support import sweep_store

ENV = {"simlab.device": "cpu", "simlab.world_size": "1", "simlab.precision_resolved": "fp32"}
PARAMS = {
    "method": "similarity:we",
    "alpha": "0.1",
    "beta": "2.0",
    "seed": "0",
    "device": "cpu",
    "epochs": "3",
}


def _trial(client, exp_id, parent, params=PARAMS, tags=ENV, status="FINISHED", metrics=None) -> str:
    run = client.create_run(
        exp_id,
        tags={
            "mlflow.parentRunId": parent,
            "simlab.role": "trial",
            "mlflow.source.git.commit": "c0ffee",
            **tags,
        },
    )
    rid = run.info.run_id
    for k, v in {**params, "train_samples": "500"}.items():
        client.log_param(rid, k, v)
    for step, value in enumerate(metrics or [0.5, 0.25, 0.125], start=1):
        client.log_metric(rid, "train_loss", value, step=step, timestamp=1_000 * step)
    client.set_terminated(rid, status)
    return rid


def _sources(uri: str, exp_id: str) -> list[dict[str, str]]:
    return [{"tracking_uri": uri, "experiment_id": exp_id, "given": "test"}]


# ---------------------------------------------------------------------------------------------
def test_sources_resolve_sweep_folders_uris_and_self(tmp_path):
    from tests.test_sweep_run import tiny_spec

    folder = tmp_path / "sweeps" / "done"
    folder.mkdir(parents=True)
    uri, _client, exp_id, _parent = sweep_store(folder, "done")
    done = tiny_spec(tmp_path, "done")
    (folder / "sweep_spec.json").write_text(json.dumps(done.to_json(), default=str))
    spec = tiny_spec(tmp_path, "new")
    got = resolve_sources(["self", str(folder), f"{uri}#done", str(folder)], spec, experiment_id="7")
    assert [(s.tracking_uri, s.experiment_id) for s in got] == [
        (spec.resolved_tracking_uri, "7"),
        (uri, exp_id),
    ]
    # Without this sweep's experiment (the CLI's early check), "self" waits for the driver.
    assert [s.given for s in resolve_sources(["self", str(folder)], spec)] == [str(folder)]


def test_bad_sources_are_refused_naming_reuse_and_create_nothing(tmp_path):
    from tests.test_sweep_run import tiny_spec

    spec = tiny_spec(tmp_path, "new")
    folder = tmp_path / "store"
    folder.mkdir()
    uri, *_ = sweep_store(folder, "there")
    missing_db = tmp_path / "nothing" / "mlflow.db"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sweep_spec.json").write_text("{not json")
    cases = {
        str(tmp_path / "no-such-sweep"): "not a sweep folder",
        f"sqlite:///{missing_db}#x": "no MLflow database",
        f"{uri}#not-there": "has no experiment 'not-there'",
        f"{uri}#": "no experiment name",
        "": "expected 'self'",
        str(broken): "unreadable sweep_spec.json",
    }
    for value, message in cases.items():
        with pytest.raises(SpecError, match=message) as err:
            resolve_sources([value], spec)
        assert err.value.field == "reuse"
    assert not missing_db.exists() and not missing_db.parent.exists()
    asha = tiny_spec(tmp_path, "asha", scheduler="asha")
    with pytest.raises(SpecError, match="needs scheduler 'none'"):
        resolve_sources(["self"], asha, experiment_id="1")
    assert resolve_sources([], asha) == []  # no --reuse: any scheduler


def test_only_a_finished_run_of_the_same_config_and_environment_is_reused(tmp_path):
    uri, client, exp_id, parent = sweep_store(tmp_path, "s")
    src = _sources(uri, exp_id)
    assert find_reusable(src, PARAMS, ENV) is None  # an empty store
    # Runs that must never be adopted:
    _trial(client, exp_id, parent, status="FAILED")
    _trial(client, exp_id, parent, status="KILLED")
    stopped = _trial(client, exp_id, parent)
    client.set_tag(stopped, STOPPED_TAG, "stopped early by the trial scheduler")
    _trial(client, exp_id, parent, params={**PARAMS, "beta": "4.0"})
    _trial(client, exp_id, parent, params={k: v for k, v in PARAMS.items() if k != "epochs"})  # fewer params
    _trial(client, exp_id, parent, params={**PARAMS, "ood_samples": "0"})  # more params
    _trial(client, exp_id, parent, tags={**ENV, "simlab.precision_resolved": "bf16+channels_last"})
    _trial(client, exp_id, parent, tags={**ENV, "simlab.world_size": "2"})
    _trial(client, exp_id, parent, tags={**ENV, "simlab.device": "cuda"})
    assert find_reusable(src, PARAMS, ENV) is None
    # A copy (a reuse of a reuse) is taken only when no original exists; then the earliest original.
    copy = _trial(client, exp_id, parent)
    client.set_tag(copy, REUSED_FROM_TAG, "sqlite:///elsewhere#abc")
    assert find_reusable(src, PARAMS, ENV) == Reusable(uri, copy, "test")
    first = _trial(client, exp_id, parent)
    _trial(client, exp_id, parent)
    assert find_reusable(src, PARAMS, ENV) == Reusable(uri, first, "test")
    assert find_reusable(src, PARAMS, ENV, exclude_run_id=first).run_id not in (first, copy)
    assert find_reusable(src, PARAMS, {**ENV, "simlab.precision_resolved": "bf16"}) is None


def test_runs_logged_before_the_environment_tags_need_an_in_process_sweep_and_a_named_device(tmp_path):
    uri, client, exp_id, parent = sweep_store(tmp_path, "old")
    old_env = {"simlab.precision_resolved": "fp32"}  # no simlab.device / simlab.world_size
    _trial(client, exp_id, parent, tags=old_env)
    src = _sources(uri, exp_id)
    assert find_reusable(src, PARAMS, ENV) is None  # the parent says nothing about the mode
    client.log_param(parent, "mode", "torch_trainer")
    assert find_reusable(src, PARAMS, ENV) is None  # DDP workers: the number of processes is unknown
    (tmp_path / "b").mkdir()
    uri2, client2, exp2, parent2 = sweep_store(tmp_path / "b", "old")
    client2.log_param(parent2, "mode", "in_process")
    rid = _trial(client2, exp2, parent2, tags=old_env)
    assert find_reusable(_sources(uri2, exp2), PARAMS, ENV) == Reusable(uri2, rid, "test")
    auto = {**PARAMS, "device": "auto"}
    _trial(client2, exp2, parent2, params=auto, tags=old_env)
    assert find_reusable(_sources(uri2, exp2), auto, ENV) is None  # auto: CPU or GPU, unknown


def test_adopting_copies_params_histories_artifacts_and_tags_once(tmp_path):
    (tmp_path / "a").mkdir()
    uri, client, exp_id, parent = sweep_store(tmp_path / "a", "a")
    rid = _trial(client, exp_id, parent, metrics=[0.9, 0.5, 0.4, 0.3])
    client.log_metric(rid, "val_nll", 1.5, step=2, timestamp=77)
    client.log_metric(rid, "val_nll", 1.25, step=4, timestamp=99)
    files = tmp_path / "files"
    (files / "nested").mkdir(parents=True)
    np.savez(files / "test_probs.npz", probs=np.eye(3), labels=np.arange(3))
    (files / "nested" / "note.txt").write_text("hello")
    client.log_artifacts(rid, str(files))
    # The trial's own run, in another store (as with a sweep folder given to --reuse).
    (tmp_path / "b").mkdir()
    uri_b, client_b, exp_b, parent_b = sweep_store(tmp_path / "b", "b")
    own = client_b.create_run(
        exp_b, tags={"mlflow.parentRunId": parent_b, "simlab.role": "trial"}
    ).info.run_id
    tracker = MlflowTracker(uri_b, own, spool_dir=tmp_path / "spool", heartbeat_interval=0)
    final = adopt_run(tracker, Reusable(uri, rid, "a"))
    tracker.close("FINISHED")
    source = client.get_run(rid)
    assert final == source.data.metrics == {"train_loss": 0.3, "val_nll": 1.25}
    copied = client_b.get_run(own)
    assert copied.info.status == "FINISHED"
    assert copied.data.params == source.data.params  # train_samples too: the run as it was trained
    for key in ("train_loss", "val_nll"):
        want = [(m.step, m.value, m.timestamp) for m in client.get_metric_history(rid, key)]
        assert [(m.step, m.value, m.timestamp) for m in client_b.get_metric_history(own, key)] == want
    assert copied.data.tags[REUSED_FROM_TAG] == f"{uri}#{rid}"
    assert copied.data.tags[REUSED_COMMIT_TAG] == "c0ffee"
    assert {k: copied.data.tags[k] for k in ENV} == ENV
    got = tmp_path / "got"
    client_b.download_artifacts(own, "", str(got))
    assert sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file()) == [
        "nested/note.txt",
        "test_probs.npz",
    ]
    assert np.array_equal(np.load(got / "test_probs.npz")["probs"], np.eye(3))
    # Again (a retried trial): the run stays as it was (original time stamps: no point is doubled).
    again = MlflowTracker(uri_b, own, spool_dir=tmp_path / "spool", heartbeat_interval=0)
    assert adopt_run(again, Reusable(uri, rid, "a")) == final
    again.close("FINISHED")
    assert len(client_b.get_metric_history(own, "train_loss")) == 4
    # A copy of the copy names the original run and the commit that trained it.
    third = client_b.create_run(exp_b, tags={"simlab.role": "trial"}).info.run_id
    t3 = MlflowTracker(uri_b, third, spool_dir=tmp_path / "spool", heartbeat_interval=0)
    adopt_run(t3, Reusable(uri_b, own, "b"))
    t3.close("FINISHED")
    tags = client_b.get_run(third).data.tags
    assert (tags[REUSED_FROM_TAG], tags[REUSED_COMMIT_TAG]) == (f"{uri}#{rid}", "c0ffee")


def test_a_trial_an_earlier_attempt_trained_goes_on_training(tmp_path):
    uri, client, exp_id, parent = sweep_store(tmp_path, "t")
    fresh = client.create_run(exp_id).info.run_id
    assert not trained_here(uri, fresh)  # a new run: adopt
    client.log_param(fresh, "seed", "0")
    assert not trained_here(uri, fresh)  # params alone are no training
    client.log_metric(fresh, "train_loss", 1.0, step=1)
    assert trained_here(uri, fresh)  # an epoch of its own: never mixed with an adopted history
    client.set_tag(fresh, REUSED_FROM_TAG, "sqlite:///x#y")
    assert not trained_here(uri, fresh)  # an adoption an earlier attempt began: finish it


def test_cli_refuses_a_missing_reuse_source_before_anything_starts(tmp_path, capsys):
    from sweeps.calibration import EXIT_BAD_SPEC, main

    storage = tmp_path / "sweeps"
    rc = main(["--storage", str(storage), "--set", "epochs=1", "--reuse", str(tmp_path / "gone")])
    assert rc == EXIT_BAD_SPEC
    err = capsys.readouterr().err
    assert "reuse" in err and "not a sweep folder" in err
    assert not storage.exists()


# ---------------------------------------------------------------------------------------------
# Real sweeps
ray = pytest.importorskip("ray")


def _trial_runs(spec, stage=None):
    client = MlflowClient(spec.resolved_tracking_uri)
    exp = client.get_experiment_by_name(spec.name)
    where = "tags.`simlab.role` = 'trial'" + (f" and tags.`simlab.stage` = '{stage}'" if stage else "")
    return client, client.search_runs([exp.experiment_id], filter_string=where, max_results=1000)


def test_seeds_stage_reuses_the_search_run_and_matches_a_fresh_training(tmp_path):
    """--seeds 2 --reuse self: the seeds stage adopts the search stage's run of the chosen configuration
    on seed 0 (same params, histories, artifacts) and trains seed 1; a separate sweep that trains that
    configuration on seed 0 again gets the adopted numbers (CPU training is deterministic)."""
    from sweeps.driver import run_staged_sweep, run_sweep
    from tests.test_sweep_run import TINY_BASE, tiny_spec

    one = (*TINY_BASE, "label=onehot", "search=grid")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = tiny_spec(tmp_path, "staged", "lr=0.05,0.1", base=one, seeds=2, max_concurrent=1)
        summary = run_staged_sweep(spec, reuse=["self"])
        assert summary.num_finished == 2 and summary.num_reused == 1
        # --dry-run's preview of a --resume: both search points are in the sweep's own store now.
        assert reuse_preview(spec, ["self"]) == (
            "reuse: stage 1 2 of 2 grid points have a finished run to adopt; "
            "stage 2 seeds: each choice's search seed is its search run"
        )
        assert reuse_preview(spec, []).startswith("reuse: stage 1 0 of 2 grid points")
        assert [r["reused"] for r in sorted(summary.rows, key=lambda r: r["params"]["seed"])] == [True, False]
        client, search = _trial_runs(spec, "search")
        _, seeds = _trial_runs(spec, "seeds")
        chosen = json.loads((Path(spec.sweep_dir) / "stages.json").read_text())["chosen"][0]
        best = next(r for r in search if r.data.tags["mlflow.simlab.key"] == chosen["trial_id"])
        reused = [r for r in seeds if REUSED_FROM_TAG in r.data.tags]
        trained = [r for r in seeds if REUSED_FROM_TAG not in r.data.tags]
        assert len(reused) == len(trained) == 1
        (copy,) = reused
        assert copy.info.status == "FINISHED" and copy.data.tags["simlab.stage"] == "seeds"
        assert copy.data.tags[REUSED_FROM_TAG] == f"{spec.resolved_tracking_uri}#{best.info.run_id}"
        assert copy.data.params == best.data.params and copy.data.metrics == best.data.metrics
        assert trained[0].data.params["seed"] == "1" and trained[0].data.metrics != best.data.metrics
        arts = {a.path for a in client.list_artifacts(copy.info.run_id)}
        assert arts == {a.path for a in client.list_artifacts(best.info.run_id)} and "test_probs.npz" in arts

        # Independent: the chosen configuration trained again on seed 0, in a sweep without --reuse.
        lr = chosen["params"]["lr"]
        fresh = tiny_spec(tmp_path, "fresh", f"lr={lr}", "seed=0", base=one)
        fresh_summary = run_sweep(fresh)
        assert fresh_summary.num_finished == 1 and fresh_summary.num_reused == 0
        _, (run,) = _trial_runs(fresh)
        assert REUSED_FROM_TAG not in run.data.tags
        shared = sorted(set(run.data.metrics) & set(copy.data.metrics))
        assert "ece_hist_prediction" in shared and "accuracy" in shared
        assert {k: run.data.metrics[k] for k in shared} == {k: copy.data.metrics[k] for k in shared}
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_torch_trainer_sweep_adopts_a_run_of_another_sweep_without_starting_workers(tmp_path):
    """The TorchTrainer mode checks before it builds its trainer: a one-worker CPU trial adopts the
    in-process sweep's run of its configuration (one process, same device, same precision)."""
    from sweeps.driver import run_sweep
    from tests.test_sweep_run import TINY_BASE, tiny_spec

    one = (*TINY_BASE, "label=onehot", "search=grid", "lr=0.05")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        first = tiny_spec(tmp_path, "first", base=one)
        assert run_sweep(first).num_finished == 1
        second = tiny_spec(tmp_path, "second", base=one, in_process=False, workers_per_trial=1)
        summary = run_sweep(second, reuse=[first.sweep_dir])
        assert summary.num_finished == summary.num_reused == 1
        _, (src,) = _trial_runs(first)
        _, (run,) = _trial_runs(second)
        assert run.data.tags[REUSED_FROM_TAG] == f"{first.resolved_tracking_uri}#{src.info.run_id}"
        assert run.data.metrics == src.data.metrics
        assert not (Path(second.sweep_dir) / "train").exists() or not any(
            (Path(second.sweep_dir) / "train").iterdir()
        )
    finally:
        ray.shutdown()
