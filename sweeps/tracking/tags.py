"""The names a sweep's MLflow runs carry: bookkeeping tags (identity, owner, heartbeat, why a run
ended) and the terminal run statuses.

Bookkeeping tags carry one internal prefix: the MLflow UI hides tags whose key starts with "mlflow."
from its run tables and run pages (3.17 bundle: `getVisibleTagValues`), so they stay off the overview.
Runs written before the rename carry the legacy names (`LEGACY_TAGS`); readers use `run_tag`, which
accepts both.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
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
    "run_tag",
]

INTERNAL_PREFIX = "mlflow.simlab."
KEY_TAG = INTERNAL_PREFIX + "key"  # the stable identity of a trial's run (e.g. the Tune trial id)
HOST_TAG = INTERNAL_PREFIX + "owner.host"
PID_TAG = INTERNAL_PREFIX + "owner.pid"
PID_START_TAG = INTERNAL_PREFIX + "owner.pid_start"  # /proc start time of the owner: guards pid reuse
HEARTBEAT_TAG = INTERNAL_PREFIX + "heartbeat"  # unix seconds of the owner's last beat (liveness.py)
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


def run_tag(tags: Mapping[str, str], name: str) -> str | None:
    """A bookkeeping tag's value, under its current name or the legacy one (runs written before)."""
    value = tags.get(name)
    if value is None and name in LEGACY_TAGS:
        value = tags.get(LEGACY_TAGS[name])
    return value
