"""Who writes a run, whether it is still alive, and the one heartbeat that says so (RELIABILITY T7).

- `owner_tags`: the claim a writer puts on its run (host, pid, the pid's start time, a first beat).
- `Heartbeat`: the only periodic beat, a daemon thread that sets ``mlflow.simlab.heartbeat`` every
  ``interval`` seconds, whether or not training logs anything (an epoch can outlast the stale
  timeout). Sent directly, never spooled: a beat is only evidence when it arrives on time.
- `mark_stale_runs`: closes the RUNNING runs whose owner is gone: a dead local pid (or one reused by
  a newer process), or no beat for ``heartbeat_timeout`` seconds (an owner on another host).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Literal

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from simlab._validate import check_choice
from sweeps.tracking.client import mlflow_client
from sweeps.tracking.tags import HEARTBEAT_TAG, HOST_TAG, PID_START_TAG, PID_TAG, STALE_TAG, run_tag

logger = logging.getLogger(__name__)

__all__ = ["Heartbeat", "mark_stale_runs", "owner_tags", "pid_alive"]


def _beat() -> str:
    """A heartbeat value: unix seconds, to the millisecond."""
    return f"{time.time():.3f}"


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses, so split after its ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def owner_tags(pid: int | None = None) -> dict[str, str]:
    """Tags naming the process that writes a run (default: this one) and a fresh heartbeat."""
    pid = os.getpid() if pid is None else pid
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), HEARTBEAT_TAG: _beat()}
    start = _process_start_time(pid)
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def pid_alive(pid: int, start_time: str | None) -> bool:
    """Whether ``pid`` runs on this host and (given its recorded ``start_time``) is still that process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if start_time is not None:
        current = _process_start_time(pid)
        if current is not None and current != start_time:
            return False  # the pid was reused by a newer process
    return True


class Heartbeat:
    """Beat ``mlflow.simlab.heartbeat`` on ``run_id`` every ``interval`` seconds until `stop`.

    The thread works outside any tracker lock: during an outage a beat may wait for the HTTP timeout,
    and training must not. ``interval`` 0 starts no thread (the claim's beat is then the only one).
    """

    def __init__(self, client: MlflowClient, run_id: str, *, interval: float) -> None:
        self.client = client
        self.run_id = run_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval > 0:
            self._thread = threading.Thread(
                target=self._loop, name=f"mlflow-heartbeat-{run_id[:8]}", daemon=True
            )
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop beating (this process stops vouching for the run); waits up to ``timeout`` s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, _beat(), synchronous=True)
            except Exception as err:  # a missed beat only matters after heartbeat_timeout of them
                logger.debug("run %s: heartbeat not sent (%s)", self.run_id, err)


def mark_stale_runs(
    tracking_uri: str,
    experiment_id: str,
    *,
    heartbeat_timeout: float = 900.0,
    status: Literal["KILLED", "FAILED"] = "KILLED",
    dry_run: bool = False,
    now: float | None = None,
) -> list[str]:
    """Close the RUNNING runs whose owner process is gone; return their ids (RELIABILITY T7).

    A run is stale when its owner (tags written by `get_or_create_run`/`MlflowTracker`) ran on this
    host and that pid is dead or now belongs to a newer process, or when its heartbeat is older than
    ``heartbeat_timeout`` seconds (the only evidence for an owner on another host, and for runs
    without owner tags, whose start time stands in for the heartbeat). Stale runs get ``status`` and a
    ``simlab.stale_reason`` tag; ``dry_run`` only lists them.
    """
    check_choice("status", status, ("KILLED", "FAILED"))
    if not (isinstance(heartbeat_timeout, (int, float)) and heartbeat_timeout > 0):
        raise ValueError(f"heartbeat_timeout: expected seconds > 0, got {heartbeat_timeout!r}")
    client = mlflow_client(tracking_uri)
    now = time.time() if now is None else now
    host = socket.gethostname()
    stale: list[tuple[str, str]] = []
    page_token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=page_token,
        )
        for run in page:
            reason = _stale_reason(run, host=host, now=now, heartbeat_timeout=heartbeat_timeout)
            if reason is not None:
                stale.append((run.info.run_id, reason))
        page_token = page.token
        if not page_token:
            break
    for run_id, reason in stale:
        logger.warning("MLflow run %s is stale (%s): %s", run_id, reason, "would mark" if dry_run else status)
        if not dry_run:
            client.set_tag(run_id, STALE_TAG, reason, synchronous=True)
            client.set_terminated(run_id, status=status)
    return [run_id for run_id, _ in stale]


def _stale_reason(run: Any, *, host: str, now: float, heartbeat_timeout: float) -> str | None:
    tags = run.data.tags
    pid = run_tag(tags, PID_TAG)
    if run_tag(tags, HOST_TAG) == host and pid is not None and pid.isdigit():
        if not pid_alive(int(pid), run_tag(tags, PID_START_TAG)):
            return f"owner pid {pid} on {host} is no longer running"
        return None  # a live local owner is authoritative, however old its heartbeat
    try:
        beat = float(run_tag(tags, HEARTBEAT_TAG))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        beat = (run.info.start_time or 0) / 1000.0
    if now - beat > heartbeat_timeout:
        return f"no heartbeat for {now - beat:.0f} s (> {heartbeat_timeout:.0f} s)"
    return None
