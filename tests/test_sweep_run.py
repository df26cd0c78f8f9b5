"""Real sweeps: Ray Tune + Optuna + simlab trials + a real sqlite MLflow store, on tiny data.

One local Ray instance per module (2 CPUs). The fast test runs 2 in-process trials of 1 epoch on a
digits subset; resume, the TorchTrainer mode and the two-node cluster run are `slow`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from simlab.train import METRIC_NAMES  # noqa: E402
from sweeps.driver import run_sweep  # noqa: E402
from sweeps.overrides import apply_overrides  # noqa: E402
from sweeps.presets import get_preset  # noqa: E402
from sweeps.spec import Objective, SweepSpec  # noqa: E402
from sweeps.summary import pareto_front  # noqa: E402
from sweeps.validation import build_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Post-hoc recalibration (Dir-ODIR's cross-validation dominates a 1-epoch trial) is off in the fast
# test and on in the TorchTrainer test, which checks the ts_/ets_/dir_ keys.
TINY_BASE = ("epochs=1", "subset_per_class=15", "batch_size=32", "recalibrate=false")
TINY = (*TINY_BASE, "label=onehot,similarity", "similarity=l2")


def tiny_spec(tmp: Path, name: str, *overrides: str, base: tuple[str, ...] = TINY, **top) -> SweepSpec:
    raw = apply_overrides(get_preset("quickstart"), [*base, f"cache_dir={tmp / 'cache'}", *overrides])
    top.setdefault("num_samples", 2)
    return build_spec(raw, preset="quickstart", name=name, storage=str(tmp / "sweeps"), **top)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_sweep(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    spec = tiny_spec(tmp, "tiny")
    summary = run_sweep(spec)
    return spec, summary


def runs_of(spec: SweepSpec):
    client = MlflowClient(spec.resolved_tracking_uri)
    exp = client.get_experiment_by_name(spec.name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


# ---------------------------------------------------------------------------------------------
def test_tiny_sweep_finishes_every_trial(tiny_sweep):
    spec, summary = tiny_sweep
    assert summary.num_finished == 2 and summary.num_errored == 0 and not summary.interrupted
    assert {r["method"] for r in summary.rows} == {"onehot", "similarity:l2"}  # the warm start covers both
    # Computed once by the driver through the store (one source: l2), before any trial.
    assert summary.matrix_stats == {"computed": 1, "loaded": 0}
    assert len(list((Path(spec.fixed["cache_dir"]) / "similarity").glob("*.npy"))) == 1
    best = summary.best[0]
    assert best["val_nll"] == min(r["val_nll"] for r in summary.rows)


def test_one_parent_run_and_one_child_run_per_trial(tiny_sweep):
    spec, summary = tiny_sweep
    _, runs = runs_of(spec)
    parents = [r for r in runs if r.data.tags.get("simlab.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["simlab.sweep"] == "tiny"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["mlflow.simlab.key"] for c in children} == {r["trial_id"] for r in summary.rows}
    assert all(c.info.status == "FINISHED" for c in children)


def test_child_runs_hold_spec_section_6_params_metrics_artifacts(tiny_sweep, tmp_path):
    spec, summary = tiny_sweep
    client, runs = runs_of(spec)
    rows = {r["trial_id"]: r for r in summary.rows}
    for run in (r for r in runs if r.data.tags.get("simlab.role") == "trial"):
        metrics, params = run.data.metrics, run.data.params
        expected = {*METRIC_NAMES, *(f"val_{m}" for m in METRIC_NAMES)}
        assert expected <= set(metrics), expected - set(metrics)
        for key in ("method", "label", "model", "dataset", "epochs", "lr", "seed", "loss"):
            assert key in params
        row = rows[run.data.tags["mlflow.simlab.key"]]
        assert params["method"] == row["method"] and run.info.run_name.startswith(row["method"])
        assert run.info.run_name.endswith(f"[{row['trial_id']}]")
        assert ("alpha" in params) == (row["method"] != "onehot")  # one-hot uses no smoothing mass
        assert "None" not in params.values()
        tags = run.data.tags  # provenance (sweeps.provenance)
        for key in ("mlflow.source.git.commit", "mlflow.user", "mlflow.source.name", "simlab.version.torch"):
            assert tags.get(key), key
        if row["method"] == "similarity:l2":
            assert params["similarity"] == "l2" and float(params["beta"]) == pytest.approx(
                row["params"]["beta"]
            )
        # per-epoch points: step = epoch
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"test_probs.npz", "config.json", "label_matrix.npy"} <= names
        assert any(n.endswith(".png") and "reliability" in n for n in names)
        # The logged test accuracy agrees with the logged probabilities (numpy, independently).
        local = client.download_artifacts(run.info.run_id, "test_probs.npz", str(tmp_path))
        with np.load(local) as npz:
            probs, labels = npz["probs"], npz["labels"]
        assert np.allclose(probs.sum(1), 1, atol=1e-4)
        assert metrics["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()), abs=1e-6)
        assert metrics["accuracy"] == pytest.approx(row["accuracy"])  # Tune and MLflow agree
        gap = float(probs.max(1).mean() - (probs.argmax(1) == labels).mean())
        assert metrics["confidence_gap"] == pytest.approx(gap, abs=1e-5)
        assert metrics["confidence_gap"] == pytest.approx(row["confidence_gap"])  # the summary's column


def test_existing_sweep_needs_resume(tiny_sweep):
    from sweeps.spec import SpecError

    spec, _ = tiny_sweep
    with pytest.raises(SpecError) as err:
        run_sweep(spec)
    assert err.value.field == "name" and "--resume" in str(err.value)


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    spec = SweepSpec(
        preset="x",
        name="x",
        objectives=(Objective("val_accuracy", "max"), Objective("val_ece_hist_output", "min")),
    )
    rows = [
        {"trial_id": str(i), "val_accuracy": float(a), "val_ece_hist_output": float(e)}
        for i, (a, e) in enumerate(rng.integers(0, 6, size=(40, 2)) / 5)
    ]
    front = {r["trial_id"] for r in pareto_front(rows, spec)}
    brute = set()
    for r in rows:
        beaten = False
        for o in rows:
            ge = (
                o["val_accuracy"] >= r["val_accuracy"]
                and o["val_ece_hist_output"] <= r["val_ece_hist_output"]
            )
            gt = o["val_accuracy"] > r["val_accuracy"] or o["val_ece_hist_output"] < r["val_ece_hist_output"]
            beaten |= ge and gt
        if not beaten:
            brute.add(r["trial_id"])
    assert front == brute and front


# ---------------------------------------------------------------------------------------------
def _count_runs(db: Path, status: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=10) as con:
            return con.execute(
                "select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                "where t.key = 'simlab.role' and t.value = 'trial' and r.status = ?",
                (status,),
            ).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.slow
def test_kill_then_resume_without_duplicates(tmp_path):
    """SIGKILL the CLI after its first trial finished, then --resume: every trial once, one MLflow run
    per trial, none left RUNNING, no Optuna trial left RUNNING."""
    args = [
        sys.executable,
        str(ROOT / "sweeps" / "calibration.py"),
        "--name",
        "kr",
        "--storage",
        str(tmp_path / "sweeps"),
        "--num-samples",
        "3",
        "--max-concurrent",
        "1",
        *[a for s in (*TINY, f"cache_dir={tmp_path / 'cache'}") for a in ("--set", s)],
    ]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    db = tmp_path / "sweeps" / "kr" / "mlflow.db"
    try:
        deadline = time.monotonic() + 400
        while _count_runs(db, "FINISHED") < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run([*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    spec = SweepSpec(preset="quickstart", name="kr", storage=str(tmp_path / "sweeps"))
    _, runs = runs_of(spec)
    children = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
    keys = [r.data.tags["mlflow.simlab.key"] for r in children]
    assert len(keys) == len(set(keys)) == 3
    assert all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in runs)
    assert sum(r.info.status == "FINISHED" for r in children) == 3
    assert len([r for r in runs if r.data.tags.get("simlab.role") == "sweep"]) == 1
    # The Optuna study saved with the sweep (Tune's searcher state): every trial told, none RUNNING.
    from sweeps.search import saved_optuna_study

    study, _ = saved_optuna_study(tmp_path / "sweeps" / "kr")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and states.count("COMPLETE") == 3, states


@pytest.mark.slow
def test_torch_trainer_trial(ray_local, tmp_path):
    spec = tiny_spec(
        tmp_path,
        "tt",
        "label=onehot",
        "recalibrate=true",
        base=TINY_BASE,
        num_samples=1,
        in_process=False,
        workers_per_trial=1,
    )
    summary = run_sweep(spec)
    assert summary.num_finished == 1, summary.rows
    (row,) = summary.rows
    assert (Path(spec.sweep_dir) / "train" / row["trial_id"]).is_dir()  # the Train run named by trial id
    client, runs = runs_of(spec)
    (child,) = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
    assert child.info.status == "FINISHED" and child.data.tags["mlflow.simlab.key"] == row["trial_id"]
    assert {
        *METRIC_NAMES,
        *(f"{p}{m}" for m in METRIC_NAMES for p in ("val_", "ts_", "ets_", "dir_")),
    } <= set(child.data.metrics)
    assert child.data.metrics["accuracy"] == pytest.approx(row["accuracy"])


@pytest.mark.slow
def test_asha_stopped_trials_end_finished_not_interrupted(ray_local, tmp_path):
    """ASHA stops weak trials at its rungs: they are 'stopped' (not an interrupted sweep), their MLflow
    runs end FINISHED tagged simlab.stopped_early, and only finished trials can be the best."""
    spec = tiny_spec(
        tmp_path, "asha", "epochs=3", num_samples=4, max_concurrent=1, scheduler="asha", grace_period=1
    )
    summary = run_sweep(spec)
    statuses = [r["status"] for r in summary.rows]
    assert set(statuses) <= {"finished", "stopped"} and not summary.interrupted, statuses
    assert "stopped" in statuses, statuses  # deterministic configs and CPU training: ASHA stops one
    client, runs = runs_of(spec)
    by_key = {r.data.tags["mlflow.simlab.key"]: r for r in runs if r.data.tags.get("simlab.role") == "trial"}
    for row in summary.rows:
        run = by_key[row["trial_id"]]
        assert run.info.status == "FINISHED"
        assert ("simlab.stopped_early" in run.data.tags) == (row["status"] == "stopped")
    assert summary.best[0]["status"] == "finished"
    parent = next(r for r in runs if r.data.tags.get("simlab.role") == "sweep")
    assert parent.info.status == "FINISHED"


# ---------------------------------------------------------------------------------------------
COUNT_ENV = "SIMLAB_TEST_COMPUTE_LOG"


def _count_similarity_computations() -> None:
    """Ray worker setup hook (and driver patch): log every similarity computation to a file."""
    from simlab.similarity.sources import SimilaritySource

    if getattr(SimilaritySource.__call__, "_counted", False):
        return
    original = SimilaritySource.__call__

    def counted(self, data, params=None, **kw):
        log = os.environ.get(COUNT_ENV)  # unset once the counting test is over: the patch stays, silent
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {self.name}\n")
        return original(self, data, params, **kw)

    counted._counted = True
    SimilaritySource.__call__ = counted


@pytest.mark.cluster
@pytest.mark.slow
def test_two_node_cluster_sweep_computes_each_matrix_once(tmp_path, monkeypatch):
    from ray import cloudpickle  # Ray pickles the setup hook with its own cloudpickle
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    log = tmp_path / "computations.log"
    monkeypatch.setenv(COUNT_ENV, str(log))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(
            address=cluster.address,
            runtime_env={
                "env_vars": {COUNT_ENV: str(log)},
                "worker_process_setup_hook": _count_similarity_computations,
            },
        )
        _count_similarity_computations()  # the driver process too
        spec = tiny_spec(tmp_path, "two", "similarity=l1,l2", "label=similarity", num_samples=4)
        summary = run_sweep(spec)
        assert summary.num_finished == 4
        lines = log.read_text().splitlines()
        sources = sorted(line.split()[1] for line in lines)
        assert sources == ["l1", "l2"]  # each matrix computed once, by the driver, none by trials
        assert {int(line.split()[0]) for line in lines} == {os.getpid()}

        # Control: the counter is really installed in Ray's worker processes (else 0 would prove nothing).
        @ray.remote(num_cpus=0.1)
        def counter_installed() -> bool:
            from simlab.similarity.sources import SimilaritySource

            return bool(getattr(SimilaritySource.__call__, "_counted", False))

        assert ray.get(counter_installed.remote())
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        assert {r["method"] for r in summary.rows} <= {"similarity:l1", "similarity:l2"}
        assert json.loads(json.dumps(summary.matrix_stats)) == {"computed": 2, "loaded": 0}
    finally:
        ray.shutdown()
        cluster.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _count_stage_runs(db: Path, stage: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=10) as con:
            return con.execute(
                "select count(*) from tags where key = 'simlab.stage' and value = ? and run_uuid in "
                "(select run_uuid from tags where key = 'simlab.role' and value = 'trial')",
                (stage,),
            ).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.slow
def test_seeds_two_stage_sweep_sigint_after_search_then_resume(tmp_path):
    """--seeds 2 on a tiny grid (2 methods x 2 search trials, 1 epoch): SIGINT once the search stage has
    finished, then --resume. The search stage is not redone (same 4 runs, untouched), the seeds stage
    runs each method's best search configuration (min val_nll, recomputed here from MLflow) on seeds
    0 and 1, and every run carries its stage tag."""
    name = "staged"
    sweep = tmp_path / "sweeps" / name
    sets = (*TINY, "search=grid", "alpha=0.1", "beta=2.0", "lr=0.05,0.1", f"cache_dir={tmp_path / 'cache'}")
    args = [
        sys.executable,
        str(ROOT / "sweeps" / "calibration.py"),
        "--name",
        name,
        "--storage",
        str(tmp_path / "sweeps"),
        "--max-concurrent",
        "1",
        "--seeds",
        "2",
        *[a for s in sets for a in ("--set", s)],
    ]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while not (sweep / "stages.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (sweep / "stages.json").exists(), "the search stage did not finish"
        # Ctrl-C once the seeds stage's first trial has opened its run (inside Tune's fit).
        while _count_stage_runs(sweep / "mlflow.db", "seeds") < 1 and proc.poll() is None:
            assert time.monotonic() < deadline, "the seeds stage did not start"
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    client = MlflowClient(f"sqlite:///{sweep}/mlflow.db")
    exp = client.get_experiment_by_name(name)

    def trial_runs(stage):
        return client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`simlab.role` = 'trial' and tags.`simlab.stage` = '{stage}'",
            max_results=1000,
        )

    before = {r.info.run_id: (r.info.status, r.info.end_time) for r in trial_runs("search")}
    assert len(before) == 4 and {s for s, _ in before.values()} == {"FINISHED"}
    assert sum(r.info.status == "FINISHED" for r in trial_runs("seeds")) < 4  # really interrupted

    done = subprocess.run([*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    search = trial_runs("search")
    assert {r.info.run_id: (r.info.status, r.info.end_time) for r in search} == before  # not redone
    seeds = [r for r in trial_runs("seeds") if r.info.status == "FINISHED"]
    assert len(seeds) == len(trial_runs("seeds")) == 4
    assert len({r.data.tags["mlflow.simlab.key"] for r in seeds}) == 4

    # Each method's best search run (min val_nll), from MLflow: its searched params are what the seeds
    # stage ran, on seeds 0 and 1.
    searched = ("label", "lr", "similarity", "beta", "alpha")
    for method in ("onehot", "similarity:l2"):
        mine = [r for r in search if r.data.tags["simlab.method"] == method]
        assert len(mine) == 2
        best = min(mine, key=lambda r: r.data.metrics["val_nll"])
        reruns = [r for r in seeds if r.data.tags["simlab.method"] == method]
        assert sorted(int(r.data.params["seed"]) for r in reruns) == [0, 1]
        for run in reruns:
            assert {k: run.data.params.get(k) for k in searched} == {
                k: best.data.params.get(k) for k in searched
            }
    state = json.loads((sweep / "stages.json").read_text())
    assert {c["method"]: c["trial_id"] for c in state["chosen"]} == {
        m: min(
            (r for r in search if r.data.tags["simlab.method"] == m), key=lambda r: r.data.metrics["val_nll"]
        ).data.tags["mlflow.simlab.key"]
        for m in ("onehot", "similarity:l2")
    }
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`simlab.role` = 'sweep'")
    assert sorted(r.data.tags["simlab.stage"] for r in parents) == ["search", "seeds"]
    # Per-epoch test accuracy reaches MLflow (step = epoch) with the best-epoch summary.
    run = seeds[0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_accuracy")] == [1]
    assert {"test_accuracy_best", "best_epoch"} <= set(run.data.metrics)


def test_runs_carry_dataset_input_and_best_model(tiny_sweep):
    """Dataset input (name, digest, split sizes) on every run; the best trial's model as an MLflow model."""
    import mlflow

    spec, summary = tiny_sweep
    client, runs = runs_of(spec)
    for run in runs:
        (ds,) = [d.dataset for d in run.inputs.dataset_inputs]
        profile = json.loads(ds.profile)
        assert ds.name == "digits" and len(ds.digest) == 10
        assert profile["train"] > 0 and profile["val"] > 0 and profile["test"] > 0
    best_run = next(r for r in runs if r.data.tags.get("mlflow.simlab.key") == summary.best[0]["trial_id"])
    (output,) = best_run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    mlflow.set_tracking_uri(spec.resolved_tracking_uri)
    try:
        net = mlflow.pytorch.load_model(model.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    import torch

    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dump_dom(chromium: str, url: str, profile: Path) -> str:
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=30000",  # let the single-page app fetch and render
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_mlflow_ui_in_a_headless_browser_shows_the_trials(tiny_sweep, tmp_path):
    """The printed `mlflow ui` command, run as printed, serves a UI in which headless Chromium finds
    every trial by its run name, the objective's metric column, and on a trial's page its params and
    metrics without the internal bookkeeping tags."""
    import shutil
    import urllib.request

    from sweeps.summary import format_summary

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip(reason="no chromium on PATH (scripts/system_deps.sh installs Debian's chromium)")
    spec, summary = tiny_sweep
    port = _free_port()
    text = format_summary(spec, summary, ui_port=port)
    command = next(x for x in text.splitlines() if x.startswith("MLflow UI:")).split(":", 1)[1].strip()
    url = (
        next(x for x in text.splitlines() if x.strip().startswith("then open"))
        .split("then open", 1)[1]
        .strip()
    )
    server = subprocess.Popen(
        ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path}", "bash", "-c", command],
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow ui did not answer"
                time.sleep(1)
        client, runs = runs_of(spec)
        trials = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
        dom = _dump_dom(chromium, url, tmp_path / "profile")
        for run in trials:
            assert run.info.run_name in dom, run.info.run_name
        assert spec.objectives[0].metric in dom  # the sort key's metric column
        best = next(r for r in trials if r.data.tags["mlflow.simlab.key"] == summary.best[0]["trial_id"])
        page = _dump_dom(
            chromium,
            f"http://127.0.0.1:{port}/#/experiments/{summary.experiment_id}/runs/{best.info.run_id}",
            tmp_path / "profile",
        )
        assert best.info.run_name in page and ">method<" in page and "val_accuracy" in page
        assert "mlflow.simlab.key" not in page and "owner.pid" not in page  # hidden bookkeeping
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_inprocess_trial_data_is_loaded_once_per_split(tmp_path, monkeypatch):
    """The actor-level dataset cache hands `fit` exactly what `load_dataset` gives, once per split."""
    from simlab.config import TrainConfig
    from simlab.data import load_dataset
    from sweeps import trainable

    monkeypatch.setattr(trainable, "_DATA_CACHE", [])
    base = {"dataset": "digits", "subset_per_class": 5, "val_fraction": 0.2, "cache_dir": str(tmp_path)}
    cfg = TrainConfig.from_dict(base)
    first = trainable._trial_data(cfg)
    assert trainable._trial_data(TrainConfig.from_dict({**base, "lr": 0.5})) is first  # same split
    ref = load_dataset("digits", cache_dir=tmp_path, val_fraction=0.2, subset_per_class=5, seed=0)
    assert first.identity == ref.identity
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch_equal(getattr(first, name), getattr(ref, name)), name
    other = trainable._trial_data(TrainConfig.from_dict({**base, "seed": 1}))  # another split
    assert other is not first and other.identity != first.identity
    assert len(trainable._DATA_CACHE) == 1  # one split held at a time


def torch_equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and torch.equal(a, b)


def test_trial_phase_timings_are_written_only_when_asked(tmp_path, monkeypatch):
    from sweeps import trial_phases as trainable

    monkeypatch.delenv(trainable.PROFILE_ENV, raising=False)
    off = trainable._Phases()
    off.mark("a")
    off.write("t0")  # no folder: nothing written, no error
    monkeypatch.setenv(trainable.PROFILE_ENV, str(tmp_path / "phases"))
    on = trainable._Phases()
    time.sleep(0.01)
    on.mark("a")
    on.add("b", 2.5)
    on.add("b", 0.5)
    on.write("t1")
    record = json.loads((tmp_path / "phases" / "t1.json").read_text())
    assert record["trial_id"] == "t1" and record["pid"] == os.getpid()
    assert record["phases_s"]["b"] == 3.0 and record["phases_s"]["a"] >= 0.01  # slept 0.01 s
    assert record["start"] <= record["end"]
    assert list((tmp_path / "phases").iterdir()) == [tmp_path / "phases" / "t1.json"]


def test_cpu_presets_and_the_default_spec_run_trials_in_process():
    """The cheap mode is the local default: Train V2 start-up (~1 min a trial) only for GPU presets."""
    from sweeps.presets import PRESETS

    assert SweepSpec.__dataclass_fields__["in_process"].default is True
    cpu = [name for name in PRESETS if get_preset(name).get("gpus_per_trial", 0.0) == 0.0]
    assert "quickstart" in cpu
    assert {name: get_preset(name).get("in_process", True) for name in cpu} == dict.fromkeys(cpu, True)
