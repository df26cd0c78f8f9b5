"""MLflow adapter: one run per trial, reattached after a restore, that loses nothing in an outage.

Why not Ray's ``MLflowLoggerCallback``: it keeps the trial -> run map in memory, so every resumed trial
gets a second run after ``Tuner.restore``, and an outage longer than the client's own retries raises
into the trial (RELIABILITY.md). Here:

- `get_or_create_run` finds a trial's run by the tag ``mlflow.simlab.key`` before creating one, so a
  restored or retried trial reattaches to its run instead of duplicating it.
- `MlflowTracker` (a `simlab.tracking.Tracker`) retries each call with exponential back-off; a call that
  still fails is appended to a local JSONL spool (fsync'd) and replayed, in order, on the next call,
  `flush()` or `close()`. Every metric point carries the timestamp of the original call, and MLflow's
  SQL store ignores a point whose (key, step, timestamp, value) it already holds, so a replay (even a
  repeated one after a crash between sending and acknowledging) never duplicates a point.
- Each run records its owner (host, pid, process start time) and a heartbeat, so `mark_stale_runs` can
  tell a run left RUNNING by a killed process from one that is still being written (RELIABILITY T7).

All calls use `mlflow.tracking.MlflowClient` with explicit run ids: no global active-run state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

__all__ = [
    "CLIENT_ENV_DEFAULTS",
    "FAILURE_TAG",
    "INTERNAL_PREFIX",
    "KEY_TAG",
    "MlflowTracker",
    "SpoolNotDrainedError",
    "TERMINAL_STATUSES",
    "ensure_experiment",
    "get_or_create_run",
    "delete_orphan_runs",
    "mark_stale_runs",
    "owner_tags",
    "pending_spool_records",
    "replay_spool",
    "run_tag",
]

# Bookkeeping tags (run identity, owner process, heartbeat) carry one internal prefix: the MLflow UI
# hides tags whose key starts with "mlflow." from its run tables and run pages (3.17 bundle:
# `getVisibleTagValues`), so they stay off the overview. Runs written before the rename carry the
# legacy names (LEGACY_TAGS); readers accept both.
INTERNAL_PREFIX = "mlflow.simlab."
KEY_TAG = INTERNAL_PREFIX + "key"  # the stable identity of a trial's run (e.g. the Tune trial id)
HOST_TAG = INTERNAL_PREFIX + "owner.host"
PID_TAG = INTERNAL_PREFIX + "owner.pid"
PID_START_TAG = INTERNAL_PREFIX + "owner.pid_start"  # /proc start time of the owner: guards pid reuse
HEARTBEAT_TAG = INTERNAL_PREFIX + "heartbeat"  # unix seconds of the owner's last successful write
LEGACY_TAGS: dict[str, str] = {
    KEY_TAG: "simlab.key",
    HOST_TAG: "simlab.owner.host",
    PID_TAG: "simlab.owner.pid",
    PID_START_TAG: "simlab.owner.pid_start",
    HEARTBEAT_TAG: "simlab.heartbeat",
}
STALE_TAG = "simlab.stale_reason"
FAILURE_TAG = "simlab.failure_reason"  # why a run ended FAILED/KILLED (e.g. the NonFiniteLossError text)
ORPHAN_TAG = "simlab.orphaned"  # why a run was deleted: its trial is not part of the restored sweep
ROLE_TAG = "simlab.role"  # "sweep" (parent run) or "trial" (set by the sweep driver)
TERMINAL_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")

# The MLflow client retries a refused connection 7 times with back-off factor 2 (minutes) and waits
# 120 s for a response by default; the tracker's own retry + spool is the outage policy, so the client
# should give up within seconds and hand over. Applied with `os.environ.setdefault`: a value the user
# set explicitly wins.
CLIENT_ENV_DEFAULTS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

# MLflow's log_batch limits (mlflow.utils.validation).
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000

# Error codes that mean "the server said no", not "the server was unreachable": retrying cannot help.
_PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "BAD_REQUEST",
        "INVALID_STATE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "ENDPOINT_NOT_FOUND",
        "NOT_FOUND",
    }
)
_KEY_RE = re.compile(r"^[A-Za-z0-9_.:/=,+@ -]+$")

T = TypeVar("T")


class SpoolNotDrainedError(RuntimeError):
    """`close()`/`flush(required=True)` could not deliver spooled calls: they stay on disk for a replay."""


# ----------------------------------------------------------------------------------------------------
# helpers
def configure_client_env() -> None:
    """Make the MLflow HTTP client fail fast (see `CLIENT_ENV_DEFAULTS`); explicit settings win."""
    for name, value in CLIENT_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _client(tracking_uri: str) -> MlflowClient:
    if not isinstance(tracking_uri, str) or not tracking_uri:
        raise TypeError(f"tracking_uri: expected a non-empty str, got {tracking_uri!r}")
    configure_client_env()
    return MlflowClient(tracking_uri=tracking_uri)


def _is_transient(err: BaseException) -> bool:
    """True for an unreachable/overloaded server (retry, then spool), False for a rejected request."""
    if isinstance(err, MlflowException):
        return err.error_code not in _PERMANENT_ERROR_CODES
    return isinstance(err, (OSError, TimeoutError, ConnectionError)) or type(err).__module__.startswith(
        ("requests", "urllib3", "sqlalchemy")
    )


def _retry(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int | None = None,
    deadline: float | None = None,
    base_delay: float,
    max_delay: float,
) -> T:
    """Call ``fn`` until it succeeds: at most ``attempts`` tries and/or until ``deadline`` (monotonic).

    Back-off doubles from ``base_delay`` up to ``max_delay``. Permanent errors are raised at once.
    """
    delay = base_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as err:
            if not _is_transient(err):
                raise
            out_of_attempts = attempts is not None and attempt >= attempts
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if out_of_attempts or out_of_time:
                raise
            logger.warning("%s failed (attempt %d): %s; retrying in %.1f s", what, attempt, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)


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
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), HEARTBEAT_TAG: f"{time.time():.3f}"}
    start = _process_start_time(pid)
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def _pid_alive(pid: int, start_time: str | None) -> bool:
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


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"key: expected a non-empty str of letters, digits, spaces and _.:/=,+@- (it goes into an "
            f"MLflow filter string), got {key!r}"
        )
    return key


def _check_status(status: Any, valid: tuple[str, ...]) -> str:
    if status not in valid:
        raise ValueError(f"status: expected one of {', '.join(valid)}, got {status!r}")
    return status


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///<path>`` tracking URI (None for any other URI or an in-memory DB)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or "?" in tracking_uri:
        return None
    path = tracking_uri[len(prefix) :]
    return None if path in ("", ":memory:") else Path(path)


def _empty_store_template() -> Path:
    """An sqlite file holding MLflow's tables migrated to this MLflow version's head, and no rows.

    Built once per MLflow version under ``<simlab cache>/mlflow`` (MLflow's own path: create the
    tables, then run its ~50 alembic migrations, seconds on a small CPU), reused by every new sweep.
    """
    import mlflow

    from simlab.config import default_cache_dir

    folder = Path(default_cache_dir()) / "mlflow"
    template = folder / f"empty-store-mlflow-{mlflow.__version__}.db"
    if template.exists():
        return template
    # Only to build it (alembic and MLflow's SQL store take seconds to import).
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{template.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, template)  # a concurrent builder writes the same content
    finally:
        tmp.unlink(missing_ok=True)
    return template


def seed_sqlite_store(tracking_uri: str) -> bool:
    """Give a not-yet-existing ``sqlite:///`` store a copy of the migrated empty template; True if done.

    Equivalent to what MLflow does to a new file (the same tables at the same schema head; MLflow adds
    its Default experiment on first open, as for a new file) minus the migrations, which are most of
    a new sweep's MLflow set-up. Never replaces an existing file (the copy is linked into place, which
    fails if another process created the store first); any failure leaves the store to MLflow.
    """
    path = _sqlite_path(tracking_uri)
    if path is None or path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        template = _empty_store_template()
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, tmp)
        os.link(tmp, path)  # atomic, and refuses to overwrite
    except Exception as err:  # FileExistsError: someone else made it first; anything else: MLflow will
        logger.debug("MLflow store %s not seeded from the template (%s)", path, err)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("MLflow store %s seeded from the migrated empty template", path)
    return True


# ----------------------------------------------------------------------------------------------------
# experiments and runs
def ensure_experiment(
    tracking_uri: str, name: str, *, timeout: float = 120.0, artifact_location: str | None = None
) -> str:
    """Return the id of experiment ``name``, creating it (or restoring it from the trash) if needed.

    Safe when several processes call it at once: a lost creation race re-reads the winner's id.
    Retries an unreachable server for up to ``timeout`` seconds.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: expected a non-empty experiment name, got {name!r}")
    if isinstance(tracking_uri, str):
        seed_sqlite_store(tracking_uri)
    client = _client(tracking_uri)
    deadline = time.monotonic() + timeout

    def attempt() -> str:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                logger.warning("experiment %r (id %s) was deleted; restoring it", name, exp.experiment_id)
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    return _retry(
        attempt, what=f"ensure_experiment({name!r})", deadline=deadline, base_delay=0.5, max_delay=8
    )


def run_tag(tags: Mapping[str, str], name: str) -> str | None:
    """A bookkeeping tag's value, under its current name or the legacy one (runs written before)."""
    value = tags.get(name)
    if value is None and name in LEGACY_TAGS:
        value = tags.get(LEGACY_TAGS[name])
    return value


def _runs_with_key(client: MlflowClient, experiment_id: str, key: str) -> list:
    runs = []
    for tag in (KEY_TAG, LEGACY_TAGS[KEY_TAG]):
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{tag}` = '{key}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=100,
        )
        if runs:
            break
    # Oldest first; the run id breaks ties so that every process picks the same survivor.
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def get_or_create_run(
    tracking_uri: str,
    experiment_id: str,
    *,
    key: str,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    reopen: bool = True,
    timeout: float = 120.0,
) -> str:
    """Return the id of the run tagged ``mlflow.simlab.key == key`` (legacy: ``simlab.key``) in the
    experiment, creating it if absent.

    A restored or retried trial thereby reattaches to its run: never a duplicate. If two processes
    create the same key at once, both keep the oldest run and the younger one is deleted. With
    ``reopen``, a reattached run that was closed (e.g. marked KILLED by `mark_stale_runs`) is set back
    to RUNNING. The run records this process as its owner (`owner_tags`).
    """
    _check_key(key)
    if not isinstance(run_name, str) or not run_name:
        raise ValueError(f"run_name: expected a non-empty str, got {run_name!r}")
    if not isinstance(experiment_id, str) or not experiment_id:
        raise TypeError(f"experiment_id: expected a non-empty str, got {experiment_id!r}")
    if parent_run_id is not None and not isinstance(parent_run_id, str):
        raise TypeError(f"parent_run_id: expected a str or None, got {type(parent_run_id).__name__}")
    if tags is not None and not isinstance(tags, Mapping):
        raise TypeError(f"tags: expected a mapping or None, got {type(tags).__name__}")
    client = _client(tracking_uri)
    deadline = time.monotonic() + timeout

    def attempt() -> str:
        found = _runs_with_key(client, experiment_id, key)
        if found:
            run = found[0]
            run_id = run.info.run_id
            logger.info("reattaching to MLflow run %s (key %s, status %s)", run_id, key, run.info.status)
            if reopen and run.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            tags_now = {**owner_tags(), KEY_TAG: key}  # KEY_TAG: a legacy run gets the current name
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags_now.items()], synchronous=True)
            return run_id
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        all_tags[KEY_TAG] = key
        all_tags.update(owner_tags())
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        created = client.create_run(experiment_id, tags=all_tags, run_name=run_name).info.run_id
        # Creation races: whoever created the younger run deletes it and follows the oldest.
        found = _runs_with_key(client, experiment_id, key)
        survivor = found[0].info.run_id if found else created
        if survivor != created:
            logger.warning("run %s duplicated key %s of run %s: deleting it", created, key, survivor)
            client.delete_run(created)
        return survivor

    return _retry(
        attempt, what=f"get_or_create_run(key={key!r})", deadline=deadline, base_delay=0.5, max_delay=8
    )


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
    _check_status(status, ("KILLED", "FAILED"))
    if not (isinstance(heartbeat_timeout, (int, float)) and heartbeat_timeout > 0):
        raise ValueError(f"heartbeat_timeout: expected seconds > 0, got {heartbeat_timeout!r}")
    client = _client(tracking_uri)
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


def delete_orphan_runs(
    tracking_uri: str,
    experiment_id: str,
    *,
    live_keys: Iterable[str],
    role: str = "trial",
    dry_run: bool = False,
) -> list[str]:
    """Delete (recoverably) the runs of trials that a restored sweep no longer has; return their ids.

    Tune snapshots its experiment state periodically, so a sweep SIGKILLed between a trial's start
    and the next snapshot comes back without that trial (RELIABILITY.md) and runs a new one instead;
    the lost trial's MLflow run would then be a second run for one sampled configuration. Runs tagged
    ``simlab.role == role`` whose ``mlflow.simlab.key`` is not in ``live_keys`` (the trial ids of the restored
    sweep) get the tag ``simlab.orphaned``, are closed KILLED if still RUNNING, and are moved to
    MLflow's trash (``MlflowClient.restore_run`` brings one back). Call it after the restore and
    before new trials start.
    """
    if isinstance(live_keys, str):
        raise TypeError("live_keys: expected a collection of trial keys, got a single str")
    live = set(live_keys)
    if not all(isinstance(k, str) for k in live):
        raise TypeError(f"live_keys: expected str trial keys, got {sorted(map(repr, live))[:5]}")
    client = _client(tracking_uri)
    orphans = []
    page_token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = '{_check_key(role)}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=page_token,
        )
        for run in page:
            key = run_tag(run.data.tags, KEY_TAG)
            if key is not None and key not in live:
                orphans.append(run)
        page_token = page.token
        if not page_token:
            break
    for run in orphans:
        run_id = run.info.run_id
        logger.warning(
            "MLflow run %s (key %s) belongs to no trial of the restored sweep: deleting it",
            run_id,
            run_tag(run.data.tags, KEY_TAG),
        )
        if dry_run:
            continue
        client.set_tag(
            run_id, ORPHAN_TAG, "its trial was lost by a kill before Tune saved it; re-run as a new trial"
        )
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")
        client.delete_run(run_id)
    return [run.info.run_id for run in orphans]


def _stale_reason(run: Any, *, host: str, now: float, heartbeat_timeout: float) -> str | None:
    tags = run.data.tags
    pid = run_tag(tags, PID_TAG)
    if run_tag(tags, HOST_TAG) == host and pid is not None and pid.isdigit():
        if not _pid_alive(int(pid), run_tag(tags, PID_START_TAG)):
            return f"owner pid {pid} on {host} is no longer running"
        return None  # a live local owner is authoritative, however old its heartbeat
    try:
        beat = float(run_tag(tags, HEARTBEAT_TAG))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        beat = (run.info.start_time or 0) / 1000.0
    if now - beat > heartbeat_timeout:
        return f"no heartbeat for {now - beat:.0f} s (> {heartbeat_timeout:.0f} s)"
    return None


# ----------------------------------------------------------------------------------------------------
# the tracker
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
        heartbeat_interval: seconds between heartbeat tags, sent by a background thread (an epoch can
            outlast `mark_stale_runs`' ``heartbeat_timeout``, so the heartbeat must not wait for the
            next log call) and with writes; 0 turns the thread off.
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
        self.client = _client(tracking_uri)
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_path = self.spool_dir / f"{run_id}.jsonl"
        self.ack_path = self.spool_dir / f"{run_id}.ack"
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.probe_interval = probe_interval
        self.heartbeat_interval = heartbeat_interval
        self.close_timeout = close_timeout
        self._lock = threading.RLock()
        self._params: dict[str, str] = {}
        self._last_failure = -math.inf
        self._last_heartbeat = -math.inf
        self._closed = False
        # Recover what a previous owner of this run left behind.
        if not self.spool_path.exists():
            self.ack_path.unlink(missing_ok=True)
        else:
            _repair_spool(self.spool_path)
        pending = pending_spool_records(self.spool_dir, run_id)
        self._next_seq = max((r["seq"] for r in _read_spool(self.spool_path)), default=-1) + 1
        if pending:
            logger.info(
                "run %s: %d spooled call(s) from an earlier process await replay", run_id, len(pending)
            )
        # Claim ownership (and reopen the run); spooled if the server is down right now.
        self._submit(_batch(tags=owner_tags()))
        self._stop_heartbeat = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        if heartbeat_interval > 0:
            self._heartbeat_thread = threading.Thread(
                target=self._heartbeat_loop, name=f"mlflow-heartbeat-{run_id[:8]}", daemon=True
            )
            self._heartbeat_thread.start()

    def _heartbeat_loop(self) -> None:
        # Outside the lock: during an outage a beat may wait for the HTTP timeout, and training must not.
        while not self._stop_heartbeat.wait(self.heartbeat_interval):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}", synchronous=True)
            except Exception as err:  # a missed beat only matters after heartbeat_timeout of them
                logger.debug("run %s: heartbeat not sent (%s)", self.run_id, err)

    # -- Tracker protocol ---------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params once; the same key again with the same value is a no-op, with another an error."""
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a mapping, got {type(params).__name__}")
        new: dict[str, str] = {}
        for key, value in params.items():
            text = str(value)
            if len(text) > _MAX_PARAM_LENGTH:
                raise ValueError(f"params[{key!r}]: value longer than {_MAX_PARAM_LENGTH} characters")
            old = self._params.get(str(key))
            if old is not None and old != text:
                raise ValueError(f"params[{key!r}]: already logged as {old!r}, cannot change it to {text!r}")
            if old is None:
                new[str(key)] = text
        if not new:
            return
        with self._lock:
            self._params.update(new)
            self._submit(_batch(params=new))

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
            self._submit(_batch(metrics=points))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not isinstance(tags, Mapping):
            raise TypeError(f"tags: expected a mapping, got {type(tags).__name__}")
        if tags:
            self._submit(_batch(tags={str(k): str(v) for k, v in tags.items()}))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or folder; if the upload has to wait, a copy waits in the spool."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"path: artifact {str(path)!r} does not exist")
        self._submit({"op": "artifact", "path": str(path), "artifact_path": artifact_path})

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
        _check_status(status, TERMINAL_STATUSES)
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason: expected a str or None, got {type(reason).__name__}")
        # Whatever happens below, this process stops vouching for the run (a reused Tune actor
        # must not keep an old trial's run alive).
        self._stop_heartbeat.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=30)
        with self._lock:
            if self._closed:
                return
            if reason is not None:
                self.set_tags({FAILURE_TAG: reason[:_MAX_PARAM_LENGTH]})
            if not self.flush(timeout=self.close_timeout):
                raise SpoolNotDrainedError(
                    f"run {self.run_id}: MLflow at {self.tracking_uri} unreachable for "
                    f"{self.close_timeout} s; {self.pending} call(s) remain in {self.spool_path}"
                )
            _retry(
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
        return len(pending_spool_records(self.spool_dir, self.run_id))

    # -- internals ------------------------------------------------------------------------------------
    def _submit(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"run {self.run_id}: the tracker is closed")
            if record["op"] == "batch" and time.monotonic() - self._last_heartbeat >= self.heartbeat_interval:
                record["tags"] = {**record["tags"], HEARTBEAT_TAG: f"{time.time():.3f}"}
            has_backlog = self.spool_path.exists() and bool(
                pending_spool_records(self.spool_dir, self.run_id)
            )
            if has_backlog:
                # Order matters (a replayed param must precede nothing that contradicts it; metric
                # history reads in order): queue behind the backlog, then try to drain it.
                self._spool(record)
                if time.monotonic() - self._last_failure >= self.probe_interval:
                    self._replay()
                return
            try:
                _retry(
                    lambda: _send(self.client, self.run_id, record),
                    what=f"MLflow {record['op']} for run {self.run_id}",
                    attempts=self.max_attempts,
                    base_delay=self.base_delay,
                    max_delay=self.max_delay,
                )
            except Exception as err:
                if not _is_transient(err):
                    raise
                logger.warning(
                    "run %s: MLflow unreachable (%s); spooling to %s", self.run_id, err, self.spool_path
                )
                self._last_failure = time.monotonic()
                self._spool(record)
                return
            self._sent(record)

    def _sent(self, record: dict[str, Any]) -> None:
        if HEARTBEAT_TAG in record.get("tags", {}):
            self._last_heartbeat = time.monotonic()

    def _spool(self, record: dict[str, Any]) -> None:
        record = dict(record, seq=self._next_seq)
        self._next_seq += 1
        if record["op"] == "artifact":
            # The original may be gone or rewritten by the time the server is back: keep a copy.
            src = Path(record["path"])
            dst = self.spool_dir / f"{self.run_id}.artifacts" / str(record["seq"]) / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
            record["path"] = str(dst)
        line = json.dumps(record, allow_nan=True) + "\n"
        # Append-only and fsync'd: a crash can at worst leave a torn last line, which replay skips.
        with open(self.spool_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _replay(self) -> bool:
        """Deliver spooled calls in order, one attempt each; stop at the first failure."""
        try:
            delivered = replay_spool(self.client, self.spool_dir, self.run_id)
        except Exception as err:
            if not _is_transient(err):
                raise
            self._last_failure = time.monotonic()
            logger.info("run %s: replay deferred, MLflow still unreachable (%s)", self.run_id, err)
            return False
        if delivered:
            logger.info("run %s: replayed %d spooled call(s)", self.run_id, delivered)
        self._last_heartbeat = -math.inf  # announce the owner is alive again with the next write
        return True


def _batch(
    *, metrics: list | None = None, params: dict | None = None, tags: dict | None = None
) -> dict[str, Any]:
    return {"op": "batch", "metrics": metrics or [], "params": params or {}, "tags": tags or {}}


def _send(client: MlflowClient, run_id: str, record: Mapping[str, Any]) -> None:
    if record["op"] == "artifact":
        path = Path(record["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=record.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), artifact_path=record.get("artifact_path"))
        return
    if record["op"] != "batch":
        raise ValueError(f"spool record: unknown op {record['op']!r}; valid ops are: batch, artifact")
    metrics = [Metric(k, v, ts, step) for k, v, ts, step in record["metrics"]]
    params = [Param(k, v) for k, v in record["params"].items()]
    tags = [RunTag(k, v) for k, v in record["tags"].items()]
    # log_batch limits: chunk, params and tags first so a metric never lands without its context.
    for i in range(0, max(len(params), len(tags)), _MAX_PARAMS_TAGS_PER_BATCH):
        sl = slice(i, i + _MAX_PARAMS_TAGS_PER_BATCH)
        client.log_batch(run_id, params=params[sl], tags=tags[sl], synchronous=True)
    for i in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _MAX_METRICS_PER_BATCH], synchronous=True)


def _repair_spool(path: Path) -> None:
    """Cut a torn last line (the writer died mid-append) so that appends start on a fresh line."""
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            logger.warning("%s: dropping a torn last line of %d bytes", path, len(data) - keep)
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())


def _read_spool(path: Path) -> list[dict[str, Any]]:
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


def _write_ack(path: Path, seq: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(str(seq))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def pending_spool_records(spool_dir: str | Path, run_id: str) -> list[dict[str, Any]]:
    """The spooled calls of ``run_id`` not yet delivered, in order."""
    spool_dir = Path(spool_dir)
    acked = _read_ack(spool_dir / f"{run_id}.ack")
    return [r for r in _read_spool(spool_dir / f"{run_id}.jsonl") if r["seq"] > acked]


def replay_spool(client: MlflowClient | str, spool_dir: str | Path, run_id: str) -> int:
    """Deliver the pending spooled calls of ``run_id`` in order (one attempt each); return how many.

    Consecutive log calls are merged into as few ``log_batch`` requests as MLflow's limits allow (an
    outage of minutes leaves hundreds of small calls; one request each would stall the training loop
    that replays them). Stops at (and raises) the first failure, leaving it and the rest for later.
    Each delivered group is acknowledged on disk at once; a crash between delivery and acknowledgement
    repeats that group, which is harmless (metric points keep their original timestamps, params are
    logged with the same value, tags and artifacts overwrite). An empty spool is removed.
    """
    if isinstance(client, str):
        client = _client(client)
    spool_dir = Path(spool_dir)
    spool_path = spool_dir / f"{run_id}.jsonl"
    ack_path = spool_dir / f"{run_id}.ack"
    delivered = 0
    for group in _merge_batches(pending_spool_records(spool_dir, run_id)):
        _send(client, run_id, group)
        _write_ack(ack_path, group["seq"])
        delivered += group["count"]
    if spool_path.exists():
        # Spool first, then the ack: a lone ack (crash in between) is removed by the next tracker.
        spool_path.unlink()
        ack_path.unlink(missing_ok=True)
        shutil.rmtree(spool_dir / f"{run_id}.artifacts", ignore_errors=True)
    return delivered


def _merge_batches(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive ``batch`` records merged up to the log_batch limits; ``seq`` = the group's last."""
    groups: list[dict[str, Any]] = []
    for record in records:
        last = groups[-1] if groups else None
        fits = (
            last is not None
            and last["op"] == record["op"] == "batch"
            and len(last["metrics"]) + len(record["metrics"]) <= _MAX_METRICS_PER_BATCH
            and len(last["params"].keys() | record["params"].keys()) <= _MAX_PARAMS_TAGS_PER_BATCH
            and len(last["tags"].keys() | record["tags"].keys()) <= _MAX_PARAMS_TAGS_PER_BATCH
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


def spooled_run_ids(spool_dir: str | Path) -> list[str]:
    """Run ids with a spool file in ``spool_dir`` (searched recursively)."""
    return sorted({p.stem for p in Path(spool_dir).rglob("*.jsonl")})
