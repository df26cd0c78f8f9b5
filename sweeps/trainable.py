"""Ray Tune function trainables: a trial = one `simlab.train.fit` call, two ways.

- `inprocess_trainable`: the Tune actor calls `fit` itself and reports each epoch with
  `ray.tune.report` + a checkpoint. Start-up is one actor (~seconds): the mode for small local sweeps.
- `torch_trainer_trainable`: the Tune function builds a Ray Train V2 `TorchTrainer` (Ray 2.60 no longer
  accepts a trainer as a Tune trainable) whose `RunConfig` is named by the trial id under the sweep's
  storage path, so a retried trial finds its Train run and checkpoints again; workers run `fit` under
  DDP, rank 0's metrics reach Tune through `TuneReportCallback`. Train-level `FailureConfig` retries
  dead workers from the last checkpoint; Tune's retries the whole trial.

Both get the sweep context (`TrialContext`, plain data) and the similarity matrices computed once by the
driver (`matrices`: key -> float64 ``[K, K]``) through `tune.with_parameters`, i.e. from Ray's object
store: a trial never computes a similarity matrix (a missing key is an error, not a recompute). β is
applied inside `fit` (paper A eq. 17 on the source distances).

MLflow: the trial's run is found or created by the tag ``mlflow.simlab.key = <trial id>``
(`sweeps.mlflow_tracking.get_or_create_run`), a child of the sweep's parent run, so a restored or
retried trial reattaches to it; it ends FINISHED, or FAILED with the reason (NaN loss, crash), or KILLED
on Ctrl-C (tag ``simlab.interrupted``; `sweeps.stops` tells an interrupt from a scheduler stop, both of
which reach the trial as ``SystemExit`` from `tune.report`).

An error a retry cannot fix (`simlab.errors.is_non_retryable`: bad configuration or data) is not raised
to Tune, which would retry it up to ``tune_max_failures`` times (forever with -1): the run ends FAILED
with the reason and the trial reports a last result with ``failed = 1.0`` (objectives NaN, so Optuna
records FAIL) and returns, so Tune ends it without a retry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "ckpt"  # inside a trial's local work folder: what fit resumes from
# fit evaluates every `eval_every` epochs; Tune needs the objective in every report, so the last
# evaluated metrics are carried forward and `evaluated_epoch` says which epoch they come from.
EVALUATED_EPOCH = "evaluated_epoch"
FINAL_FLAG = "final"  # 1.0 on the last report: fit's final metrics incl. ts_/ets_/dir_ recalibration
STOPPED_TAG = "simlab.stopped_early"  # MLflow tag of a trial the scheduler stopped (run ends FINISHED)
FAILED_MARKER = "simlab_failed.txt"  # in a Train run folder: rank 0 ended on a non-retryable error
EPOCH_CHECKPOINT_PREFIX = "epoch_"  # Train-mode checkpoint folders: <storage>/train/<trial id>/epoch_000003
FAILED_FLAG = "failed"  # 1.0 on the last report of a trial ended by a non-retryable error
FAILED_REASON = "failed_reason"  # that error, "Type: message"
# A folder: each in-process trial writes <trial id>.json with its phase timings there (and
# <trial id>.prof, a cProfile of the whole trainable, when PROFILE_CPROFILE_ENV=1). For
# scripts/bench/bench_sweep.py; unset (the default) costs nothing.
PROFILE_ENV = "SIMLAB_TRIAL_PROFILE"
PROFILE_CPROFILE_ENV = "SIMLAB_TRIAL_CPROFILE"


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs to know about its sweep (plain data: goes through Ray's object store)."""

    spec: dict[str, Any]  # SweepSpec.to_json()
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    spool_root: str  # local folder (per node) where MLflow calls wait during an outage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# The TrainConfig fields the data split (and so a pixel-distance matrix) depends on.
DATA_FIELDS: tuple[str, ...] = (
    "dataset",
    "data_dir",
    "cache_dir",
    "val_fraction",
    "subset_per_class",
    "seed",
)


def matrix_key(cfg_values: Mapping[str, Any]) -> str | None:
    """The key of the similarity matrix a trial config needs (None: it needs none).

    It covers everything the matrix depends on: the data split (dataset, files, validation fraction,
    subset, seed) and the source with its arguments. Computed identically by the driver and trials.
    """
    from simlab.config import TrainConfig
    from simlab.targets import needs_source_matrix

    cfg = cfg_values if isinstance(cfg_values, TrainConfig) else TrainConfig.from_dict(dict(cfg_values))
    if not needs_source_matrix(cfg):
        return None
    parts = {name: getattr(cfg, name) for name in (*DATA_FIELDS, "similarity", "similarity_args")}
    return json.dumps(parts, sort_keys=True, default=str)


def _trial_config(config: Mapping[str, Any], ctx: Mapping[str, Any]):
    from simlab.config import TrainConfig
    from sweeps.space import train_config_dict
    from sweeps.spec import SweepSpec

    spec = SweepSpec.from_json(ctx["spec"])
    return spec, TrainConfig.from_dict(train_config_dict(spec, dict(config)))


def _lookup_matrix(cfg: Any, matrices: Mapping[str, Any]) -> Any:
    key = matrix_key(cfg)
    if key is None:
        return None
    if key not in matrices:
        # The driver computes every matrix a trial can need before the first trial; a miss is a bug.
        raise KeyError(f"matrices: no similarity matrix for {key}; the driver computed {sorted(matrices)}")
    # Arrays from Ray's object store are read-only views; a [K, K] copy is cheap and safe to hand to torch.
    import numpy as np

    return np.array(matrices[key], copy=True)


_GREEK = {"alpha": "\u03b1", "beta": "\u03b2", "tau": "\u03c4"}
# Searched params already spelled out by the method name (``similarity:l1``) or not worth a run name.
_NOT_IN_NAME = frozenset({"label", "similarity", "confidence_source", "data_dir", "cache_dir"})


def _short(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.2g}"


def trial_run_name(config: Mapping[str, Any], spec: Any, trial_id: str) -> str:
    """An MLflow run name that says what the trial is: ``similarity:l1 α=0.099 β=5.40 [<trial id>]``
    (the method, then the searched params its label method uses, then the Tune trial id)."""
    from sweeps.space import method_name

    merged = {**spec.fixed, **dict(config)}
    label = merged.get("label", "onehot")
    parts = [method_name(dict(config), spec)]
    for name in spec.space:
        if name in _NOT_IN_NAME or name not in config or not spec.applies(name, label):
            continue
        parts.append(f"{_GREEK.get(name, name)}={_short(config[name])}")
    return " ".join([*parts, f"[{trial_id}]"])


def readable_params(params: Mapping[str, Any], *, label: str, method: str, spec: Any) -> dict[str, Any]:
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

    def __init__(self, tracker: Any, *, label: str, method: str, spec: Any) -> None:
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


# The in-process trainable's actor-level dataset cache (Tune reuses the actor for the sweep's next trial):
# (load key, ImageData) of the last dataset this process loaded. One entry: a sweep over data choices
# must not hold every split in memory. `fit` does not modify the data it is given.
_DATA_CACHE: list[tuple[str, Any]] = []


def _trial_data(cfg: Any) -> Any:
    """The trial's `ImageData`, loaded once per actor process and data split (see `_DATA_CACHE`)."""
    from simlab.data import load_split

    key = json.dumps(
        [
            cfg.dataset,
            cfg.data_dir,
            str(cfg.resolved_cache_dir),
            cfg.val_fraction,
            cfg.subset_per_class,
            cfg.seed,
        ],
        default=str,
    )
    if _DATA_CACHE and _DATA_CACHE[0][0] == key:
        return _DATA_CACHE[0][1]
    _DATA_CACHE.clear()  # release the old split before loading the new one
    data = load_split(cfg)
    _DATA_CACHE.append((key, data))
    return data


def readable_tracker(tracker: Any, config: Mapping[str, Any], ctx: Mapping[str, Any]) -> Any:
    from sweeps.space import method_name
    from sweeps.spec import SweepSpec

    spec = SweepSpec.from_json(ctx["spec"])
    label = {**spec.fixed, **dict(config)}.get("label", "onehot")
    return _ReadableTracker(tracker, label=label, method=method_name(dict(config), spec), spec=spec)


def _open_run(ctx: Mapping[str, Any], trial_id: str, trial_name: str, config: Mapping[str, Any]) -> str:
    from sweeps.mlflow_tracking import get_or_create_run
    from sweeps.provenance import provenance_tags
    from sweeps.space import method_name
    from sweeps.spec import SweepSpec

    spec = SweepSpec.from_json(ctx["spec"])
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
            **provenance_tags("sweeps/trainable.py"),
        },
    )
    _clear_interrupted_tag(ctx["tracking_uri"], run_id)
    return run_id


def _clear_interrupted_tag(tracking_uri: str, run_id: str) -> None:
    """A resumed trial's run is no longer an interrupted one (`scripts/report.py` skips those)."""
    from mlflow.tracking import MlflowClient

    from sweeps.stops import INTERRUPTED_TAG

    try:
        client = MlflowClient(tracking_uri)
        if INTERRUPTED_TAG in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, INTERRUPTED_TAG)
    except Exception:
        logger.exception("could not clear tag %s of MLflow run %s", INTERRUPTED_TAG, run_id)


def _end_stopped_run(tracker: Any, sweep_dir: str, trial_id: str) -> None:
    """Close the run of a trial Tune stopped (``SystemExit`` from `tune.report`), by the recorded cause.

    The scheduler's recorded STOP (`sweeps.stops`) -> FINISHED with `STOPPED_TAG`; otherwise the sweep
    was interrupted (or Tune stopped it for another reason): KILLED with `INTERRUPTED_TAG`, resumable.
    """
    from sweeps.stops import INTERRUPTED, INTERRUPTED_TAG, SCHEDULER, stop_cause

    cause = stop_cause(sweep_dir, trial_id)
    if cause == SCHEDULER:
        _safe_tags(tracker, {STOPPED_TAG: "stopped early by the trial scheduler"})
        _safe_close(tracker, "FINISHED")
        return
    what = "interrupted (SIGINT)" if cause == INTERRUPTED else cause
    _safe_tags(tracker, {INTERRUPTED_TAG: f"{what}: continue with --resume"})
    _safe_close(tracker, "KILLED")


def _failure_report(spec: Any, carry: _Carry, reason: str) -> dict[str, Any]:
    """The last report of a trial ended by a non-retryable error: objectives NaN (Optuna: FAIL)."""
    report: dict[str, Any] = dict(carry.last)
    for obj in spec.objectives:
        report[obj.metric] = float("nan")
    return {**report, FAILED_FLAG: 1.0, FAILED_REASON: reason[:2000]}


def _tracker(ctx: Mapping[str, Any], run_id: str, trial_id: str, role: str = "trial"):
    from sweeps.mlflow_tracking import MlflowTracker

    # One spool folder per writer: the TorchTrainer mode has two (the trial driver and rank 0).
    return MlflowTracker(ctx["tracking_uri"], run_id, spool_dir=Path(ctx["spool_root"]) / trial_id / role)


def _safe_tags(tracker: Any, tags: Mapping[str, str]) -> None:
    try:
        tracker.set_tags(tags)
    except Exception:
        logger.exception("could not tag MLflow run %s", getattr(tracker, "run_id", "?"))


def _safe_close(tracker: Any, status: str, reason: str | None = None) -> None:
    try:
        tracker.close(status, reason=reason)
    except Exception:  # the spool keeps what could not be sent; `sweeps.cleanup` delivers it
        logger.exception("could not close MLflow run %s as %s", getattr(tracker, "run_id", "?"), status)


class _Phases:
    """Wall-clock seconds of a trial's phases (written only when `PROFILE_ENV` names a folder)."""

    def __init__(self) -> None:
        self.folder = os.environ.get(PROFILE_ENV) or None
        self.start = time.time()
        self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.profiler = None
        if self.folder and os.environ.get(PROFILE_CPROFILE_ENV) == "1":
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def mark(self, name: str) -> None:
        """Charge the time since the previous mark to phase ``name``."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def write(self, trial_id: str, **extra: Any) -> None:
        if not self.folder:
            return
        try:
            folder = Path(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            if self.profiler is not None:
                self.profiler.disable()
                self.profiler.dump_stats(str(folder / f"{trial_id}.prof"))
            record = {
                "trial_id": trial_id,
                "pid": os.getpid(),
                "start": self.start,
                "end": time.time(),
                "phases_s": self.seconds,
                **extra,
            }
            tmp = folder / f".{trial_id}.json.tmp"
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, folder / f"{trial_id}.json")
        except OSError:
            logger.exception("could not write the phase timings of trial %s", trial_id)


class _TimedTracker:
    """A Tracker that charges the time of every call of the tracker it wraps to ``phases``."""

    def __init__(self, tracker: Any, phases: _Phases, name: str) -> None:
        self._tracker, self._phases, self._name = tracker, phases, name

    def _timed(self, method: str, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return getattr(self._tracker, method)(*args, **kwargs)
        finally:
            self._phases.add(self._name, time.perf_counter() - t0)

    def log_params(self, params: Any) -> None:
        self._timed("log_params", params)

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self._timed("log_metrics", metrics, step=step)

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        self._timed("log_artifact", path, artifact_path=artifact_path)

    def set_tags(self, tags: Any) -> None:
        self._timed("set_tags", tags)


class _Carry:
    """Keeps the last evaluated metrics so every report holds the objective (see EVALUATED_EPOCH)."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> dict[str, float]:
        if any(k.startswith("val_") for k in metrics):
            self.last = {k: v for k, v in metrics.items() if k not in ("epoch", "train_loss", "lr")}
            self.last[EVALUATED_EPOCH] = float(epoch)
        return {**self.last, **metrics}


def _restore_checkpoint(checkpoint: Any, work: Path) -> None:
    target = work / CHECKPOINT_SUBDIR
    if checkpoint is None:
        return
    if target.exists():
        shutil.rmtree(target)
    checkpoint.to_directory(str(target))
    logger.info("restored trial checkpoint %s into %s", checkpoint.path, target)


def epoch_checkpoint_name(epoch: int) -> str:
    """The folder name of epoch ``epoch``'s checkpoint inside a Train run (ordered by name and epoch)."""
    return f"{EPOCH_CHECKPOINT_PREFIX}{epoch:06d}"


def newest_persisted_checkpoint(run_uri: str, work: Path) -> int | None:
    """Copy the newest complete epoch checkpoint of a Train run into ``work/ckpt``; its epoch, or None.

    Why not only ``ray.train.get_checkpoint()``: Ray Train V2 persists a reported checkpoint to storage
    inside ``ray.train.report``, but registers it only when its controller next polls the workers
    (every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s). A worker that dies between the two takes the
    queued report with it, and the restarted group would get an older checkpoint — or none, restarting
    from epoch 0 (RELIABILITY T1: at most one epoch redone). The folders themselves survive, named by
    `epoch_checkpoint_name`, so the newest one whose ``checkpoint.pt`` (or its ``.prev``) loads is the
    true resume point. A folder cut short by a death mid-upload fails to load and is skipped.
    """
    import pyarrow.fs as pafs

    from simlab.checkpoint import CheckpointError, load_latest

    fs, root = pafs.FileSystem.from_uri(run_uri)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    epochs = sorted(
        (
            (int(info.base_name[len(EPOCH_CHECKPOINT_PREFIX) :]), info.path)
            for info in infos
            if info.type == pafs.FileType.Directory
            and info.base_name.startswith(EPOCH_CHECKPOINT_PREFIX)
            and info.base_name[len(EPOCH_CHECKPOINT_PREFIX) :].isdigit()
        ),
        reverse=True,
    )
    target = work / CHECKPOINT_SUBDIR
    for epoch, path in epochs:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        local = pafs.LocalFileSystem()
        pafs.copy_files(path, str(target), source_filesystem=fs, destination_filesystem=local)
        try:
            found = load_latest(target, map_location="cpu")
        except CheckpointError as err:
            logger.warning("skipping checkpoint folder %s: %s", path, err)
            continue
        if found is not None:  # the state's own epoch: a folder's .prev fallback holds the one before
            state, file = found
            logger.info("resuming from persisted checkpoint %s (epoch %s)", file, state.get("epoch"))
            return int(state.get("epoch", epoch))
    if target.exists():
        shutil.rmtree(target)
    return None


def _ray_checkpoint_dir(checkpoint_dir: str | Path, parent: str | Path) -> Path:
    """A fresh folder under ``parent`` holding only ``checkpoint.pt`` of `fit`'s ``checkpoint_dir``
    (hard-linked, copied across file systems): what is handed to Ray. The ``checkpoint.pt.prev``
    fallback stays local, so each report uploads one checkpoint, not two. The caller removes the folder
    once Ray has persisted it (``tune.report`` / ``ray.train.report`` return after the upload)."""
    from simlab.checkpoint import CHECKPOINT_NAME

    src = Path(checkpoint_dir) / CHECKPOINT_NAME
    out = Path(tempfile.mkdtemp(prefix="report-", dir=parent))
    try:
        os.link(src, out / CHECKPOINT_NAME)
    except OSError:
        shutil.copy2(src, out / CHECKPOINT_NAME)
    return out


# ---------------------------------------------------------------------------------------------
def inprocess_trainable(config: dict[str, Any], *, ctx: dict[str, Any], matrices: dict[str, Any]) -> None:
    """Tune function trainable: `fit` in this actor, one `tune.report` (+ checkpoint) per epoch."""
    phases = _Phases()
    import torch
    from ray import tune

    from simlab.errors import is_non_retryable
    from simlab.train import fit

    tctx = tune.get_context()
    trial_id, trial_name = tctx.get_trial_id(), tctx.get_trial_name()
    phases.mark("imports")
    spec, cfg = _trial_config(config, ctx)
    torch.set_num_threads(max(1, int(spec.cpus_per_trial)))
    matrix = _lookup_matrix(cfg, matrices)
    phases.mark("spec_parse")
    work = Path(tempfile.mkdtemp(prefix=f"simlab-{trial_id}-"))
    _restore_checkpoint(tune.get_checkpoint(), work)
    phases.mark("checkpoint_restore")
    run_id = _open_run(ctx, trial_id, trial_name, config)
    phases.mark("mlflow_run_lookup")
    tracker = readable_tracker(_tracker(ctx, run_id, trial_id), config, ctx)
    phases.mark("tracker_create")
    fit_tracker = _TimedTracker(tracker, phases, "fit_mlflow_logging") if phases.folder else tracker
    carry = _Carry()

    def on_epoch_end(report: Any) -> None:
        t0 = time.perf_counter()
        metrics = carry(report.epoch, report.metrics)
        if report.checkpoint_dir is None:
            tune.report(metrics)
        else:
            folder = _ray_checkpoint_dir(report.checkpoint_dir, work)  # checkpoint.pt only, not .prev
            try:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        phases.add("fit_tune_report", time.perf_counter() - t0)

    try:
        # Inside the try: a dataset that fails to load ends the trial's run FAILED with the reason.
        data = _trial_data(cfg)
        phases.mark("dataset_load")
        result = fit(
            cfg,
            data=data,
            source_matrix=matrix,
            tracker=fit_tracker,
            on_epoch_end=on_epoch_end,
            checkpoint_dir=work / CHECKPOINT_SUBDIR,
            artifact_dir=work / "artifacts",
        )
    except SystemExit:
        # Tune stops a trial (ASHA, or the sweep's Ctrl-C) by raising SystemExit(0) in `tune.report`.
        _end_stopped_run(tracker, spec.sweep_dir, trial_id)
        raise
    except KeyboardInterrupt:
        _safe_tags(tracker, {_interrupted_tag(): "interrupted (SIGINT): continue with --resume"})
        _safe_close(tracker, "KILLED")
        raise
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}"
        _safe_close(tracker, "FAILED", reason=reason)
        if not (isinstance(err, Exception) and is_non_retryable(err)):
            raise
        logger.error("trial %s failed: %s (not retried: a retry cannot fix it)", trial_id, reason)
        tune.report(_failure_report(spec, carry, reason))
        return
    finally:
        shutil.rmtree(work, ignore_errors=True)  # Tune holds the checkpoints
    phases.mark("fit")
    # Closed before the last report: a scheduler may stop the trial as soon as it has that report.
    _safe_close(tracker, "FINISHED")
    phases.mark("mlflow_close")
    tune.report({**carry(cfg.epochs, result.metrics), FINAL_FLAG: 1.0})
    phases.mark("final_report")
    phases.write(trial_id)


# ---------------------------------------------------------------------------------------------
def torch_trainer_trainable(config: dict[str, Any], *, ctx: dict[str, Any], matrices: dict[str, Any]) -> None:
    """Tune function trainable that runs one Ray Train V2 `TorchTrainer` named by the trial id."""
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    tctx = tune.get_context()
    trial_id, trial_name = tctx.get_trial_id(), tctx.get_trial_name()
    spec, cfg = _trial_config(config, ctx)  # validates before any worker starts
    matrix = _lookup_matrix(cfg, matrices)
    run_id = _open_run(ctx, trial_id, trial_name, config)
    tracker = _tracker(ctx, run_id, trial_id, "driver")  # closes the run; rank 0 writes to it
    resources: dict[str, float] = {"CPU": spec.cpus_per_trial}
    if spec.gpus_per_trial > 0:
        resources["GPU"] = spec.gpus_per_trial
    trainer = TorchTrainer(
        _train_worker_loop,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "matrix": matrix,
            "ctx": ctx,
            "trial_id": trial_id,
            "run_id": run_id,
            "cpus": spec.cpus_per_trial,
            "run_uri": _train_run_uri(spec.sweep_dir, trial_id),
            "config": dict(config),  # the trial's sweep params: rank 0 wraps its tracker (readable_tracker)
        },
        scaling_config=ScalingConfig(
            num_workers=spec.workers_per_trial,
            use_gpu=spec.gpus_per_trial > 0,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            # Stable (storage_path, name): a retried trial resumes its Train run from its checkpoint.
            name=trial_id,
            storage_path=_train_storage(spec.sweep_dir),
            failure_config=FailureConfig(max_failures=spec.train_max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    run_uri = _train_run_uri(spec.sweep_dir, trial_id)
    _pop_failure_marker(run_uri)  # a marker of an earlier attempt of this trial is not this one's
    try:
        trainer.fit()
    except SystemExit:
        _end_stopped_run(tracker, spec.sweep_dir, trial_id)
        raise
    except KeyboardInterrupt:
        _safe_tags(tracker, {_interrupted_tag(): "interrupted (SIGINT): continue with --resume"})
        _safe_close(tracker, "KILLED")
        raise
    except BaseException as err:
        reason = f"{type(err).__name__}: {_root_cause(err)}"
        _safe_close(tracker, "FAILED", reason=reason)
        if not _train_error_non_retryable(err):
            raise
        logger.error("trial %s failed: %s (not retried: a retry cannot fix it)", trial_id, reason)
        tune.report(_failure_report(spec, _Carry(), reason))
        return
    reason = _pop_failure_marker(run_uri)
    if reason is not None:  # the workers ended on a non-retryable error
        _safe_close(tracker, "FAILED", reason=reason)
        logger.error("trial %s failed: %s (not retried: a retry cannot fix it)", trial_id, reason)
        return  # TuneReportCallback has passed the failure report (NaN objectives, the reason) to Tune
    _safe_close(tracker, "FINISHED")


def _failure_marker(run_uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(run_uri)
    return fs, f"{root.rstrip('/')}/{FAILED_MARKER}"


def _write_failure_marker(run_uri: str, reason: str) -> None:
    """Rank 0 tells the trial driver (through the run's storage, reachable from every node) that the
    workers ended on a non-retryable error: Train's `Result` carries no metrics reported without a
    checkpoint, so the driver could not tell this end from a finished run."""
    fs, path = _failure_marker(run_uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as fh:
        fh.write(reason.encode("utf-8"))


def _pop_failure_marker(run_uri: str) -> str | None:
    """The reason `_write_failure_marker` left (then removed), or None."""
    import pyarrow.fs as pafs

    fs, path = _failure_marker(run_uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as fh:
        reason = fh.read().decode("utf-8", errors="replace")
    fs.delete_file(path)
    return reason


def _train_storage(sweep_dir: str) -> str:
    return f"{sweep_dir}/train"


def _train_run_uri(sweep_dir: str, trial_id: str) -> str:
    """Where Ray Train keeps trial ``trial_id``'s run: local path or ``s3://...`` like the sweep dir."""
    return f"{_train_storage(sweep_dir)}/{trial_id}"


def _interrupted_tag() -> str:
    from sweeps.stops import INTERRUPTED_TAG

    return INTERRUPTED_TAG


def _train_error_non_retryable(err: BaseException) -> bool:
    """A TorchTrainer failure whose cause (in any worker) is an error a retry cannot fix."""
    from simlab.errors import is_non_retryable

    if not isinstance(err, Exception):
        return False
    causes = [err, getattr(err, "controller_failure", None), *getattr(err, "worker_failures", {}).values()]
    for cause in causes:
        if cause is None:
            continue
        if is_non_retryable(cause) or (
            isinstance(getattr(cause, "cause", None), BaseException) and is_non_retryable(cause.cause)
        ):
            return True
    return False


def _root_cause(err: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    for line in reversed(text.splitlines()):
        if "Error" in line:
            return line.strip()[:2000]
    return text[:2000]


def _train_worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; `fit` sees torch.distributed initialised and trains with DDP."""
    import ray.train
    import torch

    from simlab.config import TrainConfig
    from simlab.tracking import NullTracker
    from simlab.train import fit

    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(loop_config["cpus"])))
    cfg = TrainConfig.from_dict(loop_config["cfg"])
    ctx, trial_id = loop_config["ctx"], loop_config["trial_id"]
    work = Path(tempfile.mkdtemp(prefix=f"simlab-{trial_id}-r{rank}-"))
    # The newest checkpoint persisted in the run folder, registered by Ray's controller or not (see
    # newest_persisted_checkpoint); Ray's registered one only if the folder cannot be listed.
    if newest_persisted_checkpoint(loop_config["run_uri"], work) is None:
        _restore_checkpoint(ray.train.get_checkpoint(), work)
    tracker: Any = NullTracker()
    if rank == 0:
        tracker = readable_tracker(
            _tracker(ctx, loop_config["run_id"], trial_id, "rank0"), loop_config["config"], ctx
        )
    carry = _Carry()

    def on_epoch_end(report: Any) -> None:
        metrics = carry(report.epoch, report.metrics)
        folder = None
        if rank == 0 and report.checkpoint_dir is not None:
            folder = _ray_checkpoint_dir(report.checkpoint_dir, work)  # checkpoint.pt only, not .prev
        checkpoint = None if folder is None else ray.train.Checkpoint.from_directory(str(folder))
        try:
            # Every rank (it is a barrier), each naming the folder by epoch so a restart can find it.
            name = epoch_checkpoint_name(report.epoch)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)  # persisted by Ray once report returns

    try:
        result = fit(
            cfg,
            source_matrix=loop_config["matrix"],
            tracker=tracker,
            on_epoch_end=on_epoch_end,
            checkpoint_dir=work / CHECKPOINT_SUBDIR,
            artifact_dir=work / "artifacts",
        )
    except Exception as err:
        from simlab.errors import is_non_retryable

        if not is_non_retryable(err):
            raise  # Train's FailurePolicy retries it from the last checkpoint
        # Train would retry even an error no retry can fix (train_max_failures=-1: forever): end the run
        # with a failure report instead; torch_trainer_trainable fails the trial with the reason.
        from sweeps.spec import SweepSpec

        reason = f"{type(err).__name__}: {err}"
        logger.error("trial %s, rank %d: %s (not retried: a retry cannot fix it)", trial_id, rank, reason)
        if rank == 0:
            _write_failure_marker(loop_config["run_uri"], reason)
        ray.train.report(_failure_report(SweepSpec.from_json(ctx["spec"]), carry, reason))
        if rank == 0:
            tracker.flush(timeout=120)
        shutil.rmtree(work, ignore_errors=True)
        return
    ray.train.report({**carry(cfg.epochs, result.metrics), FINAL_FLAG: 1.0})
    if rank == 0 and not tracker.flush(timeout=120):
        logger.warning("MLflow calls of trial %s still spooled in %s", trial_id, tracker.spool_path)
    shutil.rmtree(work, ignore_errors=True)
