"""MLflow tracking for sweeps: one run per trial, reattached after a restore, that loses nothing in an outage.

Why not Ray's ``MLflowLoggerCallback``: it keeps the trial -> run map in memory, so every resumed trial
gets a second run after ``Tuner.restore``, and an outage longer than the client's own retries raises
into the trial (RELIABILITY.md). Here, one concept a module:

- `tags`: the bookkeeping tag names (``mlflow.simlab.*``, hidden by the MLflow UI) and `run_tag`.
- `client`: a fail-fast `MlflowClient`, transient vs permanent errors, retry with back-off.
- `runs`: run identity: `ensure_experiment`, `get_or_create_run` (find by ``mlflow.simlab.key``
  before creating), `delete_orphan_runs`.
- `liveness`: the owner of a run (`owner_tags`), its one periodic `Heartbeat`, `mark_stale_runs`
  (RELIABILITY T7).
- `spool`: the offline spool as plain file logic (JSONL + ack), testable without a server.
- `tracker`: `MlflowTracker` (a `simlab.tracking.Tracker`): retry, else spool, replay in order.
- `store`: `seed_sqlite_store`, a new sqlite store copied from a migrated empty template.

All calls use `mlflow.tracking.MlflowClient` with explicit run ids: no global active-run state.
"""

from sweeps.tracking.client import CLIENT_ENV_DEFAULTS, configure_client_env, is_transient, mlflow_client
from sweeps.tracking.liveness import Heartbeat, mark_stale_runs, owner_tags
from sweeps.tracking.runs import delete_orphan_runs, ensure_experiment, get_or_create_run
from sweeps.tracking.spool import Spool, pending_spool_records, spooled_run_ids
from sweeps.tracking.store import seed_sqlite_store
from sweeps.tracking.tags import (
    FAILURE_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    INTERNAL_PREFIX,
    KEY_TAG,
    LEGACY_TAGS,
    ORPHAN_TAG,
    PID_START_TAG,
    PID_TAG,
    ROLE_TAG,
    STALE_TAG,
    TERMINAL_STATUSES,
    run_tag,
)
from sweeps.tracking.tracker import MlflowTracker, SpoolNotDrainedError, replay_spool

__all__ = [
    "CLIENT_ENV_DEFAULTS",
    "FAILURE_TAG",
    "HEARTBEAT_TAG",
    "HOST_TAG",
    "INTERNAL_PREFIX",
    "KEY_TAG",
    "LEGACY_TAGS",
    "ORPHAN_TAG",
    "PID_START_TAG",
    "PID_TAG",
    "ROLE_TAG",
    "STALE_TAG",
    "TERMINAL_STATUSES",
    "Heartbeat",
    "MlflowTracker",
    "Spool",
    "SpoolNotDrainedError",
    "configure_client_env",
    "delete_orphan_runs",
    "ensure_experiment",
    "get_or_create_run",
    "is_transient",
    "mark_stale_runs",
    "mlflow_client",
    "owner_tags",
    "pending_spool_records",
    "replay_spool",
    "run_tag",
    "seed_sqlite_store",
    "spooled_run_ids",
]
