"""The searchers of a sweep, and the one file that touches Ray's or Optuna's private state.

- `make_search_alg(spec)`: Optuna's define-by-run TPE search (`SafeOptunaSearch`: a NaN or failed trial
  is told FAIL, never left RUNNING) or, for ``search: grid``, `PointsSearcher` (each grid point once, in
  order). Both are saved with Tune's searcher state and restored by `Tuner.restore`. They are handed
  to Tune in a `ReconcilingSearchGenerator` (in Tune's `ConcurrencyLimiter` when ``max_concurrent``):
  Tune saves its trials and its searcher state as separate files and uploads them one by one, so a
  SIGKILL in between leaves a pair from two moments. On restore the generator's trial count and the
  limiter's running set are set from the trials the restored experiment state holds (the running set
  of an older searcher state held every slot with trials that had finished, and the resumed sweep
  waited forever).
- Small public readers of what Ray and Optuna keep private: `optuna_trial` (the Optuna trial of a Tune
  trial), `saved_optuna_study` (the study as Tune last saved it), `trial_states` (Tune's own trial states
  of a `ResultGrid`), `trial_ids_in_state` (the trials of a saved experiment state), `local_head_fixed`
  (a head this process started without an autoscaler).

Every private name used is listed in `PRIVATE_API`; tests/test_search_private_api.py checks each on the
installed classes and that Ray is the version pinned in pyproject.toml. Ray and Optuna are imported inside
the functions: the CLI validates a spec without them.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simlab._io import write_text_atomic
from sweeps.space import grid_points, make_space
from sweeps.spec import SweepSpec

logger = logging.getLogger(__name__)

# What this module reads or writes behind Ray's and Optuna's public API (checked by the test above).
PRIVATE_API: tuple[str, ...] = (
    "ray.tune.search.optuna.OptunaSearch._ot_trials",  # Tune trial id -> Optuna trial
    "ray.tune.search.optuna.OptunaSearch._ot_study",  # the Optuna study (told FAIL/PRUNED here)
    "ray.tune.search.optuna.OptunaSearch._completed_trials",  # trial ids already told
    "ray.tune.search.optuna.OptunaSearch.save",  # pickles __dict__: the saved state holds the above
    "ray.tune.result_grid.ResultGrid._experiment_analysis",  # .trials: Tune's own trial states
    "ray.tune.execution.tune_controller.TuneController.CKPT_FILE_TMPL",  # experiment_state-*.json
    "experiment_state 'trial_data'",  # [[trial json (with trial_id, status), runtime metadata], ...]
    "ray.tune.search.ConcurrencyLimiter.live_trials",  # the trials holding a slot (saved, restored)
    "ray.tune.search.ConcurrencyLimiter.num_unfinished_live_trials",
    "ray.tune.search.search_generator.SearchGenerator._counter",  # trials created (num_samples check)
    "ray.tune.search.Searcher.CKPT_FILE_TMPL",  # searcher-state-*.pkl
    "ray._private.worker._global_node",  # the node this process started (.head, ._ray_params)
    "ray._private.parameter.RayParams.autoscaling_config",
)
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"  # TuneController.CKPT_FILE_TMPL.format("*")
SEARCHER_STATE_GLOB = "searcher-state-*.pkl"  # Searcher.CKPT_FILE_TMPL.format("*")
# One Tune session's state files, named by its start time: TuneController's, SearchGenerator's and the
# searcher's CKPT_FILE_TMPL (the generator's is a cloudpickle despite its name).
SESSION_STATE_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl")


# ---------------------------------------------------------------------------------------------
FINISHED_STATES = ("TERMINATED", "ERROR")  # a restore runs every other trial again (ERROR only if asked)


def trial_statuses_in_state(text: str) -> dict[str, str | None]:
    """Trial id -> Tune status of one saved Tune experiment state (``experiment_state-*.json``; JSON,
    never unpickled)."""
    trials = [json.loads(meta) for meta, _ in json.loads(text)["trial_data"]]
    return {t["trial_id"]: t.get("status") for t in trials}


def unfinished_ids(statuses: Mapping[str, str | None]) -> set[str]:
    """The trials of `trial_statuses_in_state` that a restore runs again (not TERMINATED or ERROR)."""
    return {t for t, status in statuses.items() if status not in FINISHED_STATES}


def unfinished_trial_ids_in_state(text: str) -> set[str]:
    """The trials of one saved Tune experiment state that are not TERMINATED or ERROR."""
    return unfinished_ids(trial_statuses_in_state(text))


def _newest_state_text(checkpoint_dir: str) -> str | None:
    """The newest experiment state in ``checkpoint_dir`` (the one Tune restores: the greatest name)."""
    states = sorted(Path(checkpoint_dir).glob(EXPERIMENT_STATE_GLOB))
    try:
        return states[-1].read_text() if states else None
    except OSError as err:
        logger.warning("could not read %s (%s): the restored searcher is not checked", states[-1], err)
        return None


def reconcile_restored(generator: Any, state_text: str) -> list[str]:
    """Make a restored search generator agree with the restored experiment state ``state_text``.

    Its count of created trials becomes the number of trials the state holds (an older searcher state
    would create one trial too many, a newer one would never replace a trial the kill lost); its
    `ConcurrencyLimiter`'s running set becomes the state's unfinished trials (those a restore runs
    again); an Optuna trial of a trial the state does not hold (lost) is told FAIL, not left RUNNING.
    All of it holds already when the two files come from the same moment. Returns what was changed.
    """
    from ray.tune.search import ConcurrencyLimiter

    changed = []
    statuses = trial_statuses_in_state(state_text)
    held = set(statuses)
    if generator._counter != len(held):
        changed.append(f"trials created {generator._counter} -> {len(held)}")
        generator._counter = len(held)
    base = generator.searcher
    while hasattr(base, "searcher"):  # under the limiter
        base = base.searcher
    if hasattr(base, "_ot_trials"):  # SafeOptunaSearch: FAIL for a trial the kill lost
        lost = set(base._ot_trials) - set(base._completed_trials) - held
        for trial_id in sorted(lost):
            base.on_trial_complete(trial_id, result=None, error=True)
        if lost:
            changed.append(f"lost trials told FAIL to Optuna: {', '.join(sorted(lost))}")
    limiter = generator.searcher
    if isinstance(limiter, ConcurrencyLimiter) and not limiter.batch:
        unfinished = unfinished_ids(statuses)
        if limiter.live_trials != unfinished:
            changed.append(
                f"running trials {sorted(limiter.live_trials) or '-'} -> {sorted(unfinished) or '-'}"
            )
            limiter.live_trials = set(unfinished)
            limiter.num_unfinished_live_trials = len(unfinished)
    return changed


def _search_generator_class() -> type:
    from ray.tune.search.search_generator import SearchGenerator

    class ReconcilingSearchGenerator(SearchGenerator):
        """Tune's `SearchGenerator`, made to agree with the restored trials after a restore
        (`reconcile_restored`; a warning says what it changed)."""

        def restore_from_dir(self, dirpath: str) -> None:
            super().restore_from_dir(dirpath)
            text = _newest_state_text(dirpath)  # Tune downloads it here before restoring the searcher
            if text is None:
                return
            try:
                changed = reconcile_restored(self, text)
            except (ValueError, KeyError, TypeError) as err:
                logger.warning("could not read the restored trials (%s): the searcher is not checked", err)
                return
            if changed:
                logger.warning(
                    "the searcher state and the trials Tune restored were saved at different moments (a kill "
                    "between Tune's uploads): %s",
                    "; ".join(changed),
                )

    return ReconcilingSearchGenerator


def _optuna_search_class() -> type:
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


def _points_searcher_class() -> type:
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
        # config values. Written atomically.
        def save(self, checkpoint_path: str) -> None:
            write_text_atomic(checkpoint_path, json.dumps(self.get_state()))

        def restore(self, checkpoint_path: str) -> None:
            self.set_state(json.loads(Path(checkpoint_path).read_text()))

    return PointsSearcher


def make_search_alg(spec: SweepSpec) -> Any:
    """Optuna (`make_searcher`) or, for ``search: grid``, a searcher that suggests each grid point
    (`sweeps.space.grid_points`) once, in order; in Tune's `ConcurrencyLimiter` when
    ``spec.max_concurrent``; in a `ReconcilingSearchGenerator` (what Tune would wrap a searcher in)."""
    from ray.tune.search import ConcurrencyLimiter

    if spec.search != "grid":
        searcher = make_searcher(spec)
    else:
        obj = spec.objectives[0]
        searcher = _points_searcher_class()(grid_points(spec), metric=obj.metric, mode=obj.mode)
    if spec.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)
    return _search_generator_class()(searcher)


# ---------------------------------------------------------------------------------------------
def optuna_trial(searcher: Any, trial_id: str) -> Any:
    """The Optuna trial (`FrozenTrial`, as the study holds it now) of a Tune trial of `make_searcher`."""
    return searcher._ot_study.trials[searcher._ot_trials[trial_id].number]


def saved_optuna_study(sweep_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(study, {Tune trial id: Optuna trial})`` as Tune last saved the Optuna searcher in ``sweep_dir``.

    Read back by Tune's own `OptunaSearch.restore` (what a resumed sweep runs anyway): this project's code
    never unpickles a file itself (RELIABILITY T14).
    """
    from ray.tune.search.optuna import OptunaSearch  # Ray only where it is used

    states = sorted(Path(sweep_dir).glob(SEARCHER_STATE_GLOB))
    if not states:
        raise ValueError(f"sweep_dir: no Tune searcher state ({SEARCHER_STATE_GLOB}) in {str(sweep_dir)!r}")
    searcher = OptunaSearch()
    searcher.restore(str(states[-1]))
    return searcher._ot_study, searcher._ot_trials


def trial_states(grid: Any) -> dict[str, str]:
    """Tune's own state of each trial of a `ResultGrid` (TERMINATED / ERROR / PENDING / RUNNING /
    PAUSED); empty when this Ray does not expose them (the caller infers from the results alone)."""
    try:
        return {t.trial_id: t.status for t in grid._experiment_analysis.trials}
    except AttributeError:  # pragma: no cover - a Ray without it
        return {}


def trial_ids_in_state(text: str) -> set[str]:
    """The trial ids of one saved Tune experiment state (``experiment_state-*.json``; JSON, never
    unpickled)."""
    return set(trial_statuses_in_state(text))


def local_head_fixed() -> bool:
    """True when this process started the Ray head itself without an autoscaler (``ray.init`` local);
    False for a joined cluster, no Ray, or a Ray without these internals (assume it may scale)."""
    try:
        import ray._private.worker as ray_worker

        node = getattr(ray_worker, "_global_node", None)
        params = getattr(node, "_ray_params", None)
        return bool(
            node is not None
            and getattr(node, "head", False)
            and not getattr(params, "autoscaling_config", None)
        )
    except Exception:  # noqa: BLE001 - a Ray without these internals: assume it may scale
        return False
