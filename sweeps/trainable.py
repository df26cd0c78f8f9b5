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

MLflow: the trial's run is found or created by the tag ``simlab.key = <trial id>``
(`sweeps.mlflow_tracking.get_or_create_run`), a child of the sweep's parent run, so a restored or
retried trial reattaches to it; it ends FINISHED, or FAILED with the reason (NaN loss, crash), or KILLED
on Ctrl-C.
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
    parts = {
        "dataset": cfg.dataset,
        "data_dir": cfg.data_dir,
        "cache_dir": cfg.cache_dir,
        "val_fraction": cfg.val_fraction,
        "subset_per_class": cfg.subset_per_class,
        "seed": cfg.seed,
        "similarity": cfg.similarity,
        "similarity_args": cfg.similarity_args,
    }
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


# The in-process trainable's actor-level dataset cache (Tune reuses the actor for the sweep's next trial):
# (load key, ImageData) of the last dataset this process loaded. One entry: a sweep over data choices
# must not hold every split in memory. `fit` does not modify the data it is given.
_DATA_CACHE: list[tuple[str, Any]] = []


def _trial_data(cfg: Any) -> Any:
    """The trial's `ImageData`, loaded once per actor process and data split (see `_DATA_CACHE`)."""
    from simlab.data import load_dataset

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
    data = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        cache_dir=cfg.resolved_cache_dir,
        val_fraction=cfg.val_fraction,
        subset_per_class=cfg.subset_per_class,
        seed=cfg.seed,
    )
    _DATA_CACHE.append((key, data))
    return data


def _open_run(ctx: Mapping[str, Any], trial_id: str, trial_name: str, config: Mapping[str, Any]) -> str:
    from sweeps.mlflow_tracking import get_or_create_run
    from sweeps.space import method_name
    from sweeps.spec import SweepSpec

    spec = SweepSpec.from_json(ctx["spec"])
    return get_or_create_run(
        ctx["tracking_uri"],
        ctx["experiment_id"],
        key=trial_id,
        run_name=trial_name,
        parent_run_id=ctx["parent_run_id"],
        tags={
            "simlab.sweep": spec.name,
            "simlab.trial_id": trial_id,
            "simlab.method": method_name(dict(config), spec),
            "simlab.role": "trial",
        },
    )


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


# ---------------------------------------------------------------------------------------------
def inprocess_trainable(config: dict[str, Any], *, ctx: dict[str, Any], matrices: dict[str, Any]) -> None:
    """Tune function trainable: `fit` in this actor, one `tune.report` (+ checkpoint) per epoch."""
    phases = _Phases()
    import torch
    from ray import tune

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
    tracker = _tracker(ctx, run_id, trial_id)
    phases.mark("tracker_create")
    fit_tracker = _TimedTracker(tracker, phases, "fit_mlflow_logging") if phases.folder else tracker
    carry = _Carry()

    def on_epoch_end(report: Any) -> None:
        t0 = time.perf_counter()
        metrics = carry(report.epoch, report.metrics)
        checkpoint = None
        if report.checkpoint_dir is not None:
            checkpoint = tune.Checkpoint.from_directory(str(report.checkpoint_dir))
        tune.report(metrics, checkpoint=checkpoint)
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
        # Tune stops a trial (e.g. ASHA) by raising SystemExit(0) in `tune.report`: a normal end.
        _safe_tags(tracker, {STOPPED_TAG: "stopped early by the trial scheduler"})
        _safe_close(tracker, "FINISHED")
        raise
    except KeyboardInterrupt as err:
        _safe_close(tracker, "KILLED", reason=f"{type(err).__name__}: {err}")
        raise
    except BaseException as err:
        _safe_close(tracker, "FAILED", reason=f"{type(err).__name__}: {err}")
        raise
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
        },
        scaling_config=ScalingConfig(
            num_workers=spec.workers_per_trial,
            use_gpu=spec.gpus_per_trial > 0,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            # Stable (storage_path, name): a retried trial resumes its Train run from its checkpoint.
            name=trial_id,
            storage_path=f"{spec.sweep_dir}/train",
            failure_config=FailureConfig(max_failures=spec.train_max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        trainer.fit()
    except KeyboardInterrupt as err:
        _safe_close(tracker, "KILLED", reason=f"{type(err).__name__}: {err}")
        raise
    except BaseException as err:
        _safe_close(tracker, "FAILED", reason=f"{type(err).__name__}: {_root_cause(err)}")
        raise
    _safe_close(tracker, "FINISHED")


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
    _restore_checkpoint(ray.train.get_checkpoint(), work)
    tracker = _tracker(ctx, loop_config["run_id"], trial_id, "rank0") if rank == 0 else NullTracker()
    carry = _Carry()

    def on_epoch_end(report: Any) -> None:
        metrics = carry(report.epoch, report.metrics)
        checkpoint = None
        if rank == 0 and report.checkpoint_dir is not None:
            checkpoint = ray.train.Checkpoint.from_directory(str(report.checkpoint_dir))
        ray.train.report(metrics, checkpoint=checkpoint)  # every rank: it is a barrier

    result = fit(
        cfg,
        source_matrix=loop_config["matrix"],
        tracker=tracker,
        on_epoch_end=on_epoch_end,
        checkpoint_dir=work / CHECKPOINT_SUBDIR,
        artifact_dir=work / "artifacts",
    )
    ray.train.report({**carry(cfg.epochs, result.metrics), FINAL_FLAG: 1.0})
    if rank == 0 and not tracker.flush(timeout=120):
        logger.warning("MLflow calls of trial %s still spooled in %s", trial_id, tracker.spool_path)
    shutil.rmtree(work, ignore_errors=True)
