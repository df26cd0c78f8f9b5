"""Ray Tune function trainables: a trial = one `simlab.train.fit` call, two ways.

- `inprocess_trainable`: the Tune actor calls `fit` itself and reports each epoch with
  `ray.tune.report` + a checkpoint. Start-up is one actor (~seconds): the mode for small local sweeps.
- `torch_trainer_trainable`: the Tune function builds a Ray Train V2 `TorchTrainer` (Ray 2.60 no longer
  accepts a trainer as a Tune trainable) whose `RunConfig` is named by the trial id under the sweep's
  storage path, so a retried trial finds its Train run and checkpoints again; workers run `fit` under
  DDP (`_train_worker_loop`), rank 0's metrics reach Tune through `TuneReportCallback`. Train-level
  `FailureConfig` retries dead workers from the last checkpoint; Tune's retries the whole trial.

Both get the sweep context (`sweeps.trial_context.TrialContext`, plain data) and the similarity matrices
computed once by the driver (`matrices`: key -> float64 ``[K, K]``) through `tune.with_parameters`, i.e.
from Ray's object store: a trial never computes a similarity matrix (a missing key is an error, not a
recompute). β is applied inside `fit` (paper A eq. 17 on the source distances).

MLflow (`sweeps.trial_runs`): the trial's run is found or created by its trial id, a child of the
sweep's parent run, so a restored or retried trial reattaches to it; it ends FINISHED, or FAILED with
the reason (NaN loss, crash), or KILLED on Ctrl-C (tag ``simlab.interrupted``; `sweeps.stops` tells an
interrupt from a scheduler stop, both of which reach the trial as ``SystemExit`` from `tune.report`).
Checkpoint folders and the Train-mode failure marker: `sweeps.trial_checkpoints`.

Every report carries the last evaluated metrics (`EVALUATED_EPOCH`); the last one has `FINAL_FLAG`.
An error a retry cannot fix (`simlab.errors.is_non_retryable`: bad configuration or data) is not raised
to Tune, which would retry it up to ``tune_max_failures`` times (forever with -1): the run ends FAILED
with the reason and the trial reports a last result with ``failed = 1.0`` (`FAILED_FLAG`, objectives
NaN, so Optuna records FAIL) and returns, so Tune ends it without a retry.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simlab.config import TrainConfig
from simlab.errors import is_non_retryable
from simlab.tracking import NullTracker
from sweeps.reuse import (
    REUSED_FLAG,
    adopt_run,
    find_reusable,
    trained_here,
    trial_environment,
    trial_params,
)
from sweeps.spec import SweepSpec
from sweeps.trial_checkpoints import (
    CHECKPOINT_SUBDIR,
    epoch_checkpoint_name,
    newest_persisted_checkpoint,
    pop_failure_marker,
    ray_checkpoint_dir,
    restore_checkpoint,
    train_run_uri,
    train_storage,
    write_failure_marker,
)
from sweeps.trial_context import data_key, lookup_matrix, trial_config, trial_spec
from sweeps.trial_phases import _Phases, _TimedTracker
from sweeps.trial_runs import (
    end_run_for,
    open_run,
    readable_tracker,
    safe_close,
    trial_tracker,
)

logger = logging.getLogger(__name__)

# fit evaluates every `eval_every` epochs; Tune needs the objective in every report, so the last
# evaluated metrics are carried forward and `evaluated_epoch` says which epoch they come from.
EVALUATED_EPOCH = "evaluated_epoch"
FINAL_FLAG = "final"  # 1.0 on the last report: fit's final metrics incl. ts_/ets_/dir_ recalibration
FAILED_FLAG = "failed"  # 1.0 on the last report of a trial ended by a non-retryable error
FAILED_REASON = "failed_reason"  # that error, "Type: message"


class _Carry:
    """Keeps the last evaluated metrics so every report holds the objective (see EVALUATED_EPOCH)."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> dict[str, float]:
        if any(k.startswith("val_") for k in metrics):
            self.last = {k: v for k, v in metrics.items() if k not in ("epoch", "train_loss", "lr")}
            self.last[EVALUATED_EPOCH] = float(epoch)
        return {**self.last, **metrics}


def _failure_report(spec: SweepSpec, carry: _Carry, reason: str) -> dict[str, Any]:
    """The last report of a trial ended by a non-retryable error: objectives NaN (Optuna: FAIL)."""
    report: dict[str, Any] = dict(carry.last)
    for obj in spec.objectives:
        report[obj.metric] = float("nan")
    return {**report, FAILED_FLAG: 1.0, FAILED_REASON: reason[:2000]}


def _reused_report(
    ctx: Mapping[str, Any], trial_id: str, config: Mapping[str, Any], spec: SweepSpec, cfg: TrainConfig
) -> dict[str, Any] | None:
    """With ``--reuse`` (`sweeps.reuse`): the final report of a trial that adopted a finished run of the
    same configuration, or None to train. A failed search trains (reuse only saves time), as does a trial
    an earlier attempt trained (`trained_here`); a failed copy raises, and Tune's retry copies again."""
    sources = ctx.get("reuse") or []
    if not sources:
        return None
    try:
        found = find_reusable(sources, trial_params(cfg, config, spec), trial_environment(cfg, spec))
    except Exception:  # noqa: BLE001
        logger.exception("trial %s: could not search the --reuse stores; training it", trial_id)
        return None
    if found is None:
        return None
    run_id = open_run(ctx, trial_id, config)
    if trained_here(ctx["tracking_uri"], run_id):
        logger.info("trial %s: an earlier attempt trained it; it goes on training (no reuse)", trial_id)
        return None
    tracker = trial_tracker(ctx, run_id, trial_id)
    try:
        final = adopt_run(tracker, found)
    except BaseException as err:
        end_run_for(
            err, tracker, sweep_dir=spec.sweep_dir, trial_id=trial_id, reason=f"{type(err).__name__}: {err}"
        )
        raise
    safe_close(tracker, "FINISHED")
    logger.info(
        "trial %s: reused finished run %s of %s (not trained again)", trial_id, found.run_id, found.given
    )
    return {**final, EVALUATED_EPOCH: float(cfg.epochs), FINAL_FLAG: 1.0, REUSED_FLAG: 1.0}


# The in-process trainable's actor-level dataset cache (Tune reuses the actor for the sweep's next trial):
# (load key, ImageData) of the last dataset this process loaded. One entry: a sweep over data choices
# must not hold every split in memory. `fit` does not modify the data it is given.
_DATA_CACHE: list[tuple[str, Any]] = []


def _trial_data(cfg: TrainConfig) -> Any:
    """The trial's `ImageData`, loaded once per actor process and data split (see `_DATA_CACHE`)."""
    from simlab.data import load_split  # imports torch

    key = data_key(cfg)
    if _DATA_CACHE and _DATA_CACHE[0][0] == key:
        return _DATA_CACHE[0][1]
    _DATA_CACHE.clear()  # release the old split before loading the new one
    data = load_split(cfg)
    _DATA_CACHE.append((key, data))
    return data


# ---------------------------------------------------------------------------------------------
def inprocess_trainable(config: dict[str, Any], *, ctx: dict[str, Any], matrices: dict[str, Any]) -> None:
    """Tune function trainable: `fit` in this actor, one `tune.report` (+ checkpoint) per epoch."""
    phases = _Phases()
    # Heavy: imported in the trial's actor, not by the driver that imports this module.
    import torch
    from ray import tune

    from simlab.train import fit

    trial_id = tune.get_context().get_trial_id()
    phases.mark("imports")
    spec, cfg = trial_config(config, ctx)
    torch.set_num_threads(max(1, int(spec.cpus_per_trial)))
    matrix = lookup_matrix(cfg, matrices)
    phases.mark("spec_parse")
    reused = _reused_report(ctx, trial_id, config, spec, cfg)
    if reused is not None:
        tune.report(reused)
        return
    work = Path(tempfile.mkdtemp(prefix=f"simlab-{trial_id}-"))
    restore_checkpoint(tune.get_checkpoint(), work)
    phases.mark("checkpoint_restore")
    run_id = open_run(ctx, trial_id, config)
    phases.mark("mlflow_run_lookup")
    tracker = readable_tracker(trial_tracker(ctx, run_id, trial_id), config, ctx)
    phases.mark("tracker_create")
    fit_tracker = _TimedTracker(tracker, phases, "fit_mlflow_logging") if phases.folder else tracker
    carry = _Carry()

    def on_epoch_end(report: Any) -> None:
        t0 = time.perf_counter()
        metrics = carry(report.epoch, report.metrics)
        if report.checkpoint_dir is None:
            tune.report(metrics)
        else:
            folder = ray_checkpoint_dir(report.checkpoint_dir, work)  # checkpoint.pt only, not .prev
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
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}"
        end_run_for(err, tracker, sweep_dir=spec.sweep_dir, trial_id=trial_id, reason=reason)
        if not (isinstance(err, Exception) and is_non_retryable(err)):
            raise
        logger.error("trial %s failed: %s (not retried: a retry cannot fix it)", trial_id, reason)
        tune.report(_failure_report(spec, carry, reason))
        return
    finally:
        shutil.rmtree(work, ignore_errors=True)  # Tune holds the checkpoints
    phases.mark("fit")
    # Closed before the last report: a scheduler may stop the trial as soon as it has that report.
    safe_close(tracker, "FINISHED")
    phases.mark("mlflow_close")
    tune.report({**carry(cfg.epochs, result.metrics), FINAL_FLAG: 1.0})
    phases.mark("final_report")
    phases.write(trial_id)


# ---------------------------------------------------------------------------------------------
def torch_trainer_trainable(config: dict[str, Any], *, ctx: dict[str, Any], matrices: dict[str, Any]) -> None:
    """Tune function trainable that runs one Ray Train V2 `TorchTrainer` named by the trial id."""
    # Heavy: imported in the trial's actor, not by the driver that imports this module.
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    spec, cfg = trial_config(config, ctx)  # validates before any worker starts
    matrix = lookup_matrix(cfg, matrices)
    reused = _reused_report(ctx, trial_id, config, spec, cfg)
    if reused is not None:
        tune.report(reused)
        return
    run_id = open_run(ctx, trial_id, config)
    tracker = trial_tracker(ctx, run_id, trial_id, "driver")  # closes the run; rank 0 writes to it
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
            "run_uri": train_run_uri(spec.sweep_dir, trial_id),
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
            storage_path=train_storage(spec.sweep_dir),
            failure_config=FailureConfig(max_failures=spec.train_max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    run_uri = train_run_uri(spec.sweep_dir, trial_id)
    pop_failure_marker(run_uri)  # a marker of an earlier attempt of this trial is not this one's
    try:
        trainer.fit()
    except BaseException as err:
        reason = f"{type(err).__name__}: {_root_cause(err)}"
        end_run_for(err, tracker, sweep_dir=spec.sweep_dir, trial_id=trial_id, reason=reason)
        if not _train_error_non_retryable(err):
            raise
        logger.error("trial %s failed: %s (not retried: a retry cannot fix it)", trial_id, reason)
        tune.report(_failure_report(spec, _Carry(), reason))
        return
    reason = pop_failure_marker(run_uri)
    if reason is not None:  # the workers ended on a non-retryable error
        safe_close(tracker, "FAILED", reason=reason)
        logger.error("trial %s failed: %s (not retried: a retry cannot fix it)", trial_id, reason)
        return  # TuneReportCallback has passed the failure report (NaN objectives, the reason) to Tune
    safe_close(tracker, "FINISHED")


def _train_error_non_retryable(err: BaseException) -> bool:
    """A TorchTrainer failure whose cause (in any worker) is an error a retry cannot fix."""
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
    # Heavy: imported in the worker, not by the driver that imports this module.
    import ray.train
    import torch

    from simlab.train import fit

    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(loop_config["cpus"])))
    cfg = TrainConfig.from_dict(loop_config["cfg"])
    ctx, trial_id = loop_config["ctx"], loop_config["trial_id"]
    work = Path(tempfile.mkdtemp(prefix=f"simlab-{trial_id}-r{rank}-"))
    # The newest checkpoint persisted in the run folder, registered by Ray's controller or not (see
    # newest_persisted_checkpoint); Ray's registered one only if the folder cannot be listed.
    if newest_persisted_checkpoint(loop_config["run_uri"], work) is None:
        restore_checkpoint(ray.train.get_checkpoint(), work)
    tracker: Any = NullTracker()
    if rank == 0:
        tracker = readable_tracker(
            trial_tracker(ctx, loop_config["run_id"], trial_id, "rank0"), loop_config["config"], ctx
        )
    carry = _Carry()

    def on_epoch_end(report: Any) -> None:
        metrics = carry(report.epoch, report.metrics)
        folder = None
        if rank == 0 and report.checkpoint_dir is not None:
            folder = ray_checkpoint_dir(report.checkpoint_dir, work)  # checkpoint.pt only, not .prev
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
        if not is_non_retryable(err):
            raise  # Train's FailurePolicy retries it from the last checkpoint
        # Train would retry even an error no retry can fix (train_max_failures=-1: forever): end the run
        # with a failure report instead; torch_trainer_trainable fails the trial with the reason.
        reason = f"{type(err).__name__}: {err}"
        logger.error("trial %s, rank %d: %s (not retried: a retry cannot fix it)", trial_id, rank, reason)
        if rank == 0:
            write_failure_marker(loop_config["run_uri"], reason)
        ray.train.report(_failure_report(trial_spec(ctx), carry, reason))
        if rank == 0:
            tracker.flush(timeout=120)
        shutil.rmtree(work, ignore_errors=True)
        return
    ray.train.report({**carry(cfg.epochs, result.metrics), FINAL_FLAG: 1.0})
    if rank == 0 and not tracker.flush(timeout=120):
        logger.warning("MLflow calls of trial %s still spooled in %s", trial_id, tracker.spool_path)
    shutil.rmtree(work, ignore_errors=True)
