"""The sweep driver: MLflow parent run, similarity matrices once, the Tuner (fresh or restored), summary.

`run_sweep(spec)`:
1. MLflow: the sweep's experiment (named after the sweep), RUNNING runs of dead processes marked KILLED
   (RELIABILITY T7), and the parent run found or created by tag ``mlflow.simlab.key = sweep:<name>``.
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
    inprocess_trainable,
    torch_trainer_trainable,
)
from sweeps.trial_context import TrialContext, matrix_key

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
STAGES_FILE = "stages.json"  # a two-stage sweep's progress: the chosen configurations, the seeds points
STAGE_TAG = "simlab.stage"  # MLflow tag of sweep and trial runs: "search" or "seeds"
REPO_ROOT = Path(__file__).resolve().parent.parent  # printed commands name scripts by absolute path
UI_PORT = 5000  # the port of the printed `mlflow ui` command


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
    from simlab.data import load_split
    from simlab.similarity.store import SimilarityStore

    matrices: dict[str, Any] = {}
    stats = {"computed": 0, "loaded": 0}
    datasets: dict[str, Any] = {}
    for cfg in needed_matrix_configs(spec):
        data_key = json.dumps([getattr(cfg, n) for n in DATA_FIELDS], default=str)
        if data_key not in datasets:
            datasets[data_key] = load_split(cfg)
        store = SimilarityStore(Path(cfg.resolved_cache_dir) / "similarity")
        t0 = time.perf_counter()
        matrix, meta = store.get(datasets[data_key], cfg.source, cfg.similarity_args)
        stats["computed" if meta.get("computed") else "loaded"] += 1
        logger.info(
            "similarity %s %s: %s in %.1f s",
            cfg.source,
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


# ---------------------------------------------------------------------------------------------
# The sweep folder's own files (sweep_spec.json, summary.md, Tune's experiment state) through
# pyarrow.fs, as Ray reaches the storage: the same code for a local folder and s3:// (gs://, ...).
def _storage_fs(sweep_dir: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" not in sweep_dir:
        return pafs.LocalFileSystem(), os.path.abspath(sweep_dir)
    return pafs.FileSystem.from_uri(sweep_dir)


def read_storage_text(sweep_dir: str, name: str) -> str | None:
    """``<sweep_dir>/<name>`` as text, None when absent."""
    import pyarrow.fs as pafs

    fs, root = _storage_fs(sweep_dir)
    path = f"{root.rstrip('/')}/{name}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as fh:
        return fh.read().decode("utf-8")


def write_storage_text(sweep_dir: str, name: str, text: str) -> None:
    """Write ``<sweep_dir>/<name>``: atomically (temp + os.replace) locally; one PUT on object stores,
    which is atomic there (a reader sees the old object or the new one)."""
    if "://" not in sweep_dir:
        _write_atomic(Path(sweep_dir) / name, text)
        return
    fs, root = _storage_fs(sweep_dir)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as fh:
        fh.write(text.encode("utf-8"))


def storage_trial_ids(sweep_dir: str) -> set[str]:
    """The trial ids in the newest Tune experiment state under ``sweep_dir`` (local or remote); the
    remote twin of `sweeps.cleanup.tune_trial_ids`."""
    if "://" not in sweep_dir:
        from sweeps.cleanup import tune_trial_ids

        return tune_trial_ids(sweep_dir)
    import pyarrow.fs as pafs

    fs, root = _storage_fs(sweep_dir)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    states = sorted(
        i.path for i in infos if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json")
    )
    if not states:
        raise ValueError(f"sweep_dir: no Tune experiment state (experiment_state-*.json) in {sweep_dir!r}")
    with fs.open_input_stream(states[-1]) as fh:
        data = json.loads(fh.read().decode("utf-8"))
    return {json.loads(meta)["trial_id"] for meta, _ in data["trial_data"]}


def _all_stage_trial_ids(spec: SweepSpec) -> set[str]:
    """Trial ids of every stage's Tune experiment (search at the top, seeds in ``seeds/``)."""
    ids = storage_trial_ids(spec.sweep_dir)  # local: `tune_trial_ids` already adds seeds/
    if "://" in spec.storage:
        try:
            ids |= storage_trial_ids(f"{spec.sweep_dir.rstrip('/')}/{SEEDS_SUBDIR}")
        except (ValueError, OSError):  # no seeds stage (yet)
            pass
    return ids


def _artifact_location(spec: SweepSpec, sweep_dir: str, tracking_uri: str) -> str | None:
    """MLflow artifacts under the sweep folder, local or remote, when the client writes them itself
    (sqlite / file stores); a tracking server keeps its own artifact root."""
    if "://" not in spec.storage:
        return os.path.join(sweep_dir, "mlartifacts")
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return f"{sweep_dir.rstrip('/')}/mlartifacts"
    return None


def run_sweep(
    spec: SweepSpec, *, resume: bool = False, resume_errored: bool = False, restart_errored: bool = False
) -> SweepSummary:
    """Run (or, with ``resume``, continue) the sweep; Ray is started locally if not yet initialised.

    ``resume_errored`` / ``restart_errored`` (with ``resume``): errored trials are continued from their
    last checkpoint / rerun from scratch (`Tuner.restore`'s options of the same names).

    Ctrl-C (SIGINT) at any moment ends it promptly (`sweeps.stops.SigintGuard`): during `Tuner.fit`
    the summary comes back with ``interrupted`` set (trials stopped by the interrupt end KILLED and are
    resumable), before it `KeyboardInterrupt` is raised (the parent run ends KILLED with the reason).
    """
    with SigintGuard(spec.sweep_dir) as guard:
        return _run_sweep(
            spec, resume=resume, resume_errored=resume_errored, restart_errored=restart_errored, guard=guard
        )


def _run_sweep(
    spec: SweepSpec, *, resume: bool, resume_errored: bool, restart_errored: bool, guard: SigintGuard
) -> SweepSummary:
    import ray
    from ray import tune

    from sweeps.tracking import (
        MlflowTracker,
        configure_client_env,
        ensure_experiment,
        get_or_create_run,
        mark_stale_runs,
    )

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
    saved_text = read_storage_text(sweep_dir, SPEC_FILE) if resume else None
    if saved_text is not None:
        # The restored Tuner (searcher, trials) is the sweep as submitted: trials must see that spec too.
        saved = SweepSpec.from_json(json.loads(saved_text))
        if saved != spec:
            logger.warning("--resume continues the sweep as it was submitted; changed settings are ignored")
        spec = saved
    write_storage_text(sweep_dir, SPEC_FILE, json.dumps(spec.to_json(), indent=2, default=str))

    tracking_uri = spec.resolved_tracking_uri
    experiment_id = ensure_experiment(
        tracking_uri, spec.name, artifact_location=_artifact_location(spec, spec.sweep_dir, tracking_uri)
    )
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
            **_provenance(),
        },
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
        _log_spec_artifact(parent, spec)
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
            tuner = tune.Tuner.restore(
                sweep_dir,
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=resume_errored,
                restart_errored=restart_errored,
            )
            # Before any trial (re)opens its run; the live ids include the other stage's trials.
            _retire_lost_runs(tracking_uri, experiment_id, _all_stage_trial_ids(spec))
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=make_search_alg(spec),
                    scheduler=make_scheduler(spec),
                    num_samples=spec.num_samples,
                    max_concurrent_trials=spec.max_concurrent or None,
                    # In-process trials reuse their actor: a new one re-imports torch and MLflow, which
                    # is most of a short trial's start-up on a small machine.
                    reuse_actors=spec.in_process,
                ),
                run_config=tune.RunConfig(
                    name=os.path.basename(sweep_dir),
                    storage_path=os.path.dirname(sweep_dir),
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
        log_inputs_and_best_model(spec, grid, summary)
        if resume:  # the same check once more, against the trials the finished sweep holds
            live = {r["trial_id"] for r in summary.rows} | _other_stage_trial_ids(spec)
            _retire_lost_runs(tracking_uri, experiment_id, live)
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


# ---------------------------------------------------------------------------------------------
# Two-stage sweeps (--seeds N): stage "search" as above, then stage "seeds" re-runs each method's chosen
# configuration on N seeds. One MLflow experiment (runs tagged simlab.stage), one sweep folder: the
# search stage's Tune experiment is <sweep_dir> itself, the seeds stage's <sweep_dir>/seeds, and
# <sweep_dir>/stages.json (written once the search stage has finished) records the chosen
# configurations, so --resume continues in whichever stage the sweep was and never redoes the search.
SEEDS_SUBDIR = "seeds"


def stage_dir(spec: SweepSpec) -> str:
    """The Tune experiment folder of the spec's stage."""
    return spec.sweep_dir if spec.stage == "search" else f"{spec.sweep_dir.rstrip('/')}/{SEEDS_SUBDIR}"


def _other_stage_trial_ids(spec: SweepSpec) -> set[str]:
    """Trial ids of the other stage's Tune experiment (their MLflow runs are not orphans of this one)."""
    if spec.stage == "search" or "://" in spec.storage:
        return set()
    from sweeps.cleanup import tune_trial_ids

    try:
        return tune_trial_ids(spec.sweep_dir)
    except ValueError:
        return set()


def make_search_alg(spec: SweepSpec) -> Any:
    """Optuna (`make_searcher`) or, for ``search: grid``, a searcher that suggests each grid point
    (`sweeps.space.grid_points`) once, in order."""
    if spec.search != "grid":
        return make_searcher(spec)
    from sweeps.space import grid_points

    obj = spec.objectives[0]
    return _points_searcher_class()(grid_points(spec), metric=obj.metric, mode=obj.mode)


def _points_searcher_class():
    from ray.tune.search import Searcher

    class PointsSearcher(Searcher):
        """Suggests ``points`` in order, each once, then FINISHED. (Tune's `BasicVariantGenerator`
        would need every key of every point declared in ``param_space``, which would then leak into
        the configurations of labels that do not use it.) Its state (the next point, which trial got
        which) is saved with Tune's searcher state, so a restored sweep never repeats a point."""

        def __init__(self, points: Sequence[Mapping[str, Any]], *, metric: str, mode: str) -> None:
            super().__init__(metric=metric, mode=mode)
            self._points = [dict(p) for p in points]
            self._next = 0
            self._given: dict[str, int] = {}

        def suggest(self, trial_id: str) -> dict[str, Any] | str:
            if trial_id not in self._given:
                if self._next >= len(self._points):
                    return Searcher.FINISHED
                self._given[trial_id] = self._next
                self._next += 1
            return dict(self._points[self._given[trial_id]])

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            pass

        def get_state(self) -> dict[str, Any]:
            return {"points": self._points, "next": self._next, "given": dict(self._given)}

        def set_state(self, state: dict[str, Any]) -> None:
            self._points, self._next, self._given = state["points"], state["next"], dict(state["given"])

        # JSON, not pickle: a restored sweep never unpickles a file (RELIABILITY T14); points are plain
        # config values. Written atomically (temp + os.replace).
        def save(self, checkpoint_path: str) -> None:
            _write_atomic(Path(checkpoint_path), json.dumps(self.get_state()))

        def restore(self, checkpoint_path: str) -> None:
            self.set_state(json.loads(Path(checkpoint_path).read_text()))

    return PointsSearcher


def choose_configurations(spec: SweepSpec, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each method's best finished search trial on the first objective (validation), per value of
    ``spec.seeds_group_by``: ``[{"method", "group", "trial_id", "params", <objective>}]``."""
    obj = spec.objectives[0]
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["status"] != "finished" or not _finite_objectives(spec, row):
            continue
        merged = {**spec.fixed, **row["params"]}
        group = {g: merged.get(g) for g in spec.seeds_group_by}
        key = json.dumps([row["method"], group], sort_keys=True, default=str)
        old = best.get(key)
        value = row[obj.metric]
        if old is None or (value > old[obj.metric] if obj.mode == "max" else value < old[obj.metric]):
            best[key] = {
                "method": row["method"],
                "group": group,
                "trial_id": row["trial_id"],
                "params": dict(row["params"]),
                obj.metric: value,
            }
    return list(best.values())


def seeds_points(spec: SweepSpec, chosen: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stage "seeds": every chosen configuration x `SweepSpec.seed_values`."""
    return [
        {**{k: v for k, v in c["params"].items() if k != "seed"}, "seed": seed}
        for c in chosen
        for seed in spec.seed_values
    ]


def run_staged_sweep(
    spec: SweepSpec, *, resume: bool = False, resume_errored: bool = False, restart_errored: bool = False
) -> SweepSummary:
    """`run_sweep`, in two stages when ``spec.seeds > 0`` (see above); returns the last stage's summary.

    An interrupted search stage returns its (interrupted) summary: ``--resume`` continues it, then runs
    the seeds stage. Ray is started once for both stages when not yet initialised. ``resume_errored`` /
    ``restart_errored`` go to the stage being resumed (`run_sweep`).
    """
    errored = {"resume_errored": resume_errored, "restart_errored": restart_errored}
    top = Path(spec.sweep_dir)
    saved_text = read_storage_text(spec.sweep_dir, SPEC_FILE) if resume else None
    if saved_text is not None:
        # The sweep as submitted (as run_sweep does): `--resume` without `--seeds` continues a staged sweep.
        saved = SweepSpec.from_json(json.loads(saved_text))
        if saved != spec:
            logger.warning("--resume continues the sweep as it was submitted; changed settings are ignored")
        spec = saved
    if spec.seeds <= 0:
        return run_sweep(spec, resume=resume, **errored)
    import ray

    state_path = top / STAGES_FILE
    state = json.loads(state_path.read_text()) if resume and state_path.exists() else None
    started_ray = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(address="local", include_dashboard=False)
        started_ray = True
    try:
        if state is None:
            handlers = _signal_handlers()
            search = run_sweep(spec, resume=resume, **errored)
            # Tune leaves its SIGINT handler installed after fit; it would swallow a Ctrl-C between the
            # stages (setting the finished search's stop flag): put the caller's handlers back.
            _restore_signal_handlers(handlers)
            if search.interrupted:
                logger.warning("search stage interrupted: --resume continues it, then runs the seeds stage")
                return search
            chosen = choose_configurations(spec, search.rows)
            if not chosen:
                logger.error("search stage: no finished trial with a finite objective; no seeds stage")
                return search
            state = {
                "version": 1,
                "stage": "seeds",
                "objective": str(spec.objectives[0]),
                "seeds": list(spec.seed_values),
                "chosen": chosen,
                "points": seeds_points(spec, chosen),
            }
            _write_atomic(state_path, json.dumps(state, indent=1, default=str) + "\n")
            logger.info(
                "search stage done: %s; seeds stage: %d trials",
                ", ".join(f"{c['method']} {c['group'] or ''} <- {c['trial_id']}" for c in chosen),
                len(state["points"]),
            )
            resume, errored = False, {}  # the seeds stage starts now
        else:
            logger.info("search stage already finished (%s): continuing the seeds stage", state_path)
        from sweeps.validation import seeds_stage_spec

        return run_sweep(seeds_stage_spec(spec, state["points"]), resume=resume, **errored)
    finally:
        if started_ray:
            ray.shutdown()


def _signal_handlers() -> dict[int, Any]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    sigs = [signal.SIGINT] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
    return {sig: signal.getsignal(sig) for sig in sigs}


def _restore_signal_handlers(handlers: Mapping[int, Any]) -> None:
    import signal

    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def _provenance() -> dict[str, str]:
    """Git commit + dirty flag, user, entry point, package versions, CPU/GPU (`sweeps.provenance`)."""
    from sweeps.provenance import entry_point, provenance_tags

    return provenance_tags(entry_point())


def _log_spec_artifact(parent: Any, spec: SweepSpec) -> None:
    """The resolved sweep spec as the parent run's ``sweep_spec.json`` artifact, from the start."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SPEC_FILE
        path.write_text(json.dumps(spec.to_json(), indent=2, default=str))
        parent.log_artifact(path)
        parent.flush(timeout=30)


def _dataset_entity(data: Any) -> Any:
    """An MLflow dataset input of a split dataset: name, digest of its identity, split sizes."""
    import hashlib

    from mlflow.entities import Dataset

    digest = hashlib.sha256(data.identity.encode()).hexdigest()[:10]
    profile = {
        "train": int(len(data.train_y)),
        "val": int(len(data.val_y)),
        "test": int(len(data.test_y)),
        "classes": int(data.num_classes),
        "image_shape": list(data.image_shape),
    }
    return Dataset(
        name=data.name,
        digest=digest,
        source_type="simlab",
        source=json.dumps({"identity": data.identity}),
        profile=json.dumps(profile),
    )


def log_inputs_and_best_model(spec: SweepSpec, grid: Any, summary: SweepSummary) -> None:
    """Dataset inputs on the parent and every trial run; the best trial's model as an MLflow model.

    Best effort after the sweep: a failure here is logged, never fails a finished sweep.
    """
    try:
        _log_dataset_inputs(spec, summary)
    except Exception:  # noqa: BLE001
        logger.exception("could not log the dataset inputs to MLflow")
    if summary.best and not spec.multi_objective:
        try:
            _log_best_model(spec, grid, summary)
        except Exception:  # noqa: BLE001
            logger.exception("could not log the best trial's model to MLflow")


def _trial_config(spec: SweepSpec, row: Mapping[str, Any]) -> Any:
    from simlab.config import TrainConfig

    return TrainConfig.from_dict(train_config_dict(spec, dict(row["params"])))


def _trial_runs(tracking_uri: str, experiment_id: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    from sweeps.tracking import KEY_TAG, run_tag

    runs = MlflowClient(tracking_uri).search_runs(
        [experiment_id], filter_string="tags.`simlab.role` = 'trial'", max_results=50000
    )
    return {run_tag(r.data.tags, KEY_TAG) or "": r.info.run_id for r in runs}


def _log_dataset_inputs(spec: SweepSpec, summary: SweepSummary) -> None:
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    from simlab.data import load_split

    client = MlflowClient(summary.tracking_uri)
    runs = _trial_runs(summary.tracking_uri, summary.experiment_id)
    entities: dict[str, Any] = {}
    logged_parent: set[str] = set()
    for row in summary.rows:
        cfg = _trial_config(spec, row)
        key = json.dumps([getattr(cfg, n) for n in DATA_FIELDS], default=str)
        if key not in entities:
            entities[key] = _dataset_entity(load_split(cfg))
        inputs = [DatasetInput(entities[key], tags=[InputTag("mlflow.data.context", "training")])]
        if row["trial_id"] in runs:
            client.log_inputs(runs[row["trial_id"]], datasets=inputs)
        if key not in logged_parent:
            client.log_inputs(summary.parent_run_id, datasets=inputs)
            logged_parent.add(key)


def _log_best_model(spec: SweepSpec, grid: Any, summary: SweepSummary) -> None:
    """`mlflow.pytorch.log_model` of the best trial's last checkpoint, into that trial's run."""
    import mlflow
    import numpy as np
    import torch

    from simlab.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from simlab.data import load_split
    from simlab.models import build_model

    best = summary.best[0]
    run_id = _trial_runs(summary.tracking_uri, summary.experiment_id).get(best["trial_id"])
    result = next(
        (r for r in grid if (r.metrics or {}).get("trial_id", Path(r.path).name) == best["trial_id"]), None
    )
    if run_id is None or result is None or result.checkpoint is None:
        logger.warning("best trial %s: no run or checkpoint; no model logged", best["trial_id"])
        return
    cfg = _trial_config(spec, best)
    with result.checkpoint.as_directory() as folder:
        state = load_checkpoint(Path(folder) / CHECKPOINT_NAME)
    shape = tuple(load_split(cfg).image_shape)  # (C, H, W): the model's input
    model = build_model(cfg.model, len(state["class_names"]), in_channels=shape[0], **cfg.model_args)
    model.load_state_dict(state["model"])
    model.eval()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(summary.tracking_uri)
    try:
        mlflow.pytorch.log_model(
            model,
            name="model",
            run_id=run_id,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # no slow inference
            # MLflow 3.17's default 'pt2' export fixes the batch size of the example; pickle keeps the
            # module (loading needs `simlab` importable). The example gives the model its signature.
            serialization_format="pickle",
            input_example=np.zeros((2, *shape), dtype=np.float32),
            metadata={
                "trial_id": best["trial_id"],
                "epoch": int(state["epoch"]),
                "classes": state["class_names"],
            },
        )
    finally:
        mlflow.set_tracking_uri(previous)
    logger.info(
        "logged the best trial's model (%s, epoch %d) to run %s", best["trial_id"], state["epoch"], run_id
    )


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

    from sweeps.tracking import FAILURE_TAG, KEY_TAG, run_tag
    from sweeps.trial_runs import STOPPED_TAG

    client = MlflowClient(tracking_uri)
    by_key = {r["trial_id"]: r for r in summary.rows}
    running = client.search_runs(
        [experiment_id],
        filter_string="tags.`simlab.role` = 'trial' and attributes.status = 'RUNNING'",
        max_results=50000,
    )
    for run in running:
        row = by_key.get(run_tag(run.data.tags, KEY_TAG) or "")
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
    from sweeps.tracking import delete_orphan_runs

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
    write_storage_text(spec.sweep_dir, "summary.md", summary_table(spec, summary.rows) + "\n")


def resume_hint(spec: SweepSpec) -> str:
    """The line that tells the user how to continue an interrupted sweep (runnable as printed)."""
    return f"interrupted: continue with  {resume_command(spec)}"


def format_summary(spec: SweepSpec, summary: SweepSummary, *, ui_port: int = UI_PORT) -> str:
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
    out.append("")
    out.extend(
        mlflow_view_lines(
            summary.tracking_uri,
            summary.experiment_id,
            spec.name,
            port=ui_port,
            order_by=spec.objectives[0].metric,
            ascending=spec.objectives[0].mode == "min",
        )
    )
    out.append(f"paper-style table:  {report_command(spec, summary.tracking_uri)}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Commands printed for the user: they must run as printed from a shell where the venv is not
# activated, so they name this interpreter (`sys.executable`, not resolved: a venv's python is a link
# whose target lacks the venv's packages) and the `mlflow` script installed next to it, by absolute path.
def python_command(script: str | Path, *args: Any) -> str:
    """``<this python> <repo>/<script> args...``, shell-quoted."""
    import shlex
    import sys

    return shlex.join([sys.executable, str(REPO_ROOT / script), *map(str, args)])


def mlflow_executable() -> str:
    """The `mlflow` console script of this interpreter's environment (falls back to ``python -m mlflow``)."""
    import shlex
    import sys

    exe = Path(sys.executable).parent / "mlflow"
    return shlex.quote(str(exe)) if exe.exists() else f"{shlex.quote(sys.executable)} -m mlflow"


def mlflow_ui_command(tracking_uri: str, *, port: int = UI_PORT, host: str = "127.0.0.1") -> str:
    """A light `mlflow ui` for one sqlite store: one uvicorn worker and no job runner.

    MLflow 3.17's defaults (4 workers + the job runner's huey consumers) start ~15 processes and take
    ~3 GB; ``--workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` gives 2 processes (~0.5 GB).
    """
    import shlex

    return (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_executable()} ui "
        f"--backend-store-uri {shlex.quote(tracking_uri)} --host {host} --port {int(port)} --workers 1"
    )


def runs_view_url(
    base_url: str, experiment_id: str, *, order_by: str | None = None, ascending: bool = True
) -> str:
    """The experiment's *runs* view, trials listed flat, sorted by ``order_by`` (shown as a column).

    MLflow 3.17 opens an experiment in its GenAI view (traces) unless the URL says
    ``workflowType=machine_learning``; its UI derives the view from that URL parameter (or the
    browser's last choice), not from the ``mlflow.experimentKind`` tag, so no tag can do this. Without
    a filter, the trials are folded under the parent run; ``searchFilter`` on the trial role lists
    them, and ``orderByKey`` on a metric adds its column (the UI shows no metric columns by default).
    """
    from urllib.parse import urlencode

    query = {"workflowType": "machine_learning"}
    if order_by:
        query |= {
            "searchFilter": "tags.`simlab.role` = 'trial'",
            "orderByKey": f"metrics.`{order_by}`",
            "orderByAsc": "true" if ascending else "false",
        }
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def mlflow_view_lines(
    tracking_uri: str,
    experiment_id: str,
    name: str,
    *,
    port: int = UI_PORT,
    order_by: str | None = None,
    ascending: bool = True,
) -> list[str]:
    """What to run / open to see the sweep's runs in MLflow."""
    sort = {"order_by": order_by, "ascending": ascending}
    if tracking_uri.startswith("sqlite:"):
        return [
            f"MLflow UI:  {mlflow_ui_command(tracking_uri, port=port)}",
            f"  then open {runs_view_url(f'http://127.0.0.1:{int(port)}', experiment_id, **sort)}",
        ]
    if tracking_uri.startswith(("http://", "https://")):
        return [f"MLflow: {runs_view_url(tracking_uri, experiment_id, **sort)}"]
    return [f"MLflow: {tracking_uri} (experiment {name!r})"]


def report_command(spec: SweepSpec, tracking_uri: str) -> str:
    """`scripts/report.py` on this sweep's experiment, writing under the sweep's folder when local."""
    args: list[Any] = ["--tracking-uri", tracking_uri, "--experiment", spec.name]
    if "://" not in spec.storage:
        args += ["--out", os.path.join(spec.sweep_dir, "report")]
    return python_command("scripts/report.py", *args)


def resume_command(spec: SweepSpec) -> str:
    """Continue this sweep: the Tuner is restored as it was submitted (the saved ``sweep_spec.json``)."""
    return python_command(
        "sweeps/calibration.py",
        "--preset",
        spec.preset,
        "--name",
        spec.name,
        "--storage",
        spec.storage,
        "--resume",
    )
