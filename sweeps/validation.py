"""Resolving and validating a sweep spec: `build_spec` turns a raw (preset + overrides) dict into a
`SweepSpec` and `validate_spec` checks it, cheaply (no torch / Ray / MLflow imports): unknown keys (with
suggestions), ranges, incompatible choices (β without similarity labels, relaxation without confidence
labels, ...: the config's field metadata), the objective (validation metrics only: trials are selected
on the validation split, test metrics are reported, never optimised), that every corner of the search
space and every grid point is a valid `TrainConfig`, and that data / word-vector files exist.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simlab._validate import did_you_mean
from simlab.config import METHODS, TrainConfig
from sweeps.space import corner_configs, grid_points, train_config_dict
from sweeps.spec import (
    PATH_ARG_KEYS,
    SCHEDULER_CHOICES,
    SEARCH_KINDS,
    STAGES,
    SWEEP_BOUNDS,
    VALID_OBJECTIVES,
    Dimension,
    Objective,
    SpecError,
    SweepSpec,
    is_number,
    parse_objectives,
    used_by,
    values_of,
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
            f"unknown sweep key{did_you_mean(unknown[0], sorted(known))}; valid: {', '.join(sorted(known))}",
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
    names = set(TrainConfig.field_names())
    if isinstance(spec.seeds_group_by, str) or not all(isinstance(g, str) for g in spec.seeds_group_by):
        raise SpecError("seeds_group_by", f"expected a list of field names, got {spec.seeds_group_by!r}")
    for key in spec.seeds_group_by:
        if key not in names:
            raise SpecError("seeds_group_by", f"unknown field {key!r}{did_you_mean(key, sorted(names))}")
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
        for params in grid_points(spec):
            try:
                TrainConfig.from_dict(train_config_dict(spec, params), validate=False).validate()
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
    if not (is_number(value) and low <= value <= high):
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
        for key in ("data_dir", "cache_dir", "ood_data_dir"):
            if key in fixed:
                fixed[key] = absolute(fixed[key])
    space = raw.get("space")
    if isinstance(space, dict):
        for key in ("data_dir", "cache_dir", "ood_data_dir"):
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
    names = set(TrainConfig.field_names())
    for section, keys in (("fixed", spec.fixed), ("space", spec.space), ("only_for", spec.only_for)):
        for key in keys:
            if key not in names:
                raise SpecError(
                    f"{section}.{key}",
                    f"unknown key{did_you_mean(key, sorted(names))}; valid keys: {', '.join(sorted(names))}",
                )
    overlap = set(spec.fixed) & set(spec.space)
    if overlap:
        raise SpecError(sorted(overlap)[0], "is both fixed and searched; give it one or the other")
    for key in ("label", "similarity", "confidence_source", "model"):
        if key in spec.space and spec.space[key].kind != "choice":
            raise SpecError(f"space.{key}", f"must be a choice, got {spec.space[key].kind}")
    for label in spec.labels:
        if label not in METHODS:
            raise SpecError(
                "label", f"unknown value {label!r}{did_you_mean(label, METHODS)}; valid: {', '.join(METHODS)}"
            )
    for key, labels in spec.only_for.items():
        bad = [lab for lab in labels if lab not in METHODS]
        if bad:
            raise SpecError(f"only_for.{key}", f"unknown label {bad[0]!r}; valid: {', '.join(METHODS)}")

    # A conditional field that no label of the sweep can use is a mistake (e.g. beta with one-hot).
    for key in [*spec.fixed, *spec.space]:
        if key == "label":
            continue
        if not any(spec.applies(key, lab) for lab in spec.labels):
            methods = used_by(key, spec.only_for) or ()
            raise SpecError(
                key,
                f"only applies to label {' or '.join(map(repr, methods))}, but this sweep's label is "
                f"{' / '.join(map(repr, spec.labels))}",
            )

    # Every corner of the space must give a valid TrainConfig (names the field on failure): the config's
    # own rules (a similarity label needs a distance source and beta, a confidence label a confidence
    # source, ...) are checked there, once.
    for params in corner_configs(spec):
        values = train_config_dict(spec, params)
        try:
            TrainConfig.from_dict(values, validate=False).validate()
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
                if not (is_number(value) and low <= value <= high):
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
    for data_dir in values_of(spec, "data_dir"):
        if data_dir is not None and not os.path.exists(os.path.expanduser(str(data_dir))):
            raise SpecError("data_dir", f"no such file or folder: {data_dir!r} (from {os.getcwd()})")
    for ood_dir in values_of(spec, "ood_data_dir"):
        if ood_dir is not None and not os.path.exists(os.path.expanduser(str(ood_dir))):
            raise SpecError("ood_data_dir", f"no such file or folder: {ood_dir!r} (from {os.getcwd()})")
    used_sources = set(values_of(spec, "similarity")) | set(values_of(spec, "confidence_source"))
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
