"""The offline spool: the calls of one run that wait on disk for the server, as plain file logic.

In ``spool_dir``, per run: ``<run_id>.jsonl`` holds one JSON record a line, append-only and fsync'd
(``{"op": "batch", "metrics": [[key, value, timestamp_ms, step], ...], "params": {...}, "tags":
{...}, "seq": n}`` or ``{"op": "artifact", "path": ..., "artifact_path": ..., "seq": n}``; an
artifact's file is copied to ``<run_id>.artifacts/<seq>/<name>``, since the original may be gone by
the time the server is back); ``<run_id>.ack`` holds the last delivered ``seq``. A crash can at worst
leave a torn last line, which readers skip and the next owner cuts (`Spool.recover`).

`Spool.replay` hands the pending records, consecutive batches merged into groups of at most one
``log_batch`` request, to a ``send`` callback in order and acknowledges each group on disk at once;
the MLflow side of sending is `sweeps.tracking.tracker.send_record`. Nothing here talks to a server.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simlab._io import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "Spool",
    "artifact_record",
    "batch_record",
    "merge_batches",
    "pending_spool_records",
    "spooled_run_ids",
]

# A merged group stays within one MlflowClient.log_batch request (mlflow.utils.validation's
# MAX_METRICS_PER_BATCH and MAX_PARAMS_TAGS_PER_BATCH), so a group is delivered, and acknowledged, whole.
GROUP_MAX_METRICS = 1000
GROUP_MAX_PARAMS_TAGS = 100


def batch_record(
    *, metrics: list | None = None, params: dict | None = None, tags: dict | None = None
) -> dict[str, Any]:
    """A ``log_batch`` call as a record; ``metrics`` are ``[key, value, timestamp_ms, step]`` lists."""
    return {"op": "batch", "metrics": metrics or [], "params": params or {}, "tags": tags or {}}


def artifact_record(path: str | Path, artifact_path: str | None) -> dict[str, Any]:
    """A ``log_artifact(s)`` call (a file or a folder) as a record."""
    return {"op": "artifact", "path": str(path), "artifact_path": artifact_path}


def merge_batches(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive ``batch`` records merged up to one request's limits; ``seq`` = the group's last,
    ``count`` = how many records it holds. Other records stay alone, in place."""
    groups: list[dict[str, Any]] = []
    for record in records:
        last = groups[-1] if groups else None
        fits = (
            last is not None
            and last["op"] == record["op"] == "batch"
            and len(last["metrics"]) + len(record["metrics"]) <= GROUP_MAX_METRICS
            and len(last["params"].keys() | record["params"].keys()) <= GROUP_MAX_PARAMS_TAGS
            and len(last["tags"].keys() | record["tags"].keys()) <= GROUP_MAX_PARAMS_TAGS
        )
        if fits:
            last["metrics"] = last["metrics"] + record["metrics"]
            last["params"] = {**last["params"], **record["params"]}
            last["tags"] = {**last["tags"], **record["tags"]}  # a later tag value wins, as it would live
            last["seq"] = record["seq"]
            last["count"] += 1
        else:
            groups.append({**record, "count": 1})
    return groups


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                logger.warning("%s: ignoring a torn last line %d (the writer died mid-append)", path, n)
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.error("%s: line %d is not JSON; skipping it", path, n)
    return records


def _read_ack(path: Path) -> int:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return -1


class Spool:
    """The spool of run ``run_id`` in ``spool_dir`` (see the module docstring for the files)."""

    def __init__(self, spool_dir: str | Path, run_id: str) -> None:
        self.dir = Path(spool_dir)
        self.run_id = run_id
        self.path = self.dir / f"{run_id}.jsonl"
        self.ack_path = self.dir / f"{run_id}.ack"
        self.artifact_dir = self.dir / f"{run_id}.artifacts"
        self._next_seq: int | None = None

    def recover(self) -> int:
        """Take over what a previous writer left: a lone ack goes (its spool was delivered), a torn
        last line is cut so that appends start on a fresh line. Returns the number of pending records."""
        if not self.path.exists():
            self.ack_path.unlink(missing_ok=True)
        else:
            self._cut_torn_line()
        self._next_seq = self._last_seq() + 1
        return len(self.pending())

    def pending(self) -> list[dict[str, Any]]:
        """The records not yet delivered, in order."""
        acked = _read_ack(self.ack_path)
        return [r for r in _read_records(self.path) if r["seq"] > acked]

    def has_backlog(self) -> bool:
        return self.path.exists() and bool(self.pending())

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` with the next ``seq`` (an artifact record gets its own copy of the file)."""
        if self._next_seq is None:
            self._next_seq = self._last_seq() + 1
        record = dict(record, seq=self._next_seq)
        self._next_seq += 1
        if record["op"] == "artifact":
            src = Path(record["path"])
            dst = self.artifact_dir / str(record["seq"]) / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
            record["path"] = str(dst)
        line = json.dumps(record, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def replay(self, send: Callable[[dict[str, Any]], None]) -> int:
        """``send`` the pending records in order, merged into groups (`merge_batches`); return how
        many records were delivered.

        Each delivered group is acknowledged on disk at once; the first exception from ``send`` stops
        the replay and propagates, leaving that group and the rest pending. A crash between delivery
        and acknowledgement repeats that group, which the receiver must take as harmless (MLflow does:
        metric points keep their original timestamps, params come with the same value, tags and
        artifacts overwrite). A fully delivered spool is removed: the spool first, then the ack (a
        lone ack, after a crash in between, is removed by `recover`).
        """
        delivered = 0
        for group in merge_batches(self.pending()):
            send(group)
            write_text_atomic(self.ack_path, str(group["seq"]))
            delivered += group["count"]
        if self.path.exists():
            self.path.unlink()
            self.ack_path.unlink(missing_ok=True)
            shutil.rmtree(self.artifact_dir, ignore_errors=True)
        return delivered

    def _last_seq(self) -> int:
        return max((r["seq"] for r in _read_records(self.path)), default=-1)

    def _cut_torn_line(self) -> None:
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                logger.warning("%s: dropping a torn last line of %d bytes", self.path, len(data) - keep)
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())


def pending_spool_records(spool_dir: str | Path, run_id: str) -> list[dict[str, Any]]:
    """The spooled calls of ``run_id`` not yet delivered, in order."""
    return Spool(spool_dir, run_id).pending()


def spooled_run_ids(spool_dir: str | Path) -> list[str]:
    """Run ids with a spool file in ``spool_dir`` (searched recursively)."""
    return sorted({p.stem for p in Path(spool_dir).rglob("*.jsonl")})
