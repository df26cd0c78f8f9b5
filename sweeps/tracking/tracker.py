"""`MlflowTracker`: a `simlab.tracking.Tracker` that writes one MLflow run and loses nothing in an outage.

Each call is retried with exponential back-off; a call that still fails goes to the run's spool
(`sweeps.tracking.spool`, fsync'd JSONL) and is replayed, in order, on the next call, `flush()` or
`close()`. Every metric point carries the timestamp of the original call, and MLflow's SQL store
ignores a point whose (key, step, timestamp, value) it already holds, so a replay (even a repeated one
after a crash between sending and acknowledging) never duplicates a point. While the tracker is open,
`sweeps.tracking.liveness.Heartbeat` vouches for the run.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from simlab._validate import check_choice
from sweeps.tracking.client import is_transient, mlflow_client, retry
from sweeps.tracking.liveness import Heartbeat, owner_tags
from sweeps.tracking.spool import Spool, artifact_record, batch_record
from sweeps.tracking.tags import FAILURE_TAG, TERMINAL_STATUSES

logger = logging.getLogger(__name__)

__all__ = ["MlflowTracker", "SpoolNotDrainedError", "replay_spool", "send_record"]


class SpoolNotDrainedError(RuntimeError):
    """`close()` could not deliver spooled calls: they stay on disk for a replay."""


def send_record(client: MlflowClient, run_id: str, record: Mapping[str, Any]) -> None:
    """Deliver one spool record (or merged group) to ``run_id``.

    One ``log_batch`` call: MlflowClient splits it into requests within the server's limits itself,
    params and tags in the first request(s), so a metric never lands without its context.
    """
    if record["op"] == "artifact":
        path = Path(record["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=record.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), artifact_path=record.get("artifact_path"))
        return
    if record["op"] != "batch":
        raise ValueError(f"spool record: unknown op {record['op']!r}; valid ops are: batch, artifact")
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, ts, step) for k, v, ts, step in record["metrics"]],
        params=[Param(k, v) for k, v in record["params"].items()],
        tags=[RunTag(k, v) for k, v in record["tags"].items()],
        synchronous=True,
    )


def replay_spool(client: MlflowClient | str, spool_dir: str | Path, run_id: str) -> int:
    """Deliver the pending spooled calls of ``run_id`` in order (one attempt each); return how many.

    Consecutive log calls are merged into as few ``log_batch`` requests as MLflow's limits allow (an
    outage of minutes leaves hundreds of small calls; one request each would stall the training loop
    that replays them). Stops at (and raises) the first failure, leaving it and the rest for later;
    see `Spool.replay` for acknowledgement and why a repeat is harmless. An empty spool is removed.
    """
    if isinstance(client, str):
        client = mlflow_client(client)
    return Spool(spool_dir, run_id).replay(lambda group: send_record(client, run_id, group))


class MlflowTracker:
    """A `simlab.tracking.Tracker` that writes one MLflow run and survives server outages.

    Args:
        tracking_uri: MLflow tracking URI (``http://127.0.0.1:5000``, ``sqlite:///...``).
        run_id: the run to write (from `get_or_create_run`).
        spool_dir: a folder that outlives this process for the same trial (e.g. the trial's own
            folder): failed calls wait there in ``<run_id>.jsonl`` until they are delivered, by this
            tracker or by the next one opened on the same run (after a restore) or by
            ``python -m sweeps.cleanup --spool-dir``.
        max_attempts: tries per call while the server looks healthy, with back-off ``base_delay`` *
            2**i (capped at ``max_delay``), before the call is spooled.
        probe_interval: while calls are spooled, each new call tries the server at most this often
            (one attempt, no back-off), so training never waits on a dead server.
        heartbeat_interval: seconds between heartbeat tags, sent by a background thread
            (`liveness.Heartbeat`: an epoch can outlast `mark_stale_runs`' ``heartbeat_timeout``, so
            the heartbeat must not wait for the next log call); 0 turns it off.
        close_timeout: how long `close` keeps retrying to drain the spool before it gives up.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        *,
        spool_dir: str | Path,
        max_attempts: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        probe_interval: float = 5.0,
        heartbeat_interval: float = 30.0,
        close_timeout: float = 120.0,
    ) -> None:
        if not isinstance(run_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", run_id):
            raise ValueError(f"run_id: expected an MLflow run id (letters, digits, _ and -), got {run_id!r}")
        if not isinstance(spool_dir, (str, Path)):
            raise TypeError(f"spool_dir: expected a str or Path, got {type(spool_dir).__name__}")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise ValueError(f"max_attempts: expected an int >= 1, got {max_attempts!r}")
        for name, value in (
            ("base_delay", base_delay),
            ("max_delay", max_delay),
            ("probe_interval", probe_interval),
            ("heartbeat_interval", heartbeat_interval),
            ("close_timeout", close_timeout),
        ):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: expected finite seconds >= 0, got {value!r}")
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = mlflow_client(tracking_uri)
        self.spool = Spool(spool_dir, run_id)
        self.spool_dir = self.spool.dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_path = self.spool.path
        self.ack_path = self.spool.ack_path
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.probe_interval = probe_interval
        self.close_timeout = close_timeout
        self._lock = threading.RLock()
        self._params: dict[str, str] = {}
        self._last_failure = -math.inf
        self._closed = False
        # Recover what a previous owner of this run left behind.
        pending = self.spool.recover()
        if pending:
            logger.info("run %s: %d spooled call(s) from an earlier process await replay", run_id, pending)
        # Claim ownership (and reopen the run); spooled if the server is down right now.
        self._submit(batch_record(tags=owner_tags()))
        self.heartbeat = Heartbeat(self.client, run_id, interval=heartbeat_interval)

    # -- Tracker protocol ---------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params once; the same key again with the same value is a no-op, with another an error."""
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a mapping, got {type(params).__name__}")
        new: dict[str, str] = {}
        for key, value in params.items():
            text = str(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                raise ValueError(f"params[{key!r}]: value longer than {MAX_PARAM_VAL_LENGTH} characters")
            old = self._params.get(str(key))
            if old is not None and old != text:
                raise ValueError(f"params[{key!r}]: already logged as {old!r}, cannot change it to {text!r}")
            if old is None:
                new[str(key)] = text
        if not new:
            return
        with self._lock:
            self._params.update(new)
            self._submit(batch_record(params=new))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log one point per metric at ``step``, stamped now (the stamp travels with a replay)."""
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics: expected a mapping, got {type(metrics).__name__}")
        if step is None:
            step = 0
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected an int >= 0 or None, got {step!r}")
        stamp = int(time.time() * 1000)
        points = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metrics[{key!r}]: expected a number, got {type(value).__name__}") from None
            points.append([str(key), number, stamp, int(step)])
        if points:
            self._submit(batch_record(metrics=points))

    def log_metric_points(self, points: Any) -> None:
        """Log metric points as they are, ``(key, value, timestamp ms, step)`` each: a copied history
        keeps its original time stamps (`sweeps.reuse`)."""
        rows = []
        for key, value, stamp, step in points:
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"points: step of {key!r}: expected an int >= 0, got {step!r}")
            rows.append([str(key), float(value), int(stamp), step])
        for start in range(0, len(rows), 1000):  # MLflow's log_batch takes at most 1000 metrics
            self._submit(batch_record(metrics=rows[start : start + 1000]))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not isinstance(tags, Mapping):
            raise TypeError(f"tags: expected a mapping, got {type(tags).__name__}")
        if tags:
            self._submit(batch_record(tags={str(k): str(v) for k, v in tags.items()}))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or folder; if the upload has to wait, a copy waits in the spool."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"path: artifact {str(path)!r} does not exist")
        self._submit(artifact_record(path, artifact_path))

    # -- lifecycle ------------------------------------------------------------------------------------
    def flush(self, *, timeout: float | None = None) -> bool:
        """Replay the spool now; with ``timeout`` keep retrying that long. True when it is empty."""
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            delay = self.base_delay
            while True:
                if self._replay():
                    return True
                if deadline is None or time.monotonic() + delay > deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, self.max_delay)

    def close(
        self, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED", *, reason: str | None = None
    ) -> None:
        """Drain the spool (up to ``close_timeout``) and end the run with ``status``.

        ``reason`` (e.g. the text of the exception that ended a trial) goes into the tag
        ``simlab.failure_reason`` so the MLflow UI says why a run FAILED.

        Raises `SpoolNotDrainedError` if the server stays unreachable: the spool stays on disk and
        the next tracker on this run (or ``python -m sweeps.cleanup``) delivers it.
        """
        check_choice("status", status, TERMINAL_STATUSES)
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason: expected a str or None, got {type(reason).__name__}")
        # Whatever happens below, this process stops vouching for the run (a reused Tune actor
        # must not keep an old trial's run alive).
        self.heartbeat.stop()
        with self._lock:
            if self._closed:
                return
            if reason is not None:
                self.set_tags({FAILURE_TAG: reason[:MAX_PARAM_VAL_LENGTH]})
            if not self.flush(timeout=self.close_timeout):
                raise SpoolNotDrainedError(
                    f"run {self.run_id}: MLflow at {self.tracking_uri} unreachable for "
                    f"{self.close_timeout} s; {self.pending} call(s) remain in {self.spool_path}"
                )
            retry(
                lambda: self.client.set_terminated(self.run_id, status=status),
                what=f"close run {self.run_id}",
                deadline=time.monotonic() + self.close_timeout,
                base_delay=self.base_delay,
                max_delay=self.max_delay,
            )
            self._closed = True

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("FINISHED")
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
            self.close(status, reason=f"{exc_type.__name__}: {exc}")

    @property
    def pending(self) -> int:
        """How many calls wait in the spool."""
        return len(self.spool.pending())

    # -- internals ------------------------------------------------------------------------------------
    def _submit(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"run {self.run_id}: the tracker is closed")
            if self.spool.has_backlog():
                # Order matters (a replayed param must precede nothing that contradicts it; metric
                # history reads in order): queue behind the backlog, then try to drain it.
                self.spool.append(record)
                if time.monotonic() - self._last_failure >= self.probe_interval:
                    self._replay()
                return
            try:
                retry(
                    lambda: send_record(self.client, self.run_id, record),
                    what=f"MLflow {record['op']} for run {self.run_id}",
                    attempts=self.max_attempts,
                    base_delay=self.base_delay,
                    max_delay=self.max_delay,
                )
            except Exception as err:
                if not is_transient(err):
                    raise
                logger.warning(
                    "run %s: MLflow unreachable (%s); spooling to %s", self.run_id, err, self.spool_path
                )
                self._last_failure = time.monotonic()
                self.spool.append(record)

    def _replay(self) -> bool:
        """Deliver spooled calls in order, one attempt each; stop at the first failure."""
        try:
            delivered = self.spool.replay(lambda group: send_record(self.client, self.run_id, group))
        except Exception as err:
            if not is_transient(err):
                raise
            self._last_failure = time.monotonic()
            logger.info("run %s: replay deferred, MLflow still unreachable (%s)", self.run_id, err)
            return False
        if delivered:
            logger.info("run %s: replayed %d spooled call(s)", self.run_id, delivered)
        return True
