"""The sweep specification: what a sweep trains, searches, optimises and where it writes.

The schema: `SweepSpec` with its `Dimension`s and `Objective`s, `SpecError`, the sweep's own keys and
their ranges. A spec is resolved from a preset (`sweeps.presets.PRESETS`) plus `--set` overrides
(`sweeps.overrides`) and validated by `sweeps.validation.build_spec` *before* Ray, torch or MLflow are
imported; registry keys and word vectors need the torch-backed registries (`sweeps.registry_checks`).

Which label method uses which TrainConfig field is the config's field metadata
(`simlab.config.FIELD_METHODS`), narrowed per sweep by ``only_for``: `used_by` / `SweepSpec.applies`.

Search dimensions are plain data so presets stay declarative:
``{"choice": [...]}``, ``{"uniform": [low, high]}``, ``{"loguniform": [low, high]}``,
``{"int": [low, high]}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from simlab._validate import did_you_mean
from simlab.config import FIELD_METHODS, INT32_MAX, Bound, TrainConfig
from simlab.metric_names import METRIC_NAMES, SIGNED_METRICS

# SPEC §6 metric names; the objective must be one of them on the validation split (not a signed one).
VALID_OBJECTIVES: tuple[str, ...] = tuple(f"val_{m}" for m in METRIC_NAMES if m not in SIGNED_METRICS)
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


SEARCH_KINDS: tuple[str, ...] = ("optuna", "grid")
STAGES: tuple[str, ...] = ("search", "seeds")


def used_by(name: str, only_for: Mapping[str, Sequence[str]]) -> Sequence[str] | None:
    """The methods (`simlab.config.METHODS`) that use field `name`: a sweep's ``only_for`` entry, else
    the field's `applies_to` metadata; None = every method."""
    return only_for.get(name, FIELD_METHODS.get(name))


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
            if len(values) != 2 or not all(is_number(v) and math.isfinite(v) for v in values):
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
    fixed: dict[str, Any] = field(default_factory=dict)  # TrainConfig field -> value
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
        allowed = used_by(name, self.only_for)
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
        if metric.removeprefix("val_") in SIGNED_METRICS:
            raise SpecError(
                "objective",
                f"{metric!r} is signed (> 0 over-confident, < 0 under-confident): minimising it rewards "
                "under-confidence; optimise a calibration error instead, e.g. val_ece_hist_prediction",
            )
        if metric not in VALID_OBJECTIVES:
            hint = did_you_mean(metric, VALID_OBJECTIVES)
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


# ---------------------------------------------------------------------------------------------
def values_of(spec: SweepSpec, key: str) -> tuple[Any, ...]:
    """The values `key` takes in the sweep: its searched choices / range ends, its fixed value, or ()."""
    if key in spec.space:
        return spec.space[key].values
    if key in spec.fixed:
        return (spec.fixed[key],)
    return ()


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, default=str)
