"""Run identity: a trial's run is found by its key before one is created, never duplicated.

- `ensure_experiment`: the experiment's id, created (or restored from the trash) on first use.
- `get_or_create_run`: the run tagged ``mlflow.simlab.key == key``, created if absent; a restored or
  retried trial thereby reattaches to its run (Ray's ``MLflowLoggerCallback`` keeps the trial -> run
  map in memory and gives every resumed trial a second run).
- `delete_orphan_runs`: the runs of trials a restored sweep no longer has go to MLflow's trash.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mlflow.entities import RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps.tracking.client import mlflow_client, retry
from sweeps.tracking.liveness import owner_tags
from sweeps.tracking.store import seed_sqlite_store
from sweeps.tracking.tags import KEY_TAG, LEGACY_TAGS, ORPHAN_TAG, ROLE_TAG, run_tag

logger = logging.getLogger(__name__)

__all__ = ["delete_orphan_runs", "ensure_experiment", "get_or_create_run"]

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:/=,+@ -]+$")


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"key: expected a non-empty str of letters, digits, spaces and _.:/=,+@- (it goes into an "
            f"MLflow filter string), got {key!r}"
        )
    return key


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
    client = mlflow_client(tracking_uri)
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

    return retry(attempt, what=f"ensure_experiment({name!r})", deadline=deadline, base_delay=0.5, max_delay=8)


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
    client = mlflow_client(tracking_uri)
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

    return retry(
        attempt, what=f"get_or_create_run(key={key!r})", deadline=deadline, base_delay=0.5, max_delay=8
    )


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
    client = mlflow_client(tracking_uri)
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
