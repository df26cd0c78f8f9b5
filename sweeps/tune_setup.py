"""A sweep spec -> the pieces of its Ray Tune run, before any trial starts.

- `compute_matrices`: every similarity matrix any trial can need, loaded or computed through
  `SimilarityStore` once, here; the driver hands them to the trials through `tune.with_parameters`, which
  puts them in Ray's object store (`ray.put`).
- `make_trainable`: the in-process or TorchTrainer trial function with its resources.
- `make_scheduler`: FIFO, or ASHA recording its STOP decisions (`sweeps.stops`).
- `start_callbacks`: the per-trial request checked against the cluster (`sweeps.feasibility`).
- `new_tuner` / `restored_tuner`: a fresh `Tuner` (searcher from `sweeps.search`, Tune-level
  `FailureConfig`, checkpoints kept per trial) or `Tuner.restore` of the stage's folder with the same
  object refs supplied again (the Optuna study is part of Tune's searcher state, so it continues).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any

from simlab.config import TrainConfig
from sweeps.feasibility import StartTimeout, check_resources, trial_bundles
from sweeps.search import make_search_alg
from sweeps.space import corner_configs, train_config_dict
from sweeps.spec import SpecError, SweepSpec
from sweeps.stops import recording_asha
from sweeps.trainable import inprocess_trainable, torch_trainer_trainable
from sweeps.trial_context import DATA_FIELDS, data_key, matrix_key

logger = logging.getLogger(__name__)


def _values(spec: SweepSpec, key: str) -> tuple[Any, ...]:
    if key in spec.space:
        return spec.space[key].values
    if key in spec.fixed:
        return (spec.fixed[key],)
    return ()


# ---------------------------------------------------------------------------------------------
def needed_matrix_configs(spec: SweepSpec) -> list[Any]:
    """One TrainConfig per distinct similarity matrix the sweep's trials can ask for."""
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
    from simlab.data import load_split  # torch: imported once a sweep runs
    from simlab.similarity.store import SimilarityStore

    matrices: dict[str, Any] = {}
    stats = {"computed": 0, "loaded": 0}
    datasets: dict[str, Any] = {}
    for cfg in needed_matrix_configs(spec):
        split = data_key(cfg)
        if split not in datasets:
            datasets[split] = load_split(cfg)
        store = SimilarityStore(Path(cfg.resolved_cache_dir) / "similarity")
        t0 = time.perf_counter()
        matrix, meta = store.get(datasets[split], cfg.source, cfg.similarity_args)
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


def make_trainable(spec: SweepSpec, ctx: dict[str, Any], matrices: dict[str, Any]) -> Any:
    from ray import tune  # Ray (here and below) once a sweep runs

    fn = inprocess_trainable if spec.in_process else torch_trainer_trainable
    trainable = tune.with_parameters(fn, ctx=ctx, matrices=matrices)
    if spec.in_process:
        resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    else:
        # The trial function only drives a TorchTrainer; its workers request CPUs/GPUs themselves. Tune
        # refuses an empty request, so the driver takes a token share of a CPU.
        resources = {"cpu": 0.01}
    return tune.with_resources(trainable, resources)


def start_callbacks(spec: SweepSpec) -> list[Any] | None:
    """`sweeps.feasibility`: SpecError if no node can ever hold a trial (fixed cluster), else a bounded
    wait for the first trial on a cluster that has to grow first."""
    timeout = check_resources(spec)
    if timeout is None:
        return None
    return [StartTimeout(timeout, what=f"a trial asks {trial_bundles(spec)}").callback()]


def new_tuner(spec: SweepSpec, trainable: Any, sweep_dir: str, callbacks: list[Any] | None) -> Any:
    """A fresh `Tuner` writing its experiment to ``sweep_dir`` (the stage's folder)."""
    from ray import tune

    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=make_search_alg(spec),
            scheduler=make_scheduler(spec),
            num_samples=spec.num_samples,
            # No max_concurrent_trials: make_search_alg applies spec.max_concurrent itself, inside a
            # search generator that agrees with the restored trials on --resume (Tune's would not).
            # In-process trials reuse their actor: a new one re-imports torch and MLflow, which is most
            # of a short trial's start-up on a small machine.
            reuse_actors=spec.in_process,
        ),
        run_config=tune.RunConfig(
            name=os.path.basename(sweep_dir),
            storage_path=os.path.dirname(sweep_dir),
            failure_config=tune.FailureConfig(max_failures=spec.tune_max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
            verbose=1,
        ),
    )


def restored_tuner(sweep_dir: str, trainable: Any, *, resume_errored: bool, restart_errored: bool) -> Any:
    """`Tuner.restore` of ``sweep_dir``: unfinished trials continue; errored ones as asked."""
    from ray import tune

    logger.info("restoring sweep %s", sweep_dir)
    return tune.Tuner.restore(
        sweep_dir,
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=resume_errored,
        restart_errored=restart_errored,
    )
