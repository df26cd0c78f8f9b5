"""The sweep driver: MLflow parent run, similarity matrices once, the Tuner (fresh or restored), summary.

`run_sweep(spec)`:
1. MLflow: the sweep's experiment (named after the sweep), RUNNING runs of dead processes marked KILLED
   (RELIABILITY T7), and the parent run found or created by tag ``simlab.key = sweep:<name>``.
2. Every similarity matrix any trial can need is loaded or computed through `SimilarityStore` (once,
   here, before any trial starts) and handed to the trials through `tune.with_parameters`, which puts it
   in Ray's object store (`ray.put`).
3. A `Tuner` with an Optuna define-by-run search (`SafeOptunaSearch`: a NaN or failed trial is told
   FAIL, never left RUNNING), optional ASHA, Tune-level `FailureConfig`, checkpoints kept per trial;
   or, with ``resume=True``, `Tuner.restore` of ``<storage>/<name>`` with the same object refs supplied
   again (the Optuna study is part of Tune's searcher state, so it continues where it stopped).
4. A summary (best trial or Pareto front, a comparison table) printed and logged to the parent run.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.space import corner_configs, make_space, method_name, train_config_dict
from sweeps.spec import SpecError, SweepSpec
from sweeps.stops import (
    INTERRUPTED_TAG,
    SigintGuard,
    clear_interrupted,
    recording_asha,
    scheduler_stops,
)
from sweeps.trainable import (
    FAILED_FLAG,
    FAILED_REASON,
    FINAL_FLAG,
    TrialContext,
    inprocess_trainable,
    matrix_key,
    torch_trainer_trainable,
)

logger = logging.getLogger(__name__)

# Fields the data split (and so a pixel-distance matrix) depends on: fixed or choices, never ranges.
DATA_FIELDS: tuple[str, ...] = (
    "dataset",
    "data_dir",
    "cache_dir",
    "val_fraction",
    "subset_per_class",
    "seed",
)
TABLE_METRICS: tuple[str, ...] = (
    "accuracy",
    "ece_hist_prediction",
    "ece_hist_output",
    "ece_kde_prediction",
    "ece_kde_output",
    "nll",
    "ts_ece_hist_prediction",
)
SPEC_FILE = "sweep_spec.json"


# ---------------------------------------------------------------------------------------------
def _optuna_search_class():
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class SafeOptunaSearch(OptunaSearch):
        """`OptunaSearch` that never leaves an Optuna trial RUNNING.

        Ray's version tells Optuna a NaN objective as COMPLETE, which Optuna refuses (logged, trial
        stays RUNNING), and tells an errored trial's last result as COMPLETE. Here an errored trial or
        a non-finite objective is FAIL, a trial with no result PRUNED, and if Optuna still refuses,
        FAIL is told as a last resort. Non-finite intermediate values are not reported to Optuna.
        """

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if isinstance(self.metric, list):
                return
            value = result.get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value) and trial_id in self._ot_trials:
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [result.get(m) for m in metrics] if result else None
            finite = values is not None and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in values
            )
            if error or (values is not None and not finite and any(v is not None for v in values)):
                state, told = TrialState.FAIL, None
            elif not finite:
                state, told = TrialState.PRUNED, None
            else:
                state, told = TrialState.COMPLETE, values if len(values) > 1 else values[0]
            try:
                self._ot_study.tell(ot_trial, told, state=state)
            except Exception as err:  # never leave it RUNNING
                logger.warning("optuna refused %s for trial %s (%s); telling FAIL", state.name, trial_id, err)
                self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)

    return SafeOptunaSearch


def make_searcher(spec: SweepSpec) -> Any:
    """The Optuna define-by-run searcher (TPE; multi-objective when the spec has several)."""
    import optuna

    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    import warnings

    with warnings.catch_warnings():  # multivariate/group TPE: "experimental" in Optuna, the right fit for
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # conditional spaces
        sampler = optuna.samplers.TPESampler(seed=spec.sampler_seed, multivariate=True, group=True)
    return _optuna_search_class()(
        space=make_space(spec),
        metric=metrics if spec.multi_objective else metrics[0],
        mode=modes if spec.multi_objective else modes[0],
        sampler=sampler,
        study_name=spec.name,
        points_to_evaluate=[dict(w) for w in spec.warm_start] or None,
    )


def make_scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    if spec.scheduler == "none":
        return FIFOScheduler()
    obj = spec.objectives[0]
    epochs = _values(spec, "epochs") or (10,)
    # One report per epoch plus the final one with the recalibrated metrics: max_t must let it through.
    return recording_asha(  # ASHA that records its STOP decisions: see sweeps.stops
        sweep_dir=spec.sweep_dir,
        metric=obj.metric,
        mode=obj.mode,
        time_attr="training_iteration",
        max_t=int(max(epochs)) + 1,
        grace_period=spec.grace_period,
    )


# ---------------------------------------------------------------------------------------------
def needed_matrix_configs(spec: SweepSpec) -> list[Any]:
    """One TrainConfig per distinct similarity matrix the sweep's trials can ask for."""
    from simlab.config import TrainConfig

    for name in DATA_FIELDS:
        if name in spec.space and spec.space[name].kind != "choice":
            raise SpecError(
                name, "must be fixed or a choice: similarity matrices are computed per data split"
            )
    bases: dict[str, dict[str, Any]] = {}
    for params in corner_configs(spec):  # the first corner of each label is its base point
        bases.setdefault(params.get("label", spec.labels[0]), params)
    out, seen = [], set()
    for label, base in bases.items():
        source_key = {"similarity": "similarity", "confidence": "confidence_source"}.get(label)
        if source_key is None:
            continue
        axes = [(n, spec.space[n].values) for n in DATA_FIELDS if n in spec.space]
        axes.append((source_key, _values(spec, source_key)))
        for combo in itertools.product(*(values for _, values in axes)):
            params = {**base, **dict(zip([n for n, _ in axes], combo, strict=True))}
            if "label" in spec.space:
                params["label"] = label
            cfg = TrainConfig.from_dict(train_config_dict(spec, params))
            key = matrix_key(cfg)
            if key is not None and key not in seen:
                seen.add(key)
                out.append(cfg)
    return out


def compute_matrices(spec: SweepSpec) -> tuple[dict[str, Any], dict[str, int]]:
    """Load or compute (through `SimilarityStore`) every matrix the sweep needs, before any trial.

    Returns ``(matrices, stats)``: key (`sweeps.trainable.matrix_key`) -> float64 ``[K, K]``, and how
    many were computed vs loaded from the store.
    """
    from simlab.data import load_dataset
    from simlab.store import SimilarityStore

    matrices: dict[str, Any] = {}
    stats = {"computed": 0, "loaded": 0}
    datasets: dict[str, Any] = {}
    for cfg in needed_matrix_configs(spec):
        data_key = json.dumps([getattr(cfg, n) for n in DATA_FIELDS], default=str)
        if data_key not in datasets:
            datasets[data_key] = load_dataset(
                cfg.dataset,
                data_dir=cfg.data_dir,
                cache_dir=cfg.resolved_cache_dir,
                val_fraction=cfg.val_fraction,
                subset_per_class=cfg.subset_per_class,
                seed=cfg.seed,
            )
        store = SimilarityStore(Path(cfg.resolved_cache_dir) / "similarity")
        t0 = time.perf_counter()
        matrix, meta = store.get(datasets[data_key], cfg.similarity, cfg.similarity_args)
        stats["computed" if meta.get("computed") else "loaded"] += 1
        logger.info(
            "similarity %s %s: %s in %.1f s",
            cfg.similarity,
            cfg.similarity_args or "",
            "computed" if meta.get("computed") else "loaded",
            time.perf_counter() - t0,
        )
        matrices[matrix_key(cfg)] = matrix
    return matrices, stats


# ---------------------------------------------------------------------------------------------
@dataclass
class SweepSummary:
    name: str
    sweep_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per trial
    best: list[dict[str, Any]] = field(default_factory=list)  # best trial, or the Pareto front
    num_finished: int = 0
    num_errored: int = 0
    num_interrupted: int = 0  # trials stopped by Ctrl-C (resumable), told apart from scheduler stops
    interrupted: bool = False
    matrix_stats: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0


def _values(spec: SweepSpec, key: str) -> tuple[Any, ...]:
    if key in spec.space:
        return spec.space[key].values
    if key in spec.fixed:
        return (spec.fixed[key],)
    return ()


def _spool_root(spec: SweepSpec) -> str:
    if "://" in spec.storage:  # remote storage: spool on each node's local disk
        return os.path.join(os.path.expanduser("~"), ".cache", "simlab", "spool", spec.name)
    return os.path.join(spec.sweep_dir, "spool")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_sweep(spec: SweepSpec, *, resume: bool = False) -> SweepSummary:
    """Run (or, with ``resume``, continue) the sweep; Ray is started locally if not yet initialised.

    Ctrl-C (SIGINT) at any moment ends it promptly (`sweeps.stops.SigintGuard`): during `Tuner.fit`
    the summary comes back with ``interrupted`` set (trials stopped by the interrupt end KILLED and are
    resumable), before it `KeyboardInterrupt` is raised (the parent run ends KILLED with the reason).
    """
    with SigintGuard(spec.sweep_dir) as guard:
        return _run_sweep(spec, resume=resume, guard=guard)


def _run_sweep(spec: SweepSpec, *, resume: bool, guard: SigintGuard) -> SweepSummary:
    import ray
    from ray import tune

    from sweeps.mlflow_tracking import (
        MlflowTracker,
        configure_client_env,
        ensure_experiment,
        get_or_create_run,
        mark_stale_runs,
    )

    t0 = time.perf_counter()
    configure_client_env()
    local = "://" not in spec.storage
    sweep_dir = spec.sweep_dir
    exists = tune.Tuner.can_restore(sweep_dir) if (not local or os.path.isdir(sweep_dir)) else False
    if exists and not resume:
        raise SpecError("name", f"sweep {sweep_dir} exists; continue it with --resume or pick another --name")
    if resume and not exists:
        logger.warning("nothing to resume at %s: starting the sweep", sweep_dir)
        resume = False
    if resume and local and (Path(sweep_dir) / SPEC_FILE).exists():
        # The restored Tuner (searcher, trials) is the sweep as submitted: trials must see that spec too.
        saved = SweepSpec.from_json(json.loads((Path(sweep_dir) / SPEC_FILE).read_text()))
        if saved != spec:
            logger.warning("--resume continues the sweep as it was submitted; changed settings are ignored")
        spec = saved
    if local:
        os.makedirs(sweep_dir, exist_ok=True)
        _write_atomic(Path(sweep_dir) / SPEC_FILE, json.dumps(spec.to_json(), indent=2, default=str))

    tracking_uri = spec.resolved_tracking_uri
    experiment_id = ensure_experiment(
        tracking_uri, spec.name, artifact_location=os.path.join(sweep_dir, "mlartifacts") if local else None
    )
    stale = mark_stale_runs(tracking_uri, experiment_id)
    if stale:
        logger.info("marked %d MLflow run(s) of dead processes KILLED", len(stale))
    parent_run_id = get_or_create_run(
        tracking_uri,
        experiment_id,
        key=f"sweep:{spec.name}",
        run_name=spec.name,
        tags={"simlab.sweep": spec.name, "simlab.preset": spec.preset, "simlab.role": "sweep"},
    )
    parent = MlflowTracker(tracking_uri, parent_run_id, spool_dir=os.path.join(_spool_root(spec), "_sweep"))
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
        if not ray.is_initialized():
            # Join a cluster only when asked (RAY_ADDRESS; cluster.yaml sets RAY_ADDRESS=auto on the head):
            # "auto" alone would join any Ray instance someone else started on this machine.
            with guard.deferred():  # never leave a half-started Ray behind
                if os.environ.get("RAY_ADDRESS"):
                    ray.init()
                else:
                    ray.init(address="local", include_dashboard=False)
                started_ray = True
        guard.check()
        start_callbacks = _start_callbacks(spec)  # before any trial: refuse what no node can hold

        matrices, summary.matrix_stats = compute_matrices(spec)
        guard.check()
        ctx = TrialContext(
            spec=spec.to_json(),
            tracking_uri=tracking_uri,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            spool_root=_spool_root(spec),
        ).to_dict()
        trainable = _make_trainable(spec, ctx, matrices)
        clear_interrupted(sweep_dir)  # trials stopped from now on were not stopped by the old interrupt
        if resume:
            logger.info("restoring sweep %s", sweep_dir)
            tuner = tune.Tuner.restore(sweep_dir, trainable=trainable, resume_unfinished=True)
            if local:  # before any trial (re)opens its run
                from sweeps.cleanup import tune_trial_ids

                _retire_lost_runs(tracking_uri, experiment_id, tune_trial_ids(sweep_dir))
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=make_searcher(spec),
                    scheduler=make_scheduler(spec),
                    num_samples=spec.num_samples,
                    max_concurrent_trials=spec.max_concurrent or None,
                    # In-process trials reuse their actor: a new one re-imports torch and MLflow, which
                    # is most of a short trial's start-up on a small machine.
                    reuse_actors=spec.in_process,
                ),
                run_config=tune.RunConfig(
                    name=spec.name,
                    storage_path=spec.storage_dir,
                    failure_config=tune.FailureConfig(max_failures=spec.tune_max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    callbacks=start_callbacks,
                    verbose=1,
                ),
            )
        with guard.tune_fit():
            grid = tuner.fit()
        summary.interrupted = guard.interrupted
        summarize(spec, grid, summary)
        _close_trial_runs(tracking_uri, experiment_id, summary)
        if resume:  # the same check once more, against the trials the finished sweep holds
            _retire_lost_runs(tracking_uri, experiment_id, {r["trial_id"] for r in summary.rows})
        _log_summary(parent, spec, summary)
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
            ray.shutdown()
    summary.wall_s = time.perf_counter() - t0
    return summary


def _start_callbacks(spec: SweepSpec) -> list[Any] | None:
    """`sweeps.feasibility`: SpecError if no node can ever hold a trial (fixed cluster), else a bounded
    wait for the first trial on a cluster that has to grow first."""
    from sweeps.feasibility import StartTimeout, check_resources, trial_bundles

    timeout = check_resources(spec)
    if timeout is None:
        return None
    return [StartTimeout(timeout, what=f"a trial asks {trial_bundles(spec)}")._callback()]


def _close_trial_runs(tracking_uri: str, experiment_id: str, summary: SweepSummary) -> None:
    """End the trial runs still RUNNING after `Tuner.fit` returned, by what Tune says of their trial.

    A trial actor can be torn down before its trainable closed its run (a scheduler stop, an error in
    Ray itself, Ctrl-C): finished or early-stopped -> FINISHED, errored -> FAILED with the reason,
    unfinished (interrupted; `--resume` reopens it) -> KILLED.
    """
    from mlflow.tracking import MlflowClient

    from sweeps.mlflow_tracking import FAILURE_TAG, KEY_TAG
    from sweeps.trainable import STOPPED_TAG

    client = MlflowClient(tracking_uri)
    by_key = {r["trial_id"]: r for r in summary.rows}
    running = client.search_runs(
        [experiment_id],
        filter_string="tags.`simlab.role` = 'trial' and attributes.status = 'RUNNING'",
        max_results=50000,
    )
    for run in running:
        row = by_key.get(run.data.tags.get(KEY_TAG, ""))
        if row is None:
            continue
        status = {"finished": "FINISHED", "stopped": "FINISHED", "error": "FAILED"}.get(
            row["status"], "KILLED"
        )
        if row["status"] == "stopped":
            client.set_tag(run.info.run_id, STOPPED_TAG, "stopped early by the trial scheduler")
        if row["status"] in ("interrupted", "unfinished"):
            client.set_tag(run.info.run_id, INTERRUPTED_TAG, f"{row['status']}: continue with --resume")
        if row["status"] == "error" and row["error"]:
            client.set_tag(run.info.run_id, FAILURE_TAG, row["error"][:5000])
        client.set_terminated(run.info.run_id, status)
        logger.info("closed MLflow run %s of trial %s as %s", run.info.run_id, row["trial_id"], status)


def _retire_lost_runs(tracking_uri: str, experiment_id: str, live_keys: set[str]) -> None:
    """Move to MLflow's trash the trial runs whose trial is not in the (restored) sweep.

    Tune snapshots its experiment periodically: a trial started after the last snapshot and killed with
    the driver is not in the restored experiment (Tune runs a new trial in its place), and its
    half-written run would be a second run of the sweep. `delete_orphan_runs` tags it
    ``simlab.orphaned``, closes it KILLED and deletes it recoverably (RELIABILITY T4).
    """
    from sweeps.mlflow_tracking import delete_orphan_runs

    orphans = delete_orphan_runs(tracking_uri, experiment_id, live_keys=live_keys)
    if orphans:
        logger.warning(
            "deleted %d MLflow run(s) of trials lost by the kill (not in Tune's saved state)", len(orphans)
        )


def _make_trainable(spec: SweepSpec, ctx: dict[str, Any], matrices: dict[str, Any]) -> Any:
    from ray import tune

    fn = inprocess_trainable if spec.in_process else torch_trainer_trainable
    trainable = tune.with_parameters(fn, ctx=ctx, matrices=matrices)
    if spec.in_process:
        resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    else:
        # The trial function only drives a TorchTrainer; its workers request CPUs/GPUs themselves. Tune
        # refuses an empty request, so the driver takes a token share of a CPU.
        resources = {"cpu": 0.01}
    return tune.with_resources(trainable, resources)


# ---------------------------------------------------------------------------------------------
def summarize(spec: SweepSpec, grid: Any, summary: SweepSummary) -> SweepSummary:
    """Fill `summary` from a Tune `ResultGrid`."""
    rows = []
    stopped_by_scheduler = scheduler_stops(spec.sweep_dir)  # ASHA's recorded STOP decisions
    try:  # Tune's own trial states (TERMINATED / ERROR / PENDING / RUNNING / PAUSED)
        states = {t.trial_id: t.status for t in grid._experiment_analysis.trials}
    except AttributeError:  # pragma: no cover - a Ray without it: infer from the results alone
        states = {}
    for result in grid:
        metrics = dict(result.metrics or {})
        config = dict(result.config or {})
        error = result.error
        trial_id = metrics.get("trial_id") or Path(result.path).name
        state = states.get(trial_id, "TERMINATED" if metrics.get("done") else "UNKNOWN")
        if error is not None or metrics.get(FAILED_FLAG):
            status = "error"  # raised, or a non-retryable error the trainable reported as its end
            if error is None:
                error = metrics.get(FAILED_REASON) or "non-retryable error"
        elif metrics.get(FINAL_FLAG):
            status = "finished"
        elif state == "TERMINATED" and trial_id in stopped_by_scheduler:
            status = "stopped"  # stopped early by the scheduler (ASHA's recorded decision)
        elif summary.interrupted:
            status = "interrupted"  # Ctrl-C: Tune's saved state has it RUNNING, --resume continues it
        else:
            status = "unfinished"
        row = {
            "trial_id": trial_id,
            "status": status,
            "method": method_name(config, spec),
            "params": {k: v for k, v in config.items() if k in spec.space},
            "epochs_done": metrics.get("epoch"),
            "time_total_s": metrics.get("time_total_s"),  # inside the trainable, as Tune measured it
            "error": None
            if error is None
            else error
            if isinstance(error, str)
            else f"{type(error).__name__}: {str(error).splitlines()[-1][:300]}",
        }
        for obj in spec.objectives:
            row[obj.metric] = metrics.get(obj.metric)
        for name in TABLE_METRICS:
            row[name] = metrics.get(name)
        rows.append(row)
    summary.rows = rows
    summary.num_finished = sum(r["status"] == "finished" for r in rows)
    summary.num_errored = sum(r["status"] == "error" for r in rows)
    summary.num_interrupted = sum(r["status"] == "interrupted" for r in rows)
    summary.interrupted = (
        summary.interrupted
        or any(r["status"] in ("unfinished", "interrupted") for r in rows)
        or len(rows) < spec.num_samples
    )
    done = [r for r in rows if r["status"] == "finished" and _finite_objectives(spec, r)]
    if spec.multi_objective:
        summary.best = pareto_front(done, spec)
    elif done:
        obj = spec.objectives[0]
        pick = max if obj.mode == "max" else min
        summary.best = [pick(done, key=lambda r: r[obj.metric])]
    return summary


def _finite_objectives(spec: SweepSpec, row: Mapping[str, Any]) -> bool:
    return all(
        isinstance(row.get(o.metric), (int, float)) and math.isfinite(row[o.metric]) for o in spec.objectives
    )


def pareto_front(rows: Sequence[Mapping[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """Rows not dominated by another (at least as good in every objective, better in one)."""

    def signed(row: Mapping[str, Any]) -> tuple[float, ...]:  # larger is better
        return tuple(row[o.metric] if o.mode == "max" else -row[o.metric] for o in spec.objectives)

    front = []
    for row in rows:
        a = signed(row)
        dominated = any(
            all(x >= y for x, y in zip(signed(other), a, strict=True)) and signed(other) != a
            for other in rows
            if other is not row
        )
        if not dominated:
            front.append(dict(row))
    return front


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def summary_table(spec: SweepSpec, rows: Sequence[Mapping[str, Any]], *, markdown: bool = True) -> str:
    """A comparison table of trials (sorted by the first objective), Markdown or CSV."""
    obj = spec.objectives[0]
    cols = ["trial_id", "status", "method", "params", *[o.metric for o in spec.objectives]]
    # Metrics no trial reported (e.g. ts_* without post-hoc recalibration) are left out.
    cols += [m for m in TABLE_METRICS if m not in cols and any(r.get(m) is not None for r in rows)]

    def sort_key(r: Mapping[str, Any]) -> tuple[int, float]:
        v = r.get(obj.metric)
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        return (0 if ok else 1, (-v if obj.mode == "max" else v) if ok else 0.0)

    ordered = sorted(rows, key=sort_key)
    cell = {
        "params": lambda r: ", ".join(
            f"{k}={_fmt(v)}" for k, v in sorted(r["params"].items()) if k != "label"
        )
    }
    if not markdown:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(cols)
        for r in ordered:
            writer.writerow([json.dumps(r[c]) if c == "params" else r.get(c) for c in cols])
        return buf.getvalue()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in ordered:
        lines.append("| " + " | ".join(cell.get(c, lambda r, c=c: _fmt(r.get(c)))(r) for c in cols) + " |")
    return "\n".join(lines)


def _log_summary(parent: Any, spec: SweepSpec, summary: SweepSummary) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp) / "summary.md"
        md.write_text(summary_table(spec, summary.rows) + "\n")
        (Path(tmp) / "summary.csv").write_text(summary_table(spec, summary.rows, markdown=False))
        (Path(tmp) / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=2, default=str))
        for name in ("summary.md", "summary.csv", SPEC_FILE):
            parent.log_artifact(Path(tmp) / name)
        parent.flush(timeout=30)
    if summary.best:
        best = summary.best[0]
        parent.set_tags({"simlab.best_trial": best["trial_id"], "simlab.best_method": best["method"]})
        parent.log_metrics(
            {f"best_{o.metric}": best[o.metric] for o in spec.objectives}
            | {"num_finished": summary.num_finished, "num_errored": summary.num_errored}
        )
    if "://" not in spec.storage:
        _write_atomic(Path(spec.sweep_dir) / "summary.md", summary_table(spec, summary.rows) + "\n")


def resume_hint(spec: SweepSpec) -> str:
    """The line that tells the user how to continue an interrupted sweep."""
    return (
        f"interrupted: continue with  python sweeps/calibration.py --preset {spec.preset} "
        f"--name {spec.name} --storage {spec.storage} --resume"
    )


def format_summary(spec: SweepSpec, summary: SweepSummary) -> str:
    """What the CLI prints at the end: best trial / Pareto front, the table, the MLflow UI command."""
    out = [
        f"sweep {spec.name}: {summary.num_finished} finished, {summary.num_errored} errored, "
        + (f"{summary.num_interrupted} interrupted, " if summary.num_interrupted else "")
        + f"{len(summary.rows)} trials in {summary.wall_s:.0f} s "
        f"(similarity matrices: {summary.matrix_stats.get('computed', 0)} computed, "
        f"{summary.matrix_stats.get('loaded', 0)} loaded)"
    ]
    if summary.interrupted:
        out.append(resume_hint(spec))
    objectives = ", ".join(map(str, spec.objectives))
    if spec.multi_objective:
        out.append(f"\nPareto front ({objectives}): {len(summary.best)} trial(s)")
        out.append(summary_table(spec, summary.best))
    elif summary.best:
        b = summary.best[0]
        out.append(
            f"\nbest trial ({objectives}): {b['trial_id']}  {b['method']}  "
            + "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(b["params"].items()) if k != "label")
        )
        shown = [o.metric for o in spec.objectives] + [m for m in TABLE_METRICS if b.get(m) is not None]
        out.append("  " + "  ".join(f"{m}={_fmt(b.get(m))}" for m in shown))
    out.append("\nall trials (validation selects; test metrics reported):")
    out.append(summary_table(spec, summary.rows))
    if summary.tracking_uri.startswith("sqlite:"):
        out.append(f"\nMLflow UI:  mlflow ui --backend-store-uri {summary.tracking_uri}")
    else:
        out.append(f"\nMLflow: {summary.tracking_uri} (experiment {spec.name!r})")
    out.append(
        f"paper-style table:  python scripts/report.py --tracking-uri {summary.tracking_uri} "
        f"--experiment {spec.name}"
    )
    return "\n".join(out)
