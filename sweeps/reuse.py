"""Reusing finished trial runs (``--reuse``): a trial whose configuration already ran to its end is not
trained again.

A two-stage sweep re-runs each method's chosen configuration on seeds that include the search stage's
seed, and an ablation grid repeats points of the main sweep: on a CPU these are bit-for-bit the runs
that exist (same config, same seed, same code), and each costs a full training. With ``--reuse SOURCE``
a trial first looks for such a run in the SOURCEs and, when it finds one, adopts it instead of training:

- **match** (`find_reusable`): a FINISHED trial run (not stopped early by a scheduler, not interrupted)
  whose params equal the trial's (`trial_params`: everything `simlab.train.fit` logs except the derived
  ``train_samples``), trained on the same kind of device with the same number of DDP processes and the
  same resolved precision (`trial_environment`; a run logged before these tags existed counts only
  when its params name the device and its sweep ran in-process, i.e. one process);
- **adopt** (`adopt_run`): the trial's own MLflow run gets the source's params, full metric histories
  (original steps and time stamps), artifacts and environment tags, plus `REUSED_FROM_TAG` (the
  original run, followed through earlier reuses) and `REUSED_COMMIT_TAG` (the commit that trained it);
  it ends FINISHED, and the trial reports the source's final metrics to Tune once, with `REUSED_FLAG`.

A SOURCE is ``self`` (this sweep's own MLflow experiment: both stages), a sweep folder (its
``sweep_spec.json`` names its store and experiment), or ``<tracking uri>#<experiment name>``. A reused
trial has no Tune checkpoint (the best model of a sweep whose best trial was reused is not logged
again: the source run's sweep logged it, if it was best there). Needs ``scheduler: none``: a reused
trial reports its last epoch at once, which a trial scheduler would compare with other trials' first
epochs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simlab.config import TrainConfig
from simlab.tracking import flat_params
from sweeps.space import method_name
from sweeps.spec import SpecError, SweepSpec
from sweeps.stops import INTERRUPTED_TAG
from sweeps.trial_runs import STOPPED_TAG, readable_params, trial_label

logger = logging.getLogger(__name__)

SELF = "self"
REUSED_FROM_TAG = "simlab.reused_from"  # "<tracking uri>#<run id>" of the run that was trained
REUSED_COMMIT_TAG = "simlab.reused_from.commit"  # the git commit that trained it
REUSED_FLAG = "reused"  # 1.0 in the Tune report of a reused trial
DERIVED_PARAMS = frozenset({"train_samples"})  # logged by fit from the data, not part of the config
ENV_TAGS = ("simlab.precision_resolved", "simlab.device", "simlab.world_size")  # copied with the run
_COMMIT_TAG = "mlflow.source.git.commit"


@dataclass(frozen=True)
class ReuseSource:
    """Where finished runs may be reused from: one MLflow experiment of one store (plain data)."""

    tracking_uri: str
    experiment_id: str
    given: str  # as the user wrote it, for messages

    def to_dict(self) -> dict[str, str]:
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id, "given": self.given}


# ---------------------------------------------------------------------------------------------
# The driver's side: sources named on the command line -> stores and experiments (checked, never created)
def check_reuse_allowed(spec: SweepSpec, values: Sequence[str]) -> None:
    """``--reuse`` needs a sweep without a trial scheduler (see the module docstring)."""
    if values and spec.scheduler != "none":
        raise SpecError(
            "reuse",
            f"needs scheduler 'none' (this sweep's is {spec.scheduler!r}): a reused trial reports its last "
            "epoch at once, which the scheduler would compare with other trials' early epochs",
        )


def resolve_sources(
    values: Sequence[str], spec: SweepSpec, experiment_id: str | None = None
) -> list[ReuseSource]:
    """The `ReuseSource` of each ``--reuse`` value; ``self`` needs this sweep's ``experiment_id`` (it is
    skipped while that is None: the CLI checks the others before anything starts). Raises `SpecError`
    ("reuse") for a source that does not exist; never creates a store or an experiment."""
    check_reuse_allowed(spec, values)
    out: list[ReuseSource] = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise SpecError(
                "reuse", f"expected 'self', a sweep folder or '<tracking uri>#<experiment>', got {value!r}"
            )
        if value == SELF:
            if experiment_id is not None:
                out.append(ReuseSource(spec.resolved_tracking_uri, experiment_id, value))
            continue
        uri, name = _store_and_experiment(value)
        out.append(ReuseSource(uri, _experiment_id(uri, name, value), value))
    unique = {(s.tracking_uri, s.experiment_id): s for s in out}
    return list(unique.values())


def _store_and_experiment(value: str) -> tuple[str, str]:
    if "#" in value and "://" in value.split("#", 1)[0]:
        uri, name = value.rsplit("#", 1)
        if not name:
            raise SpecError("reuse", f"{value!r}: no experiment name after '#'")
        return uri, name
    from sweeps.storage import SPEC_FILE, read_storage_text

    folder = value if "://" in value else os.path.abspath(os.path.expanduser(value))
    text = read_storage_text(folder, SPEC_FILE) if ("://" in folder or os.path.isdir(folder)) else None
    if text is None:
        raise SpecError(
            "reuse",
            f"{value!r}: not a sweep folder (no {SPEC_FILE}); give 'self', a sweep folder or "
            "'<tracking uri>#<experiment name>'",
        )
    try:
        saved = SweepSpec.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as err:  # SpecError is a ValueError
        raise SpecError("reuse", f"{value!r}: unreadable {SPEC_FILE}: {type(err).__name__}: {err}") from err
    if saved.tracking_uri:
        return saved.tracking_uri, saved.name
    if "://" in folder:
        raise SpecError(
            "reuse", f"{value!r}: its sweep names no tracking URI; give '<tracking uri>#{saved.name}'"
        )
    store = f"sqlite:///{folder.rstrip('/')}/mlflow.db"  # the sweep's default store, where the folder is now
    return store, saved.name


def _experiment_id(uri: str, name: str, given: str) -> str:
    if uri.startswith("sqlite:///"):  # MlflowClient would create a missing database
        path = uri[len("sqlite:///") :]
        if not os.path.isfile(path):
            raise SpecError("reuse", f"{given!r}: no MLflow database at {path}")
    from sweeps.tracking import mlflow_client

    try:
        experiment = mlflow_client(uri).get_experiment_by_name(name)
    except Exception as err:  # noqa: BLE001  (an unreachable server, a broken store)
        raise SpecError(
            "reuse", f"{given!r}: cannot read MLflow store {uri}: {type(err).__name__}: {err}"
        ) from err
    if experiment is None:
        raise SpecError("reuse", f"{given!r}: MLflow store {uri} has no experiment {name!r}")
    return str(experiment.experiment_id)


# ---------------------------------------------------------------------------------------------
# The trial's side
def trial_params(cfg: TrainConfig, config: Mapping[str, Any], spec: SweepSpec) -> dict[str, str]:
    """The params the trial's run will hold (as MLflow stores them: text), less `DERIVED_PARAMS`."""
    params = readable_params(
        flat_params(cfg.to_dict()),
        label=trial_label(config, spec),
        method=method_name(dict(config), spec),
        spec=spec,
    )
    return {k: str(v) for k, v in params.items() if k not in DERIVED_PARAMS}


def trial_environment(cfg: TrainConfig, spec: SweepSpec) -> dict[str, str]:
    """Where the trial would train: ``simlab.device`` (cpu / cuda), ``simlab.world_size`` (DDP
    processes) and ``simlab.precision_resolved`` (`simlab.precision.resolve_precision` on this machine)."""
    import torch

    from simlab.precision import resolve_precision
    from simlab.train.distributed import resolve_device

    if spec.in_process:  # where fit itself will put it
        world, device = 1, resolve_device(cfg.device, None).type
    else:  # the TorchTrainer's workers get GPUs only when the sweep asks for them
        world = int(spec.workers_per_trial)
        device = "cuda" if spec.gpus_per_trial > 0 and cfg.device != "cpu" else "cpu"
    precision = resolve_precision(
        cfg.precision,
        torch.device(device),
        amp=cfg.amp,
        channels_last=cfg.channels_last,
        cache_dir=cfg.resolved_cache_dir,
    ).label
    return {"simlab.device": device, "simlab.world_size": str(world), "simlab.precision_resolved": precision}


def source_environment(run: Any, client: Any) -> dict[str, str | None]:
    """A finished run's `trial_environment`, from its tags; for a run logged before ``simlab.device`` /
    ``simlab.world_size`` existed: the device its params name (None for ``auto``) and one process when
    its sweep ran in-process (the parent run's ``mode`` param), else None (unknown: never matches)."""
    tags, params = run.data.tags, run.data.params
    device = tags.get("simlab.device")
    if device is None and params.get("device") in ("cpu", "cuda"):
        device = params["device"]
    world = tags.get("simlab.world_size")
    if world is None:
        parent_id = tags.get("mlflow.parentRunId")
        try:
            mode = client.get_run(parent_id).data.params.get("mode") if parent_id else None
        except Exception:  # noqa: BLE001  (a deleted parent: unknown)
            mode = None
        world = "1" if mode == "in_process" else None
    return {
        "simlab.device": device,
        "simlab.world_size": world,
        "simlab.precision_resolved": tags.get("simlab.precision_resolved"),
    }


@dataclass(frozen=True)
class Reusable:
    """A run a trial can adopt."""

    tracking_uri: str
    run_id: str
    given: str


def find_reusable(
    sources: Sequence[Mapping[str, str]],
    params: Mapping[str, str],
    environment: Mapping[str, str],
    *,
    exclude_run_id: str | None = None,
) -> Reusable | None:
    """The first run of the first source that matches (see the module docstring): an original run before
    a copy of one, the earliest first. None when no source has one."""
    from sweeps.tracking import mlflow_client  # imports mlflow

    method = params.get("method", "")
    where = "attributes.status = 'FINISHED' and tags.`simlab.role` = 'trial'"
    if method and "'" not in method:
        where += f" and params.method = '{method}'"
    for source in sources:
        client = mlflow_client(source["tracking_uri"])
        runs = client.search_runs(
            [source["experiment_id"]],
            filter_string=where,
            order_by=["attributes.start_time ASC"],
            max_results=50000,
        )
        matches = []
        for run in runs:
            tags = run.data.tags
            if run.info.run_id == exclude_run_id or STOPPED_TAG in tags or INTERRUPTED_TAG in tags:
                continue
            got = {k: v for k, v in run.data.params.items() if k not in DERIVED_PARAMS}
            if got != dict(params):
                continue
            if source_environment(run, client) != dict(environment):
                continue
            matches.append(run)
        if matches:
            run = min(matches, key=lambda r: (REUSED_FROM_TAG in r.data.tags, r.info.start_time or 0))
            return Reusable(
                source["tracking_uri"], run.info.run_id, source.get("given", source["tracking_uri"])
            )
    return None


def trained_here(tracking_uri: str, run_id: str) -> bool:
    """Whether the trial's run holds metrics of its own training (an earlier attempt of the trial trained
    before ``--reuse`` found a match): such a trial goes on training; its history is never mixed with an
    adopted one."""
    from sweeps.tracking import mlflow_client

    run = mlflow_client(tracking_uri).get_run(run_id)
    return bool(run.data.metrics) and REUSED_FROM_TAG not in run.data.tags


def adopt_run(tracker: Any, reusable: Reusable) -> dict[str, float]:
    """Copy run ``reusable`` into the trial's run (``tracker``: an `MlflowTracker`, left open) and return
    the source's final metrics (the latest value of each). Idempotent for a run that holds the copy."""
    from sweeps.tracking import mlflow_client

    client = mlflow_client(reusable.tracking_uri)
    source = client.get_run(reusable.run_id)
    tags = source.data.tags
    origin = tags.get(REUSED_FROM_TAG, f"{reusable.tracking_uri}#{reusable.run_id}")
    commit = tags.get(REUSED_COMMIT_TAG, tags.get(_COMMIT_TAG, "unknown"))
    own = tracker.client.get_run(tracker.run_id)
    if own.data.tags.get(REUSED_FROM_TAG) == origin and own.data.metrics:
        return dict(source.data.metrics)  # copied by an earlier attempt of this trial
    tracker.log_params(dict(source.data.params))
    points = []
    for key in source.data.metrics:
        points.extend(
            (m.key, m.value, m.timestamp, m.step) for m in client.get_metric_history(reusable.run_id, key)
        )
    tracker.log_metric_points(points)
    tracker.set_tags(
        {**{k: tags[k] for k in ENV_TAGS if k in tags}, REUSED_FROM_TAG: origin, REUSED_COMMIT_TAG: commit}
    )
    folder = Path(tempfile.mkdtemp(prefix="simlab-reuse-"))
    try:
        client.download_artifacts(reusable.run_id, "", str(folder))
        if any(folder.iterdir()):
            tracker.log_artifact(folder)  # the folder's contents, at the run's artifact root
        tracker.flush(timeout=120)  # a spooled upload keeps its own copy; the folder can go
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return dict(source.data.metrics)


def reuse_preview(spec: SweepSpec, values: Sequence[str]) -> str:
    """What ``--reuse`` would adopt, for ``--dry-run``: of a grid's points, how many have a finished run
    in the sources (``self`` only when this sweep's store exists already, i.e. on ``--resume``)."""
    from sweeps.space import grid_points, train_config_dict

    sources = resolve_sources([v for v in values if v != SELF], spec)
    if SELF in values:
        try:
            sources.insert(
                0,
                ReuseSource(
                    spec.resolved_tracking_uri,
                    _experiment_id(spec.resolved_tracking_uri, spec.name, SELF),
                    SELF,
                ),
            )
        except SpecError:  # a new sweep: nothing of its own to reuse yet
            pass
    seeds_note = (
        "; stage 2 seeds: each choice's search seed is its search run"
        if spec.seeds > 0 and SELF in values
        else ""
    )
    if spec.search != "grid":
        return f"reuse: checked per trial ({spec.search} search points are not known in advance){seeds_note}"
    points = grid_points(spec)
    found = 0
    for point in points:
        cfg = TrainConfig.from_dict(train_config_dict(spec, dict(point)))
        hit = find_reusable(
            [s.to_dict() for s in sources], trial_params(cfg, point, spec), trial_environment(cfg, spec)
        )
        found += hit is not None
    stage = "stage 1 " if spec.seeds > 0 else ""
    return f"reuse: {stage}{found} of {len(points)} grid points have a finished run to adopt{seeds_note}"
