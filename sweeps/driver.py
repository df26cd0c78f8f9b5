"""The sweep driver: `run_sweep` (one Tune run, fresh or resumed) and `run_staged_sweep` (``--seeds``).

`run_sweep(spec)`:
1. MLflow: the sweep's experiment (named after the sweep), RUNNING runs of dead processes marked KILLED
   (RELIABILITY T7), and the parent run found or created by tag ``mlflow.simlab.key = sweep:<name>``.
2. Every similarity matrix any trial can need is loaded or computed once, here, before any trial starts
   (`sweeps.tune_setup.compute_matrices`), and handed to the trials through Ray's object store.
3. A fresh `Tuner` (`sweeps.tune_setup.new_tuner`: the searcher of `sweeps.search`, optional ASHA) or,
   with ``resume=True``, `Tuner.restore` of the stage's folder (the Optuna study continues).
4. A summary (`sweeps.summary`: best trial or Pareto front, a comparison table) logged to the parent run
   (`sweeps.sweep_runs`); the CLI prints `sweeps.summary.format_summary`.

The sweep folder's files are `sweeps.storage`'s; the two stages' choices and state `sweeps.stages`'.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeps.reuse import resolve_sources
from sweeps.spec import SpecError, SweepSpec
from sweeps.stages import (
    STAGE_TAG,
    choose_configurations,
    read_stages,
    restore_signal_handlers,
    seeds_stage_state,
    signal_handlers,
    write_stages,
)
from sweeps.stops import SigintGuard, clear_interrupted
from sweeps.storage import (
    DAMAGED_SUFFIX,
    SPEC_FILE,
    STAGES_FILE,
    all_stage_trial_ids,
    artifact_location,
    other_stage_trial_ids,
    read_storage_text,
    set_aside_damaged_state,
    spool_root,
    stage_dir,
    write_storage_text,
)
from sweeps.summary import SweepSummary, summarize
from sweeps.sweep_runs import (
    close_trial_runs,
    log_inputs_and_best_model,
    log_spec_artifact,
    log_summary,
    provenance,
    retire_lost_runs,
)
from sweeps.tracking import (
    MlflowTracker,
    configure_client_env,
    ensure_experiment,
    get_or_create_run,
    mark_stale_runs,
)
from sweeps.trial_context import TrialContext
from sweeps.tune_setup import (
    compute_matrices,
    make_trainable,
    new_tuner,
    restored_tuner,
    start_callbacks,
)
from sweeps.validation import seeds_stage_spec

logger = logging.getLogger(__name__)


def _start_ray() -> bool:
    """Start Ray unless it runs already; True when this call started it (the caller shuts it down).

    Join a cluster only when asked (RAY_ADDRESS; cluster.yaml sets RAY_ADDRESS=auto on the head): "auto"
    alone would join any Ray instance someone else started on this machine.
    """
    import ray  # Ray only once a sweep runs

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(address="local", include_dashboard=False)
    return True


def _stop_ray() -> None:
    import ray

    ray.shutdown()


def _submitted_spec(spec: SweepSpec, sweep_dir: str) -> SweepSpec:
    """The sweep as submitted (its saved ``sweep_spec.json``), else ``spec``: a restored Tuner (searcher,
    trials) is the sweep as submitted, so its trials must see that spec too."""
    saved_text = read_storage_text(sweep_dir, SPEC_FILE)
    if saved_text is None:
        return spec
    saved = SweepSpec.from_json(json.loads(saved_text))
    if saved != spec:
        logger.warning("--resume continues the sweep as it was submitted; changed settings are ignored")
    return saved


def run_sweep(
    spec: SweepSpec,
    *,
    resume: bool = False,
    resume_errored: bool = False,
    restart_errored: bool = False,
    reuse: Sequence[str] = (),
) -> SweepSummary:
    """Run (or, with ``resume``, continue) the sweep; Ray is started locally if not yet initialised.

    ``resume_errored`` / ``restart_errored`` (with ``resume``): errored trials are continued from their
    last checkpoint / rerun from scratch (`Tuner.restore`'s options of the same names).
    ``reuse``: where a trial may adopt a finished run of its configuration instead of training
    (`sweeps.reuse`: ``self``, sweep folders, ``<tracking uri>#<experiment>``).

    Ctrl-C (SIGINT) at any moment ends it promptly (`sweeps.stops.SigintGuard`): during `Tuner.fit`
    the summary comes back with ``interrupted`` set (trials stopped by the interrupt end KILLED and are
    resumable), before it `KeyboardInterrupt` is raised (the parent run ends KILLED with the reason).
    """
    with SigintGuard(spec.sweep_dir) as guard:
        return _run_sweep(
            spec,
            resume=resume,
            resume_errored=resume_errored,
            restart_errored=restart_errored,
            reuse=reuse,
            guard=guard,
        )


def _run_sweep(
    spec: SweepSpec,
    *,
    resume: bool,
    resume_errored: bool,
    restart_errored: bool,
    reuse: Sequence[str],
    guard: SigintGuard,
) -> SweepSummary:
    from ray import tune  # Ray only once a sweep runs

    t0 = time.perf_counter()
    configure_client_env()
    local = "://" not in spec.storage
    sweep_dir = stage_dir(spec)  # the Tune experiment of this stage (spec.sweep_dir for "search")
    exists = tune.Tuner.can_restore(sweep_dir) if (not local or os.path.isdir(sweep_dir)) else False
    if exists and not resume:
        raise SpecError("name", f"sweep {sweep_dir} exists; continue it with --resume or pick another --name")
    if resume and not exists:
        logger.warning("nothing to resume at %s: starting the sweep", sweep_dir)
        resume = False
    if resume:
        spec = _submitted_spec(spec, sweep_dir)
        damaged = set_aside_damaged_state(sweep_dir)
        if damaged:
            logger.warning(
                "Tune's newest saved state could not be read (a kill while Tune wrote it): set aside as "
                "*%s: %s; resuming from the state before (trials started since then run again)",
                DAMAGED_SUFFIX,
                ", ".join(damaged),
            )
    write_storage_text(sweep_dir, SPEC_FILE, json.dumps(spec.to_json(), indent=2, default=str))

    tracking_uri = spec.resolved_tracking_uri
    experiment_id = ensure_experiment(
        tracking_uri, spec.name, artifact_location=artifact_location(spec, spec.sweep_dir, tracking_uri)
    )
    sources = resolve_sources(reuse, spec, experiment_id)  # checked before Ray starts
    stale = mark_stale_runs(tracking_uri, experiment_id)
    if stale:
        logger.info("marked %d MLflow run(s) of dead processes KILLED", len(stale))
    parent_run_id = get_or_create_run(
        tracking_uri,
        experiment_id,
        key=f"sweep:{spec.name}" + ("" if spec.stage == "search" else f":{spec.stage}"),
        run_name=spec.name if spec.stage == "search" else f"{spec.name}:{spec.stage}",
        tags={
            "simlab.sweep": spec.name,
            "simlab.preset": spec.preset,
            "simlab.role": "sweep",
            STAGE_TAG: spec.stage,
            **provenance(),
        },
    )
    parent = MlflowTracker(tracking_uri, parent_run_id, spool_dir=os.path.join(spool_root(spec), "_sweep"))
    summary = SweepSummary(spec.name, sweep_dir, tracking_uri, experiment_id, parent_run_id)
    started_ray = False
    try:
        guard.check()
        parent.log_params(
            {
                "preset": spec.preset,
                "objective": ",".join(map(str, spec.objectives)),
                "num_samples": spec.num_samples,
                "scheduler": spec.scheduler,
                "mode": "in_process" if spec.in_process else "torch_trainer",
                "space": json.dumps({k: v.to_json() for k, v in spec.space.items()}, sort_keys=True),
            }
        )
        log_spec_artifact(parent, spec)
        with guard.deferred():  # never leave a half-started Ray behind
            started_ray = _start_ray()
        guard.check()
        callbacks = start_callbacks(spec)  # before any trial: refuse what no node can hold

        matrices, summary.matrix_stats = compute_matrices(spec)
        guard.check()
        ctx = TrialContext(
            spec=spec.to_json(),
            tracking_uri=tracking_uri,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            spool_root=spool_root(spec),
            reuse=[source.to_dict() for source in sources],
        ).to_dict()
        trainable = make_trainable(spec, ctx, matrices)
        clear_interrupted(sweep_dir)  # trials stopped from now on were not stopped by the old interrupt
        if resume:
            tuner = restored_tuner(
                sweep_dir, trainable, resume_errored=resume_errored, restart_errored=restart_errored
            )
            # Before any trial (re)opens its run; the live ids include the other stage's trials.
            retire_lost_runs(tracking_uri, experiment_id, all_stage_trial_ids(spec))
        else:
            tuner = new_tuner(spec, trainable, sweep_dir, callbacks)
        with guard.tune_fit():
            grid = tuner.fit()
        summary.interrupted = guard.interrupted
        summarize(spec, grid, summary)
        close_trial_runs(tracking_uri, experiment_id, summary)
        log_inputs_and_best_model(spec, grid, summary)
        if resume:  # the same check once more, against the trials the finished sweep holds
            live = {r["trial_id"] for r in summary.rows} | other_stage_trial_ids(spec)
            retire_lost_runs(tracking_uri, experiment_id, live)
        log_summary(parent, spec, summary)
        status = "KILLED" if summary.interrupted else ("FINISHED" if summary.num_finished else "FAILED")
        parent.close(status, reason="interrupted: continue with --resume" if summary.interrupted else None)
    except BaseException as err:
        try:
            if isinstance(err, KeyboardInterrupt):
                parent.close("KILLED", reason="interrupted (SIGINT): continue with --resume")
            else:
                parent.close("FAILED", reason=f"{type(err).__name__}: {err}")
        except Exception:
            logger.exception("could not close the sweep's MLflow run")
        raise
    finally:
        if started_ray:
            _stop_ray()
    summary.wall_s = time.perf_counter() - t0
    return summary


def run_staged_sweep(
    spec: SweepSpec,
    *,
    resume: bool = False,
    resume_errored: bool = False,
    restart_errored: bool = False,
    reuse: Sequence[str] = (),
) -> SweepSummary:
    """`run_sweep`, in two stages when ``spec.seeds > 0`` (`sweeps.stages`); returns the last stage's summary.

    An interrupted search stage returns its (interrupted) summary: ``--resume`` continues it, then runs
    the seeds stage. Ray is started once for both stages when not yet initialised. ``resume_errored`` /
    ``restart_errored`` go to the stage being resumed, ``reuse`` to both (`run_sweep`): with ``self``,
    the seeds stage adopts the search stage's run of each chosen configuration on its seed.
    """
    errored: dict[str, Any] = {"resume_errored": resume_errored, "restart_errored": restart_errored}
    top = spec.sweep_dir  # where stages.json is, as given (a saved spec may name another storage)
    if resume:  # the sweep as submitted (as run_sweep does): `--resume` without `--seeds` continues it
        spec = _submitted_spec(spec, spec.sweep_dir)
    if spec.seeds <= 0:
        return run_sweep(spec, resume=resume, reuse=reuse, **errored)
    state = read_stages(top) if resume else None
    started_ray = _start_ray()
    try:
        if state is None:
            handlers = signal_handlers()
            search = run_sweep(spec, resume=resume, reuse=reuse, **errored)
            restore_signal_handlers(handlers)  # Tune's SIGINT handler outlives its fit
            if search.interrupted:
                logger.warning("search stage interrupted: --resume continues it, then runs the seeds stage")
                return search
            chosen = choose_configurations(spec, search.rows)
            if not chosen:
                logger.error("search stage: no finished trial with a finite objective; no seeds stage")
                return search
            state = seeds_stage_state(spec, chosen)
            write_stages(top, state)
            logger.info(
                "search stage done: %s; seeds stage: %d trials",
                ", ".join(f"{c['method']} {c['group'] or ''} <- {c['trial_id']}" for c in chosen),
                len(state["points"]),
            )
            resume, errored = False, {}  # the seeds stage starts now
        else:
            where = Path(top) / STAGES_FILE
            logger.info("search stage already finished (%s): continuing the seeds stage", where)
        return run_sweep(seeds_stage_spec(spec, state["points"]), resume=resume, reuse=reuse, **errored)
    finally:
        if started_ray:
            _stop_ray()
