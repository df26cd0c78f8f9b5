"""sweeps.tracking.spool as file logic alone: no MLflow server, no client; ``send`` is a list.append.

The expected records, groups and acknowledgements are written out by hand from the spool's format
(one JSON record a line, ``seq`` from 0, ``<run_id>.ack`` = the last delivered ``seq``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.tracking.spool import (
    GROUP_MAX_METRICS,
    GROUP_MAX_PARAMS_TAGS,
    Spool,
    artifact_record,
    batch_record,
    merge_batches,
    pending_spool_records,
    spooled_run_ids,
)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_append_numbers_records_and_keeps_its_own_artifact_copies(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "run1")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("folder file")
    single = tmp_path / "fig.png"
    single.write_bytes(b"png bytes")
    spool.append(batch_record(params={"alpha": "0.1"}))
    spool.append(batch_record(metrics=[["nll", 1.5, 1000, 0]], tags={"t": "x"}))
    spool.append(artifact_record(single, None))
    spool.append(artifact_record(src, "plots"))
    single.unlink()  # the originals may be gone by replay time
    (src / "sub" / "a.txt").unlink()

    assert _lines(tmp_path / "run1.jsonl") == [
        {"op": "batch", "metrics": [], "params": {"alpha": "0.1"}, "tags": {}, "seq": 0},
        {"op": "batch", "metrics": [["nll", 1.5, 1000, 0]], "params": {}, "tags": {"t": "x"}, "seq": 1},
        {
            "op": "artifact",
            "path": str(tmp_path / "run1.artifacts" / "2" / "fig.png"),
            "artifact_path": None,
            "seq": 2,
        },
        {
            "op": "artifact",
            "path": str(tmp_path / "run1.artifacts" / "3" / "src"),
            "artifact_path": "plots",
            "seq": 3,
        },
    ]
    assert (tmp_path / "run1.artifacts" / "2" / "fig.png").read_bytes() == b"png bytes"
    assert (tmp_path / "run1.artifacts" / "3" / "src" / "sub" / "a.txt").read_text() == "folder file"
    assert [r["seq"] for r in spool.pending()] == [0, 1, 2, 3]
    (tmp_path / "run1.ack").write_text("1")
    assert [r["seq"] for r in pending_spool_records(tmp_path, "run1")] == [2, 3]
    assert spool.has_backlog()
    assert not Spool(tmp_path, "other").has_backlog()
    assert Spool(tmp_path / "missing", "run1").pending() == []


def test_non_finite_metric_values_survive_the_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "r")
    spool.append(batch_record(metrics=[["loss", float("nan"), 1, 0], ["x", float("inf"), 1, 0]]))
    (record,) = spool.pending()
    value, inf = record["metrics"][0][1], record["metrics"][1][1]
    assert value != value and inf == float("inf")


def test_recover_cuts_a_torn_line_drops_a_lone_ack_and_continues_the_numbering(tmp_path: Path) -> None:
    # A lone ack (the spool was delivered and removed, the crash came before the ack went): removed.
    (tmp_path / "gone.ack").write_text("7")
    assert Spool(tmp_path, "gone").recover() == 0
    assert not (tmp_path / "gone.ack").exists()

    path = tmp_path / "r.jsonl"
    first = Spool(tmp_path, "r")
    for step in range(3):
        first.append(batch_record(metrics=[["acc", float(step), 5, step]]))
    (tmp_path / "r.ack").write_text("0")
    with open(path, "a") as fh:
        fh.write('{"op": "batch", "seq": 3, "metr')  # the writer died mid-append
    assert [r["seq"] for r in first.pending()] == [1, 2]  # a reader skips the torn line

    second = Spool(tmp_path, "r")
    assert second.recover() == 2
    assert path.read_text().endswith("}\n")  # cut back to the last whole line
    second.append(batch_record(tags={"k": "v"}))
    assert [r["seq"] for r in _lines(path)] == [0, 1, 2, 3]
    assert [r["seq"] for r in second.pending()] == [1, 2, 3]


def test_merge_batches_respects_one_request_and_keeps_order() -> None:
    def rec(seq: int, **kw) -> dict:
        return {**batch_record(**kw), "seq": seq}

    records = [
        rec(0, params={"a": "1"}, tags={"t": "old"}),
        rec(1, metrics=[["m", 1.0, 1, 0]], tags={"t": "new"}),
        {**artifact_record("/x", None), "seq": 2},
        rec(3, metrics=[["m", 2.0, 2, 1]]),
        rec(4, metrics=[["m", 3.0, 3, 2]]),
    ]
    assert merge_batches(records) == [
        {
            "op": "batch",
            "metrics": [["m", 1.0, 1, 0]],
            "params": {"a": "1"},
            "tags": {"t": "new"},
            "seq": 1,
            "count": 2,
        },
        {"op": "artifact", "path": "/x", "artifact_path": None, "seq": 2, "count": 1},
        {
            "op": "batch",
            "metrics": [["m", 2.0, 2, 1], ["m", 3.0, 3, 2]],
            "params": {},
            "tags": {},
            "seq": 4,
            "count": 2,
        },
    ]
    # Limits: 1,500 one-point records make a full request and the rest; 150 distinct params, 100 + 50.
    many = [rec(i, metrics=[["m", float(i), i, i]]) for i in range(1500)]
    assert [len(g["metrics"]) for g in merge_batches(many)] == [GROUP_MAX_METRICS, 500]
    assert [g["seq"] for g in merge_batches(many)] == [GROUP_MAX_METRICS - 1, 1499]
    params = [rec(i, params={f"p{i}": "v"}) for i in range(150)]
    assert [len(g["params"]) for g in merge_batches(params)] == [GROUP_MAX_PARAMS_TAGS, 50]
    # The same tag key again is no new entry: it merges.
    same = [rec(i, tags={"heartbeat": str(i)}) for i in range(300)]
    assert merge_batches(same) == [
        {"op": "batch", "metrics": [], "params": {}, "tags": {"heartbeat": "299"}, "seq": 299, "count": 300}
    ]


def test_replay_acknowledges_each_group_stops_at_a_failure_and_removes_a_drained_spool(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, "r")
    art = tmp_path / "a.txt"
    art.write_text("a")
    spool.append(batch_record(metrics=[["m", 0.0, 1, 0]]))
    spool.append(batch_record(metrics=[["m", 1.0, 2, 1]]))
    spool.append(artifact_record(art, None))
    spool.append(batch_record(tags={"done": "1"}))
    sent: list[dict] = []

    def down_at_artifact(group: dict) -> None:
        if group["op"] == "artifact":
            raise ConnectionError("server down")
        sent.append(group)

    with pytest.raises(ConnectionError):
        spool.replay(down_at_artifact)
    assert [(g["seq"], g["count"]) for g in sent] == [(1, 2)]
    assert (tmp_path / "r.ack").read_text() == "1"
    assert [r["seq"] for r in spool.pending()] == [2, 3]

    sent.clear()
    assert spool.replay(sent.append) == 2
    assert [(g["op"], g["seq"]) for g in sent] == [("artifact", 2), ("batch", 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # spool, ack and copies removed
    assert spool.replay(sent.append) == 0


def test_spooled_run_ids_searches_subfolders(tmp_path: Path) -> None:
    Spool(tmp_path / "trial_1" / "trial", "abc").dir.mkdir(parents=True)
    Spool(tmp_path / "trial_1" / "trial", "abc").append(batch_record(tags={"a": "b"}))
    Spool(tmp_path / "trial_2" / "rank0", "def").dir.mkdir(parents=True)
    Spool(tmp_path / "trial_2" / "rank0", "def").append(batch_record(tags={"a": "b"}))
    assert spooled_run_ids(tmp_path) == ["abc", "def"]
