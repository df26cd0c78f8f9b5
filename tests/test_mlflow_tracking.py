"""sweeps.tracking against a real MLflow SQL store (sqlite, in-process client).

Outages here are real: the tracker is pointed at a closed port on 127.0.0.1 (connection refused), and
the spool it writes is then replayed into the sqlite store. The expected values are what the test
itself logged, read back through MLflow's own client. The restart-a-real-server outage is T6 in
tests/faults/.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from simlab.tracking import Tracker
from sweeps import tracking as mt
from sweeps.tracking import liveness


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connections are refused


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowClient(uri).search_experiments()  # creates the schema once for the module
    return uri


@pytest.fixture
def exp_id(store_uri: str, request: pytest.FixtureRequest) -> str:
    return mt.ensure_experiment(store_uri, f"exp-{request.node.name}")


@pytest.fixture
def dead_uri() -> str:
    return f"http://127.0.0.1:{_closed_port()}"


def _fast(tracker_kwargs: dict | None = None) -> dict:
    """Tracker options that give up quickly on a dead server (the tests only need 'it is down')."""
    return {
        "max_attempts": 1,
        "base_delay": 0.01,
        "max_delay": 0.02,
        "close_timeout": 0.1,
        **(tracker_kwargs or {}),
    }


def _spooled_tracker(store_uri: str, dead_uri: str, run_id: str, spool: Path) -> mt.MlflowTracker:
    """A tracker whose server is unreachable: every call lands in ``spool``."""
    return mt.MlflowTracker(dead_uri, run_id, spool_dir=spool, **_fast())


# ------------------------------------------------------------------------------------------------
def test_ensure_experiment_is_idempotent_and_restores_deleted(store_uri: str) -> None:
    client = MlflowClient(store_uri)
    first = mt.ensure_experiment(store_uri, "idem")
    assert mt.ensure_experiment(store_uri, "idem") == first
    client.delete_experiment(first)
    assert mt.ensure_experiment(store_uri, "idem") == first
    assert client.get_experiment(first).lifecycle_stage == "active"
    assert [e.name for e in client.search_experiments(filter_string="name = 'idem'")] == ["idem"]


def test_get_or_create_run_reattaches_never_duplicates(store_uri: str, exp_id: str) -> None:
    client = MlflowClient(store_uri)
    parent = client.create_run(exp_id, run_name="sweep").info.run_id
    a = mt.get_or_create_run(
        store_uri, exp_id, key="trial_00001", run_name="t1", parent_run_id=parent, tags={"sweep": "s"}
    )
    b = mt.get_or_create_run(store_uri, exp_id, key="trial_00002", run_name="t2")
    assert a != b
    client.set_terminated(a, status="KILLED")  # e.g. marked stale before the sweep resumed
    again = mt.get_or_create_run(store_uri, exp_id, key="trial_00001", run_name="t1")
    assert again == a
    run = client.get_run(a)
    assert run.info.status == "RUNNING"  # reopened
    assert run.data.tags[mt.KEY_TAG] == "trial_00001"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["sweep"] == "s"
    keys = [r.data.tags.get(mt.KEY_TAG) for r in client.search_runs([exp_id])]
    assert sorted(k for k in keys if k) == ["trial_00001", "trial_00002"]


def test_bookkeeping_tags_are_internal_and_legacy_runs_still_found(store_uri: str, exp_id: str) -> None:
    """Key/owner/heartbeat tags sit under `mlflow.` (hidden by the MLflow UI); a run written with the
    legacy `simlab.key` / `simlab.owner.*` names is still reattached and still judged stale."""
    for name in (mt.KEY_TAG, mt.HOST_TAG, mt.PID_TAG, mt.PID_START_TAG, mt.HEARTBEAT_TAG):
        assert name.startswith("mlflow.simlab.")
    client = MlflowClient(store_uri)
    legacy = client.create_run(exp_id, tags={"simlab.key": "old_00001"}).info.run_id
    assert mt.get_or_create_run(store_uri, exp_id, key="old_00001", run_name="r") == legacy
    assert client.get_run(legacy).data.tags[mt.KEY_TAG] == "old_00001"  # migrated on reattach
    dead = client.create_run(
        exp_id,
        tags={"simlab.owner.host": "elsewhere", "simlab.owner.pid": "1", "simlab.heartbeat": "0"},
    ).info.run_id
    assert dead in mt.mark_stale_runs(store_uri, exp_id, heartbeat_timeout=3600)


def test_get_or_create_run_resolves_a_creation_race_to_the_oldest(store_uri: str, exp_id: str) -> None:
    # The aftermath of two processes creating the same key at once: two runs with one key.
    client = MlflowClient(store_uri)
    t = int(time.time() * 1000)
    old = client.create_run(exp_id, start_time=t, tags={mt.KEY_TAG: "raced"}).info.run_id
    client.create_run(exp_id, start_time=t + 5, tags={mt.KEY_TAG: "raced"})
    assert mt.get_or_create_run(store_uri, exp_id, key="raced", run_name="r") == old


def test_get_or_create_run_keeps_reopen_false_status(store_uri: str, exp_id: str) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="k", run_name="r")
    MlflowClient(store_uri).set_terminated(run_id, status="FINISHED")
    assert mt.get_or_create_run(store_uri, exp_id, key="k", run_name="r", reopen=False) == run_id
    assert MlflowClient(store_uri).get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"key": "it's"}, ValueError, "key"),
        ({"key": ""}, ValueError, "key"),
        ({"key": 3}, ValueError, "key"),
        ({"run_name": ""}, ValueError, "run_name"),
        ({"parent_run_id": 5}, TypeError, "parent_run_id"),
        ({"tags": ["a"]}, TypeError, "tags"),
    ],
)
def test_get_or_create_run_rejects_bad_input(store_uri: str, kwargs: dict, exc: type, needle: str) -> None:
    args = {"key": "k", "run_name": "r", **kwargs}
    with pytest.raises(exc, match=needle):
        mt.get_or_create_run(store_uri, "0", **args)


def test_bad_input_fails_before_any_request(dead_uri: str, tmp_path: Path) -> None:
    # The server is unreachable: a request would fail with an MlflowException, so these ValueErrors and
    # TypeErrors can only come from validation before any request.
    with pytest.raises(ValueError, match="name"):
        mt.ensure_experiment(dead_uri, "  ")
    with pytest.raises(TypeError, match="tracking_uri"):
        mt.ensure_experiment("", "x")
    with pytest.raises(ValueError, match="run_id"):
        mt.MlflowTracker(dead_uri, "../etc", spool_dir=tmp_path)
    with pytest.raises(TypeError, match="spool_dir"):
        mt.MlflowTracker(dead_uri, "abc", spool_dir=3)
    with pytest.raises(ValueError, match="max_attempts"):
        mt.MlflowTracker(dead_uri, "abc", spool_dir=tmp_path, max_attempts=0)
    with pytest.raises(ValueError, match="status"):
        mt.mark_stale_runs(dead_uri, "0", status="FINISHED")
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        mt.mark_stale_runs(dead_uri, "0", heartbeat_timeout=0)


def test_tracker_implements_tracker_protocol_and_logs(store_uri: str, exp_id: str, tmp_path: Path) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="log", run_name="log")
    art = tmp_path / "config.json"
    art.write_text('{"alpha": 0.1}')
    with mt.MlflowTracker(store_uri, run_id, spool_dir=tmp_path / "spool") as tracker:
        assert isinstance(tracker, Tracker)
        tracker.log_params({"alpha": 0.1, "loss": "ce"})
        tracker.log_params({"alpha": 0.1})  # same value again: a no-op
        with pytest.raises(ValueError, match="alpha"):
            tracker.log_params({"alpha": 0.2})
        for epoch in range(3):
            tracker.log_metrics({"accuracy": 0.5 + epoch / 10, "nll": 1.0 / (epoch + 1)}, step=epoch)
        tracker.set_tags({"phase": "done"})
        tracker.log_artifact(art)
        with pytest.raises(ValueError, match="step"):
            tracker.log_metrics({"accuracy": 1.0}, step=-1)
        with pytest.raises(TypeError, match="accuracy"):
            tracker.log_metrics({"accuracy": "high"}, step=0)
        with pytest.raises(FileNotFoundError, match="path"):
            tracker.log_artifact(tmp_path / "missing.png")
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"alpha": "0.1", "loss": "ce"}
    assert run.data.tags["phase"] == "done"
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "accuracy"))
    assert hist == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert [f.path for f in client.list_artifacts(run_id)] == ["config.json"]
    assert not list((tmp_path / "spool").iterdir())  # nothing was spooled


def test_close_with_reason_marks_failed(store_uri: str, exp_id: str, tmp_path: Path) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="nan", run_name="nan")
    with pytest.raises(FloatingPointError):
        with mt.MlflowTracker(store_uri, run_id, spool_dir=tmp_path):
            raise FloatingPointError("loss is nan at epoch 1 step 3")
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[mt.FAILURE_TAG] == "FloatingPointError: loss is nan at epoch 1 step 3"


def test_outage_spools_in_order_and_replay_loses_nothing(
    store_uri: str, exp_id: str, dead_uri: str, tmp_path: Path
) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="outage", run_name="outage")
    spool = tmp_path / "spool"
    art = tmp_path / "diagram.png"
    art.write_bytes(b"\x89PNG fake but real bytes")
    tracker = _spooled_tracker(store_uri, dead_uri, run_id, spool)
    tracker.log_params({"alpha": 0.3})
    logged = []
    for epoch in range(5):
        tracker.log_metrics({"val_nll": 2.0 - epoch * 0.25}, step=epoch)
        logged.append((epoch, 2.0 - epoch * 0.25))
    tracker.log_artifact(art)
    art.unlink()  # the spool must hold its own copy
    # 1 owner-tag call + 1 params + 5 metrics + 1 artifact, all waiting, in order.
    records = mt.pending_spool_records(spool, run_id)
    assert [r["op"] for r in records] == ["batch"] * 7 + ["artifact"]
    assert [r["seq"] for r in records] == list(range(8))
    assert [r["metrics"][0][3] for r in records[2:7]] == [0, 1, 2, 3, 4]
    with pytest.raises(mt.SpoolNotDrainedError, match=run_id):
        tracker.close()
    # The server "comes back": the same run, reached through the sqlite store.
    assert mt.replay_spool(store_uri, spool, run_id) == 8
    client = MlflowClient(store_uri)
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_nll"))
    assert hist == logged
    assert client.get_run(run_id).data.params == {"alpha": "0.3"}
    assert [f.path for f in client.list_artifacts(run_id)] == ["diagram.png"]
    assert not (spool / f"{run_id}.jsonl").exists()
    assert mt.pending_spool_records(spool, run_id) == []


def test_replaying_twice_never_duplicates_a_point(
    store_uri: str, exp_id: str, dead_uri: str, tmp_path: Path
) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="twice", run_name="twice")
    spool = tmp_path / "spool"
    tracker = _spooled_tracker(store_uri, dead_uri, run_id, spool)
    tracker.log_params({"seed": 0})
    for epoch in range(3):
        tracker.log_metrics({"accuracy": 0.1 * epoch, "nll": 1.0}, step=epoch)
    saved = tmp_path / "saved.jsonl"
    shutil.copy(spool / f"{run_id}.jsonl", saved)
    assert mt.replay_spool(store_uri, spool, run_id) == 5
    # A crash after delivering but before acknowledging: the whole spool is delivered again.
    shutil.copy(saved, spool / f"{run_id}.jsonl")
    assert mt.replay_spool(store_uri, spool, run_id) == 5
    client = MlflowClient(store_uri)
    assert len(client.get_metric_history(run_id, "accuracy")) == 3
    assert len(client.get_metric_history(run_id, "nll")) == 3
    assert client.get_run(run_id).data.params == {"seed": "0"}


def test_acknowledged_records_are_not_replayed_and_torn_line_is_dropped(
    store_uri: str, exp_id: str, dead_uri: str, tmp_path: Path
) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="torn", run_name="torn")
    spool = tmp_path / "spool"
    tracker = _spooled_tracker(store_uri, dead_uri, run_id, spool)
    for epoch in range(3):
        tracker.log_metrics({"accuracy": float(epoch)}, step=epoch)
    path = spool / f"{run_id}.jsonl"
    (spool / f"{run_id}.ack").write_text("1")  # owner tags and epoch 0 were delivered
    with open(path, "a") as fh:
        fh.write('{"seq": 99, "op": "batch", "metr')  # the writer died mid-append
    assert [r["seq"] for r in mt.pending_spool_records(spool, run_id)] == [2, 3]
    # A new owner (e.g. the trial after a restore) repairs the file and appends after it.
    tracker2 = _spooled_tracker(store_uri, dead_uri, run_id, spool)
    tracker2.log_metrics({"accuracy": 3.0}, step=3)
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    assert [r["seq"] for r in mt.pending_spool_records(spool, run_id)] == [2, 3, 4, 5]
    assert mt.replay_spool(store_uri, spool, run_id) == 4
    hist = sorted((m.step, m.value) for m in MlflowClient(store_uri).get_metric_history(run_id, "accuracy"))
    assert hist == [(1, 1.0), (2, 2.0), (3, 3.0)]  # step 0 was acknowledged as delivered by the "first owner"


def test_next_tracker_on_the_run_replays_the_previous_spool(
    store_uri: str, exp_id: str, dead_uri: str, tmp_path: Path
) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="handover", run_name="handover")
    spool = tmp_path / "spool"
    old = _spooled_tracker(store_uri, dead_uri, run_id, spool)
    old.log_metrics({"accuracy": 0.25}, step=0)
    # The process dies; the restored trial opens a tracker on the same run and spool, server up.
    new = mt.MlflowTracker(store_uri, run_id, spool_dir=spool, probe_interval=0)
    new.log_metrics({"accuracy": 0.5}, step=1)
    new.close()
    hist = sorted((m.step, m.value) for m in MlflowClient(store_uri).get_metric_history(run_id, "accuracy"))
    assert hist == [(0, 0.25), (1, 0.5)]
    assert not (spool / f"{run_id}.jsonl").exists()


_OWNER = textwrap.dedent(
    """
    import sys, time
    from sweeps.tracking import get_or_create_run
    print(get_or_create_run(sys.argv[1], sys.argv[2], key=sys.argv[3], run_name=sys.argv[3]), flush=True)
    time.sleep(600)
    """
)


def test_mark_stale_runs_kills_runs_of_dead_owners_only(store_uri: str, exp_id: str) -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, store_uri, exp_id, "victim"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
    )
    try:
        victim = proc.stdout.readline().strip()
        assert victim, "the owner process did not create its run"
        client = MlflowClient(store_uri)
        assert client.get_run(victim).info.status == "RUNNING"
        assert mt.mark_stale_runs(store_uri, exp_id) == []  # its owner is alive
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    alive = mt.get_or_create_run(store_uri, exp_id, key="alive", run_name="alive")  # owned by this process
    remote_old = client.create_run(
        exp_id, tags={mt.HOST_TAG: "elsewhere", mt.PID_TAG: "1", mt.HEARTBEAT_TAG: str(time.time() - 7200)}
    ).info.run_id
    remote_fresh = client.create_run(
        exp_id, tags={mt.HOST_TAG: "elsewhere", mt.PID_TAG: "1", mt.HEARTBEAT_TAG: str(time.time())}
    ).info.run_id
    finished = mt.get_or_create_run(store_uri, exp_id, key="done", run_name="done")
    client.set_terminated(finished, status="FINISHED")

    assert sorted(mt.mark_stale_runs(store_uri, exp_id, dry_run=True)) == sorted([victim, remote_old])
    assert client.get_run(victim).info.status == "RUNNING"  # dry run changed nothing
    assert sorted(mt.mark_stale_runs(store_uri, exp_id, heartbeat_timeout=3600)) == sorted(
        [victim, remote_old]
    )
    status = {r: client.get_run(r).info.status for r in (victim, remote_old, remote_fresh, alive, finished)}
    assert status == {
        victim: "KILLED",
        remote_old: "KILLED",
        remote_fresh: "RUNNING",
        alive: "RUNNING",
        finished: "FINISHED",
    }
    assert "no longer running" in client.get_run(victim).data.tags[mt.STALE_TAG]
    assert mt.mark_stale_runs(store_uri, exp_id, heartbeat_timeout=3600) == []  # idempotent


def test_owner_tags_detect_pid_reuse() -> None:
    tags = mt.owner_tags()
    assert tags[mt.PID_TAG].isdigit()
    if mt.PID_START_TAG not in tags:
        pytest.skip(reason="no /proc on this platform: pid reuse cannot be detected")
    assert liveness.pid_alive(int(tags[mt.PID_TAG]), tags[mt.PID_START_TAG])
    assert not liveness.pid_alive(
        int(tags[mt.PID_TAG]), "0"
    )  # same pid, another start time: a different process


def test_delete_orphan_runs_removes_only_trials_the_sweep_lost(store_uri: str, exp_id: str) -> None:
    from mlflow.entities import ViewType

    client = MlflowClient(store_uri)
    tags = {"simlab.role": "trial"}
    kept = [mt.get_or_create_run(store_uri, exp_id, key=k, run_name=k, tags=tags) for k in ("t1", "t2")]
    lost = mt.get_or_create_run(store_uri, exp_id, key="t3", run_name="t3", tags=tags)  # RUNNING
    parent = mt.get_or_create_run(
        store_uri, exp_id, key="sweep:s", run_name="s", tags={"simlab.role": "sweep"}
    )
    with pytest.raises(TypeError, match="live_keys"):
        mt.delete_orphan_runs(store_uri, exp_id, live_keys="t1")
    assert mt.delete_orphan_runs(store_uri, exp_id, live_keys=["t1", "t2"], dry_run=True) == [lost]
    assert client.get_run(lost).info.lifecycle_stage == "active"
    assert mt.delete_orphan_runs(store_uri, exp_id, live_keys={"t1", "t2"}) == [lost]
    gone = client.get_run(lost)
    assert (gone.info.lifecycle_stage, gone.info.status) == ("deleted", "KILLED")
    assert mt.ORPHAN_TAG in gone.data.tags
    active = {r.info.run_id for r in client.search_runs([exp_id], run_view_type=ViewType.ACTIVE_ONLY)}
    assert active == {*kept, parent}
    assert mt.delete_orphan_runs(store_uri, exp_id, live_keys={"t1", "t2"}) == []  # idempotent


def test_heartbeat_thread_beats_between_writes_and_stops_at_close(
    store_uri: str, exp_id: str, tmp_path: Path
) -> None:
    run_id = mt.get_or_create_run(store_uri, exp_id, key="beat", run_name="beat")
    client = MlflowClient(store_uri)
    tracker = mt.MlflowTracker(store_uri, run_id, spool_dir=tmp_path, heartbeat_interval=0.2)
    first = float(client.get_run(run_id).data.tags[mt.HEARTBEAT_TAG])
    deadline = time.monotonic() + 30
    while float(client.get_run(run_id).data.tags[mt.HEARTBEAT_TAG]) <= first:  # no log call meanwhile
        assert time.monotonic() < deadline, "no heartbeat without writes"
        time.sleep(0.1)
    tracker.close()
    assert not tracker.heartbeat.running
    last = client.get_run(run_id).data.tags[mt.HEARTBEAT_TAG]
    time.sleep(0.6)
    assert client.get_run(run_id).data.tags[mt.HEARTBEAT_TAG] == last  # no beat after close


def _schema(db: Path) -> tuple[list, list, list]:
    import sqlite3

    def lines(sql: str | None) -> tuple[str, ...]:
        # MLflow's migrations rebuild some tables with their constraints in hash order, so two stores
        # MLflow itself creates differ in the order of a table's DDL lines: compare them as a set.
        return tuple(sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))

    with sqlite3.connect(db) as con:
        rows = con.execute("select type, name, tbl_name, sql from sqlite_master").fetchall()
        master = sorted((kind, name, table, lines(sql)) for kind, name, table, sql in rows)
        version = con.execute("select version_num from alembic_version").fetchall()
        experiments = con.execute("select experiment_id, name, artifact_location from experiments").fetchall()
    return master, version, experiments


def test_seeded_sqlite_store_equals_a_new_mlflow_store(tmp_path: Path, monkeypatch) -> None:
    """A new sweep's store copied from the migrated template is the store MLflow itself would make."""
    monkeypatch.setenv("SIMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the Default experiment's artifact location derives from the cwd
    reference, seeded = tmp_path / "ref" / "mlflow.db", tmp_path / "new" / "sub" / "mlflow.db"
    reference.parent.mkdir()
    MlflowClient(f"sqlite:///{reference}").search_experiments()  # MLflow's own path: tables + migrations
    assert mt.seed_sqlite_store(f"sqlite:///{seeded}")
    assert list((tmp_path / "cache" / "mlflow").glob("empty-store-mlflow-*.db"))
    MlflowClient(f"sqlite:///{seeded}").search_experiments()
    assert _schema(seeded) == _schema(reference)
    # It is a working store, and seeding never touches an existing one.
    exp = mt.ensure_experiment(f"sqlite:///{seeded}", "seeded")
    run_id = mt.get_or_create_run(f"sqlite:///{seeded}", exp, key="k", run_name="r")
    before = seeded.read_bytes()
    assert not mt.seed_sqlite_store(f"sqlite:///{seeded}")
    assert seeded.read_bytes() == before
    assert MlflowClient(f"sqlite:///{seeded}").get_run(run_id).data.tags[mt.KEY_TAG] == "k"
    # Not a local sqlite file: nothing to seed.
    assert not mt.seed_sqlite_store("http://127.0.0.1:5000")
    assert not mt.seed_sqlite_store("sqlite:///:memory:")
