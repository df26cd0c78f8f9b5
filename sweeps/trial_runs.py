"""A trial's MLflow run: found or created, named and tagged, logged to readably, and ended by cause.

The run is found or created by the tag ``mlflow.simlab.key = <trial id>``
(`sweeps.tracking.get_or_create_run`), a child of the sweep's parent run, so a restored or
retried trial reattaches to it. Its name says what the trial is (`trial_run_name`); its params are only
those the trial's label method uses (`readable_params`, logged through `readable_tracker`). It ends
FINISHED, FINISHED with `STOPPED_TAG` (the scheduler stopped it), FAILED with the reason, or KILLED with
``simlab.interrupted`` (Ctrl-C; `sweeps.stops` tells an interrupt from a scheduler stop). Ending a run
never raises: what could not be sent stays in the spool, which `sweeps.cleanup` delivers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeps.provenance import provenance_tags
from sweeps.space import method_name
from sweeps.spec import SweepSpec
from sweeps.stops import INTERRUPTED, INTERRUPTED_TAG, SCHEDULER, stop_cause
from sweeps.trial_context import trial_spec

logger = logging.getLogger(__name__)

STOPPED_TAG = "simlab.stopped_early"  # MLflow tag of a trial the scheduler stopped (run ends FINISHED)
ENTRY_POINT = "sweeps/trainable.py"  # the trial runs' ``mlflow.source.name``

_GREEK = {"alpha": "\u03b1", "beta": "\u03b2", "tau": "\u03c4"}
# Searched params already spelled out by the method name (``similarity:l1``) or not worth a run name.
_NOT_IN_NAME = frozenset({"label", "similarity", "confidence_source", "data_dir", "cache_dir"})


def _short(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.2g}"


def trial_label(config: Mapping[str, Any], spec: SweepSpec) -> str:
    """The trial's label method (``onehot`` unless the sweep fixes or searches one)."""
    return {**spec.fixed, **dict(config)}.get("label", "onehot")


def trial_run_name(config: Mapping[str, Any], spec: SweepSpec, trial_id: str) -> str:
    """An MLflow run name that says what the trial is: ``similarity:l1 α=0.099 β=5.40 [<trial id>]``
    (the method, then the searched params its label method uses, then the Tune trial id)."""
    label = trial_label(config, spec)
    parts = [method_name(dict(config), spec)]
    for name in spec.space:
        if name in _NOT_IN_NAME or name not in config or not spec.applies(name, label):
            continue
        parts.append(f"{_GREEK.get(name, name)}={_short(config[name])}")
    return " ".join([*parts, f"[{trial_id}]"])


def readable_params(params: Mapping[str, Any], *, label: str, method: str, spec: SweepSpec) -> dict[str, Any]:
    """The params worth showing for a trial: ``method`` first, then only those its label method uses
    (no ``alpha`` for one-hot, no ``beta`` outside similarity labels) and no ``None`` values."""
    out: dict[str, Any] = {"method": method}
    for key, value in params.items():
        if value is None:
            continue
        root = key.split(".", 1)[0]
        if root in ("similarity", "similarity_args"):  # the source of similarity and confidence labels
            if label not in ("similarity", "confidence"):
                continue
        elif not spec.applies(root, label):
            continue
        out[key] = value
    return out


class _ReadableTracker:
    """Wraps a trial's tracker so that `fit`'s ``log_params(flattened cfg)`` logs `readable_params`."""

    def __init__(self, tracker: Any, *, label: str, method: str, spec: SweepSpec) -> None:
        self._tracker, self._label, self._method, self._spec = tracker, label, method, spec

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._tracker.log_params(
            readable_params(params, label=self._label, method=self._method, spec=self._spec)
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._tracker.log_metrics(metrics, step=step)

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        self._tracker.log_artifact(path, artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._tracker.set_tags(tags)

    def __getattr__(self, name: str) -> Any:  # flush, close, run_id, spool_path, ...
        return getattr(self._tracker, name)


def readable_tracker(tracker: Any, config: Mapping[str, Any], ctx: Mapping[str, Any]) -> Any:
    """``tracker`` logging only the params trial ``config`` uses (see `readable_params`)."""
    spec = trial_spec(ctx)
    return _ReadableTracker(
        tracker, label=trial_label(config, spec), method=method_name(dict(config), spec), spec=spec
    )


def open_run(ctx: Mapping[str, Any], trial_id: str, config: Mapping[str, Any]) -> str:
    """The id of trial ``trial_id``'s run, found by its key or created (named, tagged) under the parent."""
    from sweeps.tracking import get_or_create_run  # imports mlflow

    spec = trial_spec(ctx)
    run_id = get_or_create_run(
        ctx["tracking_uri"],
        ctx["experiment_id"],
        key=trial_id,
        run_name=trial_run_name(config, spec, trial_id),
        parent_run_id=ctx["parent_run_id"],
        tags={
            "simlab.sweep": spec.name,
            "simlab.trial_id": trial_id,
            "simlab.method": method_name(dict(config), spec),
            "simlab.role": "trial",
            "simlab.stage": spec.stage,  # "search" or "seeds" (sweeps.driver.run_staged_sweep)
            **provenance_tags(ENTRY_POINT),
        },
    )
    _clear_interrupted_tag(ctx["tracking_uri"], run_id)
    return run_id


def _clear_interrupted_tag(tracking_uri: str, run_id: str) -> None:
    """A resumed trial's run is no longer an interrupted one (`scripts/report.py` skips those)."""
    from mlflow.tracking import MlflowClient  # heavy: only where a run is opened

    try:
        client = MlflowClient(tracking_uri)
        if INTERRUPTED_TAG in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, INTERRUPTED_TAG)
    except Exception:
        logger.exception("could not clear tag %s of MLflow run %s", INTERRUPTED_TAG, run_id)


def trial_tracker(ctx: Mapping[str, Any], run_id: str, trial_id: str, role: str = "trial") -> Any:
    """An `MlflowTracker` on run ``run_id`` spooling to its own folder: one per writer (``role``), as the
    TorchTrainer mode has two (the trial driver and rank 0)."""
    from sweeps.tracking import MlflowTracker  # imports mlflow

    return MlflowTracker(ctx["tracking_uri"], run_id, spool_dir=Path(ctx["spool_root"]) / trial_id / role)


def safe_tags(tracker: Any, tags: Mapping[str, str]) -> None:
    """Tag the run; an error is logged, never raised."""
    try:
        tracker.set_tags(tags)
    except Exception:
        logger.exception("could not tag MLflow run %s", getattr(tracker, "run_id", "?"))


def safe_close(tracker: Any, status: str, reason: str | None = None) -> None:
    """End the run as ``status``; an error is logged, never raised."""
    try:
        tracker.close(status, reason=reason)
    except Exception:  # the spool keeps what could not be sent; `sweeps.cleanup` delivers it
        logger.exception("could not close MLflow run %s as %s", getattr(tracker, "run_id", "?"), status)


def end_interrupted_run(tracker: Any) -> None:
    """Close the run of a trial a Ctrl-C reached (``KeyboardInterrupt``): KILLED, resumable."""
    safe_tags(tracker, {INTERRUPTED_TAG: "interrupted (SIGINT): continue with --resume"})
    safe_close(tracker, "KILLED")


def end_stopped_run(tracker: Any, sweep_dir: str, trial_id: str) -> None:
    """Close the run of a trial Tune stopped (``SystemExit`` from `tune.report`), by the recorded cause.

    The scheduler's recorded STOP (`sweeps.stops`) -> FINISHED with `STOPPED_TAG`; otherwise the sweep
    was interrupted (or Tune stopped it for another reason): KILLED with `INTERRUPTED_TAG`, resumable.
    """
    cause = stop_cause(sweep_dir, trial_id)
    if cause == SCHEDULER:
        safe_tags(tracker, {STOPPED_TAG: "stopped early by the trial scheduler"})
        safe_close(tracker, "FINISHED")
        return
    what = "interrupted (SIGINT)" if cause == INTERRUPTED else cause
    safe_tags(tracker, {INTERRUPTED_TAG: f"{what}: continue with --resume"})
    safe_close(tracker, "KILLED")


def end_run_for(err: BaseException, tracker: Any, *, sweep_dir: str, trial_id: str, reason: str) -> None:
    """Close the run of a trial whose `fit` (or `TorchTrainer.fit`) raised ``err``, by its cause.

    Tune stops a trial (ASHA, or the sweep's Ctrl-C) by raising ``SystemExit(0)`` in `tune.report`:
    `end_stopped_run`. A ``KeyboardInterrupt``: `end_interrupted_run`. Anything else: FAILED with
    ``reason``. The caller re-raises ``err`` unless a retry cannot fix it.
    """
    if isinstance(err, SystemExit):
        end_stopped_run(tracker, sweep_dir, trial_id)
    elif isinstance(err, KeyboardInterrupt):
        end_interrupted_run(tracker)
    else:
        safe_close(tracker, "FAILED", reason=reason)
