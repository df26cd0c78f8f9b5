"""The sweep specification: what a sweep trains, searches, optimises and where it writes.

A `SweepSpec` is resolved from a preset (`sweeps.presets.PRESETS`) plus command-line overrides, and
validated here *before* Ray, torch or MLflow are imported: `validate_spec` checks unknown keys (with
suggestions), ranges, incompatible choices (β without similarity labels, relaxation without confidence
labels, ...), the objective (validation metrics only: trials are selected on the validation split, test
metrics are reported, never optimised) and that data / word-vector files exist. Registry keys (models,
losses, datasets, similarity sources) need the torch-backed registries, so `check_registries` is a
separate, slower step the CLI runs right after (still before Ray starts).

Search dimensions are plain data so presets stay declarative:
``{"choice": [...]}``, ``{"uniform": [low, high]}``, ``{"loguniform": [low, high]}``,
``{"int": [low, high]}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simlab.config import CONFIDENCE_SOURCES, INT32_MAX, LABEL_METHODS, Bound, TrainConfig

# The label "methods" a sweep searches over: TrainConfig's label methods plus the mixup baseline of
# paper A §6.1, which trains on one-hot labels with mixup (TrainConfig.mixup > 0).
SWEEP_LABELS: tuple[str, ...] = (*LABEL_METHODS, "mixup")

# Fields that only mean something for some label methods (paper A eq. 17-18, paper B eq. 1-10). The
# search space samples them only there, and a fixed value is applied only there; elsewhere the field
# keeps TrainConfig's default. `confidence_source` is the sweep's name for `similarity` under confidence
# labels: Optuna needs one name per set of choices (its categorical spaces cannot change per trial).
CONDITIONAL: dict[str, tuple[str, ...]] = {
    "alpha": ("uniform", "similarity"),
    "beta": ("similarity",),
    "similarity_normalise": ("similarity",),
    "similarity": ("similarity",),
    "confidence_source": ("confidence",),
    "relaxation": ("confidence",),
    "confidence_own": ("confidence",),
    "confidence_other": ("confidence",),
    "trusted_own": ("confidence",),
    "trusted_other": ("confidence",),
    "mixup": ("mixup",),
}

# Names of a sweep's search/fixed parameters that are not TrainConfig fields.
EXTRA_PARAMS: tuple[str, ...] = ("confidence_source",)

# SPEC §6 metric names; the objective must be one of them on the validation split.
BASE_METRICS: tuple[str, ...] = (
    "accuracy",
    "nll",
    "brier",
    "ece_hist_prediction",
    "ece_hist_output",
    "ece_kde_prediction",
    "ece_kde_output",
)
VALID_OBJECTIVES: tuple[str, ...] = tuple(f"val_{m}" for m in BASE_METRICS)
DIMENSION_KINDS: tuple[str, ...] = ("choice", "uniform", "loguniform", "int")
SCHEDULER_CHOICES: tuple[str, ...] = ("asha", "none")
# similarity_args values under these keys are files that must exist before anything starts.
PATH_ARG_KEYS: tuple[str, ...] = ("vectors", "path", "file", "wnids", "words")

Direction = Literal["min", "max"]

# The sweep's own numeric keys and the range their consumer accepts (TrainConfig's fields have theirs in
# `simlab.config.NUMERIC_BOUNDS`). Optuna's TPE sampler seeds a numpy RandomState: 0 .. 2**32 - 1.
SWEEP_BOUNDS: dict[str, Bound] = {
    "num_samples": Bound("int", 1, INT32_MAX),
    "grace_period": Bound("int", 1, INT32_MAX),
    "workers_per_trial": Bound("int", 1, INT32_MAX),
    "max_concurrent": Bound("int", 0, INT32_MAX),  # 0 = as many as resources allow
    "train_max_failures": Bound("int", -1, INT32_MAX),  # -1 = retry forever (Ray's convention)
    "tune_max_failures": Bound("int", -1, INT32_MAX),
    "sampler_seed": Bound("int", 0, 2**32 - 1),
    "cpus_per_trial": Bound("float", 0.0, low_open=True),
    "gpus_per_trial": Bound("float", 0.0),
    "seeds": Bound("int", 0, INT32_MAX),  # --seeds N: 0 = one stage (no re-run on seeds)
}


class SpecError(ValueError):
    """A bad sweep specification; `field` names the offending entry (dotted for nested ones)."""

    def __init__(self, field: str, message: str) -> None:
        # Messages from TrainConfig already start with the field name: do not repeat it.
        super().__init__(
            message
            if message.startswith(f"{field} ") or message.startswith(f"{field}:")
            else f"{field}: {message}"
        )
        self.field = field


@dataclass(frozen=True)
class Dimension:
    """One search dimension: `kind` in DIMENSION_KINDS, `values` the choices or `(low, high)`."""

    kind: str
    values: tuple[Any, ...]

    @classmethod
    def parse(cls, name: str, raw: Any) -> Dimension:
        if isinstance(raw, Dimension):
            return raw
        if not (isinstance(raw, Mapping) and len(raw) == 1):
            raise SpecError(
                f"space.{name}", f"expected one of {{{', '.join(DIMENSION_KINDS)}}}: [...], got {raw!r}"
            )
        ((kind, values),) = raw.items()
        if kind not in DIMENSION_KINDS:
            raise SpecError(
                f"space.{name}", f"unknown dimension kind {kind!r}; valid: {', '.join(DIMENSION_KINDS)}"
            )
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
            raise SpecError(f"space.{name}", f"{kind} needs a non-empty list, got {values!r}")
        values = tuple(values)
        if kind != "choice":
            if len(values) != 2 or not all(_is_number(v) and math.isfinite(v) for v in values):
                raise SpecError(
                    f"space.{name}", f"{kind} needs [low, high] finite numbers, got {list(values)!r}"
                )
            low, high = values
            if not low < high:
                raise SpecError(f"space.{name}", f"{kind} needs low < high, got [{low}, {high}]")
            if kind == "loguniform" and low <= 0:
                raise SpecError(f"space.{name}", f"loguniform needs low > 0, got {low}")
            if kind == "int" and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise SpecError(f"space.{name}", f"int needs integer bounds, got {list(values)!r}")
        elif len(set(map(_hashable, values))) != len(values):
            raise SpecError(f"space.{name}", f"choice has duplicates: {list(values)!r}")
        return cls(kind, values)

    def corners(self) -> tuple[Any, ...]:
        """The values that bound the dimension: every choice, or both ends of a range."""
        return self.values

    def to_json(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: Direction

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"


@dataclass(frozen=True)
class SweepSpec:
    """A fully resolved sweep. `fixed` and `space` together cover the searched TrainConfig fields."""

    preset: str
    name: str
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)  # field -> value (TrainConfig or EXTRA_PARAMS)
    space: dict[str, Dimension] = field(default_factory=dict)  # field -> search dimension
    only_for: dict[str, tuple[str, ...]] = field(default_factory=dict)  # extra conditions (field -> labels)
    source_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # similarity source -> its args
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # model key -> its args
    warm_start: tuple[dict[str, Any], ...] = ()  # partial configs Optuna evaluates first (coverage)
    num_samples: int = 12
    objectives: tuple[Objective, ...] = (Objective("val_nll", "min"),)
    scheduler: str = "none"  # "asha" (single objective only) or "none"
    grace_period: int = 1  # ASHA: epochs before a trial may be stopped
    in_process: bool = True  # True: trials call fit in the Tune actor; False: a TorchTrainer per trial
    workers_per_trial: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0 = as many as resources allow
    train_max_failures: int = 0  # Ray Train FailureConfig (worker deaths), TorchTrainer mode
    tune_max_failures: int = 1  # Ray Tune FailureConfig (a trial's driver)
    storage: str = "~/simlab_sweeps"  # local folder or s3://bucket/prefix
    tracking_uri: str | None = None  # None: sqlite:///<storage>/<name>/mlflow.db
    sampler_seed: int = 0  # Optuna TPE sampler seed
    # --- paper tables (docs/sweeps.md "Paper tables") -------------------------------------------
    search: str = "optuna"  # "optuna" (TPE) or "grid": every combination of the choices (or `points`)
    points: tuple[dict[str, Any], ...] = ()  # grid only: exactly these configurations, in this order
    seeds: int = 0  # > 0: stage "seeds" re-runs each method's best search configuration on this many seeds
    seeds_group_by: tuple[str, ...] = ()  # fields that split "each method" (e.g. model: best per model)
    stage: str = "search"  # the stage this spec runs: "search" or "seeds" (set by the driver)

    # ------------------------------------------------------------------------------------------
    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def labels(self) -> tuple[str, ...]:
        """The label methods this sweep can produce."""
        if "label" in self.space:
            return tuple(self.space["label"].values)
        return (self.fixed.get("label", TrainConfig.label),)

    def applies(self, name: str, label: str) -> bool:
        """Whether field `name` is used (sampled / applied) by trials with label method `label`."""
        allowed = self.only_for.get(name, CONDITIONAL.get(name))
        return allowed is None or label in allowed

    @property
    def storage_dir(self) -> str:
        """The storage root with `~` expanded; local paths made absolute (Ray wants absolute)."""
        if "://" in self.storage:
            return self.storage
        return os.path.abspath(os.path.expanduser(self.storage))

    @property
    def sweep_dir(self) -> str:
        return f"{self.storage_dir.rstrip('/')}/{self.name}"

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if "://" in self.storage:
            raise SpecError("tracking_uri", "required when storage is remote (e.g. http://<head>:5000)")
        return f"sqlite:///{self.sweep_dir}/mlflow.db"

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["space"] = {k: v.to_json() for k, v in self.space.items()}
        out["objectives"] = [str(o) for o in self.objectives]
        out["only_for"] = {k: list(v) for k, v in self.only_for.items()}
        out["warm_start"] = [dict(w) for w in self.warm_start]
        out["points"] = [dict(p) for p in self.points]
        out["seeds_group_by"] = list(self.seeds_group_by)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepSpec:
        data = dict(data)
        data["space"] = {k: Dimension.parse(k, v) for k, v in data.get("space", {}).items()}
        data["objectives"] = parse_objectives(",".join(data.get("objectives", [])) or "val_nll:min")
        data["only_for"] = {k: tuple(v) for k, v in data.get("only_for", {}).items()}
        data["warm_start"] = tuple(dict(w) for w in data.get("warm_start", ()))
        data["points"] = tuple(dict(p) for p in data.get("points", ()))
        data["seeds_group_by"] = tuple(data.get("seeds_group_by", ()))
        return cls(**data)

    @property
    def seed_values(self) -> tuple[int, ...]:
        """The seeds of stage "seeds": ``seeds`` consecutive seeds from the fixed seed (default 0)."""
        base = self.fixed.get("seed", TrainConfig.seed)
        return tuple(range(int(base), int(base) + self.seeds))


# ---------------------------------------------------------------------------------------------
def parse_objectives(text: str) -> tuple[Objective, ...]:
    """``"val_accuracy:max,val_ece_hist_output:min"`` -> objectives; a missing direction is inferred
    (accuracy is maximised, every other SPEC metric minimised)."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("objective", f"expected 'metric[:min|max][,...]', got {text!r}")
    out = []
    for part in text.split(","):
        metric, _, mode = part.strip().partition(":")
        metric = metric.strip()
        mode = (mode.strip() or ("max" if metric.endswith("accuracy") else "min")).lower()
        if metric not in VALID_OBJECTIVES:
            hint = _suggest(metric, VALID_OBJECTIVES)
            why = (
                " (test metrics are reported, never optimised)" if f"val_{metric}" in VALID_OBJECTIVES else ""
            )
            raise SpecError(
                "objective",
                f"unknown metric {metric!r}{hint}{why}; valid: {', '.join(VALID_OBJECTIVES)}",
            )
        if mode not in ("min", "max"):
            raise SpecError("objective", f"direction of {metric!r} must be 'min' or 'max', got {mode!r}")
        out.append(Objective(metric, mode))  # type: ignore[arg-type]
    if len({o.metric for o in out}) != len(out):
        raise SpecError("objective", f"a metric is listed twice in {text!r}")
    return tuple(out)


def parse_value(text: str) -> Any:
    """A command-line value: JSON/YAML scalars and lists (``0.1``, ``true``, ``[1, 2]``, ``{"a": 1}``),
    ``a,b,c`` -> a choice, ``lo..hi`` -> uniform, ``lo..hi:log`` -> loguniform, ``lo..hi:int`` -> int."""

    text = text.strip()
    if ".." in text and not text.startswith(("[", "{", "/", ".")):
        bounds, _, kind = text.partition(":")
        low, _, high = bounds.partition("..")
        lo, hi = _scalar(low), _scalar(high)
        if _is_number(lo) and _is_number(hi):
            kind = {"": "uniform", "log": "loguniform", "int": "int"}.get(kind.strip())
            if kind is None:
                raise SpecError("--set", f"range suffix must be ':log' or ':int', got {text!r}")
            return {kind: [lo, hi]}
    if "," in text and not text.startswith(("[", "{")):
        return {"choice": [_scalar(p) for p in text.split(",")]}
    return _scalar(text)


def _scalar(text: str) -> Any:
    import yaml

    text = text.strip()
    for number in (int, float):  # YAML 1.1 reads "1e-3" as a string
        try:
            return number(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.lower() not in ("null", "none", "~") else value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` strings to a raw preset dict (returns a new dict).

    A TrainConfig field (or ``confidence_source``) given a plain value becomes fixed (and leaves the
    search space); given a choice/range it becomes a search dimension. ``source_args.<src>.<arg>=v`` and
    ``model_args.<model>.<arg>=v`` set per-source / per-model arguments; other top-level sweep keys
    (``num_samples``, ``grace_period``, ...) are set directly.
    """
    out = json.loads(json.dumps(raw))  # deep copy of plain data
    out.setdefault("fixed", {})
    out.setdefault("space", {})
    user_keys: set[str] = set()
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise SpecError("--set", f"expected key=value, got {item!r}")
        key, _, text = item.partition("=")
        key = key.strip()
        value = parse_value(text)
        user_keys.add(key)
        if key.startswith(("source_args.", "model_args.")) and key.count(".") == 2:
            top, owner, arg = key.split(".")
            out.setdefault(top, {}).setdefault(owner, {})[arg] = value
        elif key in TrainConfig.field_names() or key in EXTRA_PARAMS:
            is_dim = isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DIMENSION_KINDS
            if is_dim and key not in ("model_args", "similarity_args"):
                out["space"][key] = value
                out["fixed"].pop(key, None)
            else:
                out["fixed"][key] = value
                out["space"].pop(key, None)
        elif key in _SWEEP_KEYS:
            out[key] = value
        elif key == "trial_scheduler":  # Tune's scheduler; `scheduler` is the TrainConfig LR schedule
            out["scheduler"] = value
        else:
            valid = sorted({*TrainConfig.field_names(), *EXTRA_PARAMS, *_SWEEP_KEYS, "trial_scheduler"})
            raise SpecError(key, f"unknown key{_suggest(key, valid)}; valid keys: {', '.join(valid)}")
    if "label" in user_keys:
        _prune_for_labels(out, user_keys)
    _prune_warm_start(out)
    _prune_points(out)
    return out


def _prune_points(out: dict[str, Any]) -> None:
    """A grid's explicit points after overrides: a key that is no longer searched (now fixed) is
    dropped from every point, a point naming a removed choice is dropped, duplicates are merged. So
    ``--set noise_rate=0.4,0.8`` narrows a table preset's grid. None left is an error."""
    if not out.get("points"):
        return
    kept = []
    for point in out["points"]:
        point = {k: v for k, v in point.items() if k in out["space"]}
        fits = all(
            v in out["space"][k]["choice"]
            for k, v in point.items()
            if isinstance(out["space"][k], dict) and "choice" in out["space"][k]
        )
        if point and fits and point not in kept:
            kept.append(point)
    if not kept:
        raise SpecError("points", "no point of the preset's grid fits the --set overrides")
    out["points"] = kept


def _prune_warm_start(out: dict[str, Any]) -> None:
    """Keep the preset's warm-start points that still fit the (overridden) space: a point naming a
    choice the user removed is dropped, keys that are no longer searched are dropped from a point."""
    kept = []
    for warm in out.get("warm_start", []):
        point = {k: v for k, v in warm.items() if k in out["space"]}
        fits = all(
            v in out["space"][k]["choice"]
            for k, v in point.items()
            if isinstance(out["space"][k], dict) and "choice" in out["space"][k]
        )
        if point and fits and point not in kept:
            kept.append(point)
    out["warm_start"] = kept


def _prune_for_labels(out: dict[str, Any], user_keys: set[str]) -> None:
    """After the user narrows the labels, drop the preset's settings that no remaining label uses
    (a user's own setting stays, so validation can name it: e.g. beta with one-hot)."""
    label = out["space"].get("label", {}).get("choice") or [out["fixed"].get("label", TrainConfig.label)]
    only_for = out.get("only_for", {})
    for section in ("fixed", "space"):
        for key in list(out[section]):
            allowed = only_for.get(key, CONDITIONAL.get(key))
            if key not in user_keys and allowed is not None and not set(label) & set(allowed):
                del out[section][key]


_SWEEP_KEYS: tuple[str, ...] = (
    "num_samples",
    "scheduler",
    "grace_period",
    "max_concurrent",
    "train_max_failures",
    "tune_max_failures",
    "sampler_seed",
    "search",
    "seeds",
    "seeds_group_by",
    "in_process",
    "workers_per_trial",
    "cpus_per_trial",
    "gpus_per_trial",
)


def build_spec(raw: Mapping[str, Any], **top: Any) -> SweepSpec:
    """Turn a raw (preset + overrides) dict into a validated `SweepSpec`; `top` overrides sweep keys."""
    raw = dict(raw)
    raw.update({k: v for k, v in top.items() if v is not None})
    known = {f.name for f in dataclasses.fields(SweepSpec)} | {"objective"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(
            unknown[0],
            f"unknown sweep key{_suggest(unknown[0], sorted(known))}; valid: {', '.join(sorted(known))}",
        )
    _absolute_paths(raw)
    objective = raw.pop("objective", None)
    objectives = parse_objectives(objective) if isinstance(objective, str) else raw.pop("objectives", None)
    space = {k: Dimension.parse(k, v) for k, v in dict(raw.pop("space", {})).items()}
    if not isinstance(raw.get("fixed", {}), Mapping):
        raise SpecError("fixed", f"expected a mapping of field -> value, got {raw.get('fixed')!r}")
    spec = SweepSpec(
        space=space,
        objectives=objectives if objectives else SweepSpec.objectives,
        only_for={k: tuple(v) for k, v in dict(raw.pop("only_for", {})).items()},
        warm_start=tuple(dict(w) for w in raw.pop("warm_start", ())),
        fixed=dict(raw.pop("fixed", {})),
        **raw,
    )
    spec = resolve_grid(spec)
    validate_spec(spec)
    return spec


SEARCH_KINDS: tuple[str, ...] = ("optuna", "grid")
STAGES: tuple[str, ...] = ("search", "seeds")


def resolve_grid(spec: SweepSpec) -> SweepSpec:
    """A grid sweep runs each grid point once: ``num_samples`` = the number of points, no warm start
    (Optuna's). Also makes ``points`` and ``seeds_group_by`` tuples (``--set seeds_group_by=model``)."""
    group_by = spec.seeds_group_by
    spec = dataclasses.replace(
        spec,
        seeds_group_by=(group_by,) if isinstance(group_by, str) else tuple(group_by),
        points=tuple(dict(p) if isinstance(p, Mapping) else p for p in spec.points),
    )
    if spec.search != "grid":
        return spec
    from sweeps.space import grid_points

    points = spec.points or tuple(grid_points(spec))
    return dataclasses.replace(spec, num_samples=max(len(points), 1), warm_start=())


def seeds_stage_spec(spec: SweepSpec, points: Sequence[Mapping[str, Any]]) -> SweepSpec:
    """The spec of stage "seeds": a grid of exactly ``points`` (each method's chosen configuration x
    `SweepSpec.seed_values`), ``seed`` a choice over those seeds (so the driver prepares every seed's
    data split and similarity matrices), no ASHA (every seed runs to the end), same name and tracking."""
    fixed = {k: v for k, v in spec.fixed.items() if k != "seed"}
    space = {**spec.space, "seed": Dimension("choice", spec.seed_values)}
    staged = dataclasses.replace(
        spec,
        fixed=fixed,
        space=space,
        search="grid",
        points=tuple(dict(p) for p in points),
        num_samples=max(len(points), 1),
        warm_start=(),
        scheduler="none",
        stage="seeds",
    )
    validate_spec(staged)
    return staged


def _check_stage_fields(spec: SweepSpec) -> None:
    """The paper-table fields: search kind, explicit grid points, the seeds stage."""
    if spec.search not in SEARCH_KINDS:
        raise SpecError("search", f"expected one of {', '.join(SEARCH_KINDS)}, got {spec.search!r}")
    if spec.stage not in STAGES:
        raise SpecError("stage", f"expected one of {', '.join(STAGES)}, got {spec.stage!r}")
    if spec.points and spec.search != "grid":
        raise SpecError("points", "explicit points need search 'grid' (--set search=grid)")
    names = {*TrainConfig.field_names(), *EXTRA_PARAMS}
    if isinstance(spec.seeds_group_by, str) or not all(isinstance(g, str) for g in spec.seeds_group_by):
        raise SpecError("seeds_group_by", f"expected a list of field names, got {spec.seeds_group_by!r}")
    for key in spec.seeds_group_by:
        if key not in names:
            raise SpecError("seeds_group_by", f"unknown field {key!r}{_suggest(key, sorted(names))}")
    if spec.seeds and spec.stage == "search":
        if "seed" in spec.space:
            raise SpecError(
                "seeds",
                "the search stage runs at one seed and stage 'seeds' picks the seeds: fix seed "
                "(--set seed=0) or drop --seeds",
            )
        if "://" in spec.storage:
            raise SpecError("seeds", "a two-stage sweep keeps its stage state in a local --storage folder")
    for i, point in enumerate(spec.points):
        if not isinstance(point, Mapping) or not point:
            raise SpecError(f"points.{i}", f"expected a non-empty mapping of param -> value, got {point!r}")
        for key, value in point.items():
            _check_point_value(f"points.{i}.{key}", spec, key, value)
    if spec.search == "grid":  # every configuration the grid will run must be a valid TrainConfig
        from sweeps.space import grid_points, train_config_dict

        for params in grid_points(spec):
            try:
                TrainConfig.from_dict(train_config_dict(spec, params), validate=False).validate(
                    check_registries=False
                )
            except (TypeError, ValueError) as err:
                raise SpecError("points", f"{err} (at {params})") from err


def _check_point_value(where: str, spec: SweepSpec, key: str, value: Any) -> None:
    if key not in spec.space:
        raise SpecError(where, "is not a search dimension of this sweep")
    dim = spec.space[key]
    if dim.kind == "choice":
        if value not in dim.values:
            raise SpecError(where, f"{value!r} is not one of {list(dim.values)!r}")
        return
    low, high = dim.values
    if not (_is_number(value) and low <= value <= high):
        raise SpecError(where, f"{value!r} is outside the searched [{low}, {high}]")


def _absolute_paths(raw: dict[str, Any]) -> None:
    """Make relative file paths absolute (from the current folder), in place.

    Trials do not run where the CLI was started (Tune moves each trial into its own folder, and on a
    cluster the workers start elsewhere), so ``../shared/data/...`` must be resolved here, once.
    """

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            return os.path.abspath(os.path.expanduser(value))
        return value

    fixed = raw.get("fixed")
    if isinstance(fixed, dict):
        for key in ("data_dir", "cache_dir"):
            if key in fixed:
                fixed[key] = absolute(fixed[key])
    space = raw.get("space")
    if isinstance(space, dict):
        for key in ("data_dir", "cache_dir"):
            dim = space.get(key)
            if isinstance(dim, dict) and isinstance(dim.get("choice"), list):
                dim["choice"] = [absolute(v) for v in dim["choice"]]
    source_args = raw.get("source_args")
    if isinstance(source_args, dict):
        for args in source_args.values():
            if isinstance(args, dict):
                for key in PATH_ARG_KEYS:
                    if key in args:
                        args[key] = absolute(args[key])


# ---------------------------------------------------------------------------------------------
def validate_spec(spec: SweepSpec) -> None:
    """Raise `SpecError` naming the field for anything wrong with `spec`. Cheap: no torch/Ray imports."""
    _check_sweep_fields(spec)
    _check_stage_fields(spec)
    names = {*TrainConfig.field_names(), *EXTRA_PARAMS}
    for section, keys in (("fixed", spec.fixed), ("space", spec.space), ("only_for", spec.only_for)):
        for key in keys:
            if key not in names:
                raise SpecError(
                    f"{section}.{key}",
                    f"unknown key{_suggest(key, sorted(names))}; valid keys: {', '.join(sorted(names))}",
                )
    overlap = set(spec.fixed) & set(spec.space)
    if overlap:
        raise SpecError(sorted(overlap)[0], "is both fixed and searched; give it one or the other")
    for key in ("label", "similarity", "confidence_source", "model"):
        if key in spec.space and spec.space[key].kind != "choice":
            raise SpecError(f"space.{key}", f"must be a choice, got {spec.space[key].kind}")
    for label in spec.labels:
        if label not in SWEEP_LABELS:
            raise SpecError(
                "label",
                f"unknown value {label!r}{_suggest(label, SWEEP_LABELS)}; valid: {', '.join(SWEEP_LABELS)}",
            )
    for key, labels in spec.only_for.items():
        bad = [lab for lab in labels if lab not in SWEEP_LABELS]
        if bad:
            raise SpecError(f"only_for.{key}", f"unknown label {bad[0]!r}; valid: {', '.join(SWEEP_LABELS)}")

    # A conditional field that no label of the sweep can use is a mistake (e.g. beta with one-hot).
    for key in [*spec.fixed, *spec.space]:
        if key == "label":
            continue
        if not any(spec.applies(key, lab) for lab in spec.labels):
            used_by = spec.only_for.get(key, CONDITIONAL.get(key, ()))
            raise SpecError(
                key,
                f"only applies to label {' or '.join(map(repr, used_by))}, but this sweep's label is "
                f"{' / '.join(map(repr, spec.labels))}",
            )
    for src in _values(spec, "confidence_source"):
        if src not in CONFIDENCE_SOURCES:
            raise SpecError(
                "confidence_source", f"must be one of {', '.join(CONFIDENCE_SOURCES)}, got {src!r}"
            )
    for src in _values(spec, "similarity"):
        if src in CONFIDENCE_SOURCES:
            raise SpecError(
                "similarity",
                f"{src!r} gives confidence scores; search it as confidence_source with label 'confidence'",
            )
    if "similarity" in spec.labels and not _values(spec, "similarity"):
        raise SpecError("similarity", "label 'similarity' needs a similarity source (e.g. l2, we)")
    if "confidence" in spec.labels and not _values(spec, "confidence_source"):
        raise SpecError(
            "confidence_source", "label 'confidence' needs a confidence source (pairs or predictions)"
        )

    # Every corner of the space must give a valid TrainConfig (names the field on failure).
    from sweeps.space import corner_configs, train_config_dict

    for params in corner_configs(spec):
        values = train_config_dict(spec, params)
        try:
            TrainConfig.from_dict(values, validate=False).validate(check_registries=False)
        except (TypeError, ValueError) as err:
            field_name = str(err).split(" ", 1)[0].rstrip(":")
            shown = {k: v for k, v in params.items()}
            raise SpecError(field_name if field_name in names else "config", f"{err} (at {shown})") from err
    for warm in spec.warm_start:
        for key, value in warm.items():
            if key not in spec.space:
                raise SpecError(f"warm_start.{key}", "is not a search dimension of this sweep")
            dim = spec.space[key]
            if dim.kind == "choice" and value not in dim.values:
                raise SpecError(f"warm_start.{key}", f"{value!r} is not one of {list(dim.values)!r}")
            if dim.kind != "choice":
                low, high = dim.values
                if not (_is_number(value) and low <= value <= high):
                    raise SpecError(f"warm_start.{key}", f"{value!r} is outside the searched [{low}, {high}]")
                if dim.kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
                    raise SpecError(f"warm_start.{key}", f"{value!r} is not an integer")
    _check_files(spec)


def _check_sweep_fields(spec: SweepSpec) -> None:
    if not isinstance(spec.name, str) or not spec.name or "/" in spec.name or spec.name.startswith("."):
        raise SpecError("name", f"expected a folder name (no '/'), got {spec.name!r}")
    for key, bound in SWEEP_BOUNDS.items():
        if not bound.contains(getattr(spec, key)):
            raise SpecError(key, f"expected {bound.describe()}, got {getattr(spec, key)!r}")
    if spec.scheduler not in SCHEDULER_CHOICES:
        raise SpecError(
            "scheduler", f"expected one of {', '.join(SCHEDULER_CHOICES)}, got {spec.scheduler!r}"
        )
    if spec.scheduler == "asha" and spec.multi_objective:
        raise SpecError(
            "scheduler", "ASHA stops trials on one metric; use --trial-scheduler none with several objectives"
        )
    if spec.gpus_per_trial > 1 and spec.gpus_per_trial != int(spec.gpus_per_trial):
        raise SpecError("gpus_per_trial", f"fractions only below 1 (packing), got {spec.gpus_per_trial}")
    if not isinstance(spec.in_process, bool):
        raise SpecError("in_process", f"expected true/false, got {spec.in_process!r}")
    if spec.in_process and spec.workers_per_trial > 1:
        raise SpecError("workers_per_trial", "in-process trials run one worker; use --train-workers for DDP")
    if not isinstance(spec.storage, str) or not spec.storage:
        raise SpecError("storage", f"expected a folder or s3:// URI, got {spec.storage!r}")
    if spec.tracking_uri is not None and not isinstance(spec.tracking_uri, str):
        raise SpecError("tracking_uri", f"expected a URI string, got {spec.tracking_uri!r}")
    for key in ("source_args", "model_args"):
        value = getattr(spec, key)
        if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
            raise SpecError(key, f"expected a mapping of name -> {{arg: value}}, got {value!r}")
    for i, obj in enumerate(spec.objectives):
        if not isinstance(obj, Objective) or obj.metric not in VALID_OBJECTIVES:
            raise SpecError("objective", f"entry {i} is not a validation metric: {obj!r}")


def _check_files(spec: SweepSpec) -> None:
    for data_dir in _values(spec, "data_dir"):
        if data_dir is not None and not os.path.exists(os.path.expanduser(str(data_dir))):
            raise SpecError("data_dir", f"no such file or folder: {data_dir!r} (from {os.getcwd()})")
    used_sources = set(_values(spec, "similarity")) | set(_values(spec, "confidence_source"))
    for source, args in spec.source_args.items():
        if source not in used_sources:
            continue
        for arg, value in args.items():
            if arg in PATH_ARG_KEYS and value is not None:
                if not isinstance(value, (str, os.PathLike)) or not Path(value).expanduser().exists():
                    raise SpecError(
                        f"source_args.{source}.{arg}", f"file not found: {value!r} (from {os.getcwd()})"
                    )
    if "we" in used_sources and not any(spec.source_args.get("we", {}).get(k) for k in ("vectors", "path")):
        raise SpecError(
            "source_args.we.vectors",
            "the word-embedding source needs a word-vector file (--set source_args.we.vectors=PATH)",
        )


# ---------------------------------------------------------------------------------------------
def _values(spec: SweepSpec, key: str) -> tuple[Any, ...]:
    if key in spec.space:
        return spec.space[key].values
    if key in spec.fixed:
        return (spec.fixed[key],)
    return ()


def _suggest(word: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, default=str)


def check_registries(spec: SweepSpec) -> None:
    """Check every dataset / model / loss / similarity-source key against the library's registries.

    Slower than `validate_spec` (the registries import torch, ~2-3 s) but still before Ray starts. A
    registry module that is not importable yet is skipped with a warning rather than failing the sweep.
    """
    import importlib
    import logging

    log = logging.getLogger(__name__)
    checks = (
        ("dataset", "simlab.data", "DATASETS"),
        ("model", "simlab.models", "MODELS"),
        ("loss", "simlab.losses", "LOSSES"),
        ("similarity", "simlab.similarity.sources", "SIMILARITIES"),
        ("confidence_source", "simlab.similarity.sources", "SIMILARITIES"),
    )
    for key, module, attr in checks:
        values = _values(spec, key)
        if not values and key in ("dataset", "model", "loss"):
            values = (getattr(TrainConfig, key),)
        if not values:
            continue
        try:
            registry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            log.warning("%s not checked: %s.%s is not importable (%s)", key, module, attr, err)
            continue
        for value in values:
            if value not in registry:
                raise SpecError(
                    key,
                    f"unknown value {value!r}{_suggest(str(value), list(registry))}; "
                    f"valid: {', '.join(map(str, registry))}",
                )
            kind = getattr(registry[value], "kind", None)
            if key in ("similarity", "confidence_source") and hasattr(registry[value], "defaults"):
                from simlab.similarity.sources import resolve_params

                try:
                    resolve_params(registry[value], spec.source_args.get(value, {}))
                except (TypeError, ValueError) as err:
                    raise SpecError(f"source_args.{value}", str(err)) from err
                _check_source_numbers(value, registry[value].defaults, spec.source_args.get(value, {}))
            if key == "similarity" and kind not in (None, "distance"):
                raise SpecError(
                    key, f"source {value!r} gives {kind} scores; label 'similarity' needs distances"
                )
    _check_model_args(spec)


def _check_source_numbers(source: str, defaults: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    """A source argument is a finite number, and an integer where its default is one (``epochs=inf``
    would otherwise fail inside the matrix computation, after Ray started)."""
    for arg, value in args.items():
        default = defaults.get(arg)
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"source_args.{source}.{arg}", f"expected a finite number, got {value!r}")
        int_default = isinstance(default, int) and not isinstance(default, bool)
        if int_default and value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
            raise SpecError(f"source_args.{source}.{arg}", f"expected an integer, got {value!r}")


def _check_model_args(spec: SweepSpec) -> None:
    """``model_args`` against each model's builder signature (keys, annotated types, its own checks)."""
    from simlab.models import MODELS, check_model_args

    for model in spec.model_args:
        if model not in MODELS:
            raise SpecError(
                f"model_args.{model}",
                f"unknown model{_suggest(str(model), list(MODELS))}; valid: {', '.join(MODELS)}",
            )
    fixed_args = spec.fixed.get("model_args") or {}
    for model in _values(spec, "model") or (TrainConfig.model,):
        if model not in MODELS:
            continue  # named by the registry check above
        try:
            check_model_args(model, {**spec.model_args.get(model, {}), **fixed_args})
        except ValueError as err:
            raise SpecError(str(err).split(":", 1)[0], str(err)) from err  # the message names the entry


def check_word_vectors(spec: SweepSpec) -> None:
    """Every class name of the sweep's dataset(s) must resolve to words of the ``we`` vector file.

    Reads only the class names (a constant list or a zip's / folder's class-folder listing; other
    datasets are checked when the matrix is computed: their names need the data, and reading
    torchvision's pickled CIFAR-100 meta here would unpickle a file) and the vector file's vocabulary
    (first token per line), so a missing word is reported before any image is decoded;
    `simlab.word_vectors.check_vocabulary` applies the same rules (and ``mapping``) as the distance
    computation.
    """
    import logging

    if "we" not in _values(spec, "similarity"):
        return
    from simlab.similarity.word_vectors import MissingWordsError, check_vocabulary

    args = spec.source_args.get("we", {})
    datasets = _values(spec, "dataset") or (TrainConfig.dataset,)
    data_dirs = _values(spec, "data_dir") or (None,)
    for dataset in datasets:
        for data_dir in data_dirs:
            names = _dataset_class_names(dataset, data_dir)
            if names is None:
                logging.getLogger(__name__).warning(
                    "class names of %s (%s) not known before decoding: word vectors checked later",
                    dataset,
                    data_dir,
                )
                continue
            try:
                check_vocabulary(names, args.get("vectors"), mapping=args.get("mapping"))
            except MissingWordsError as err:
                raise SpecError("source_args.we.vectors", str(err)) from err
            except (TypeError, ValueError, OSError) as err:
                raise SpecError("source_args.we", str(err)) from err


def _dataset_class_names(dataset: str, data_dir: str | None) -> list[str] | None:
    """Class names without decoding images; None when that needs the data itself."""
    import zipfile

    path = Path(os.path.expanduser(data_dir)) if data_dir else None
    if dataset in ("cifar10", "cifar100", "imagefolder") and path is not None and path.exists():
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                parts = (name.split("/") for name in zf.namelist())
                names = {
                    p[p.index("train") + 1]
                    for p in parts
                    if "train" in p[:-1] and p.index("train") + 2 <= len(p) - 1
                }
        else:
            train = next((d for d in (path / "train", *path.glob("*/train")) if d.is_dir()), None)
            names = {d.name for d in train.iterdir() if d.is_dir()} if train else set()
        if names:
            return sorted(names)
    from simlab.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES

    known = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
    return list(known[dataset]) if dataset in known else None
