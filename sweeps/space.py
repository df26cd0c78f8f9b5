"""The Optuna define-by-run search space of a sweep, and the one mapping from a trial's parameters to
a `TrainConfig` dict.

Conditional dimensions (the config's field metadata `simlab.config.FIELD_METHODS`, narrowed by a
preset's `only_for`: `SweepSpec.applies`): β is sampled only for similarity labels (paper A eq. 17),
relaxation and the confidence source only for confidence labels (paper B eq. 1-3, 9), α only where
labels are smoothed (paper A eq. 18), the mixup coefficient only for the mixup baseline. A parameter
that a trial's label does not use is never suggested, so Optuna's sampler history holds only
parameters that influenced the trial.

No torch / Ray / Optuna imports at module level: the CLI validates a spec through this module in
well under a second.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from simlab.config import TrainConfig, method_values
from sweeps.spec import Dimension, SpecError, SweepSpec

if TYPE_CHECKING:
    import optuna


def define_by_run(trial: optuna.trial.BaseTrial, spec: SweepSpec) -> dict[str, Any] | None:
    """Suggest one trial's parameters (only the searched ones; `spec.fixed` holds the rest).

    Works with a real `optuna.Trial`, Ray's suggest-captor around one, or `optuna.trial.FixedTrial`.
    """
    if "label" in spec.space:
        label = _suggest(trial, "label", spec.space["label"])
    else:
        label = spec.fixed.get("label", TrainConfig.label)
    for name, dim in spec.space.items():
        if name != "label" and spec.applies(name, label):
            _suggest(trial, name, dim)
    return None


def make_space(spec: SweepSpec) -> Callable[[Any], dict[str, Any] | None]:
    """The define-by-run callable for `OptunaSearch(space=...)` (picklable: Tune checkpoints it)."""
    return functools.partial(define_by_run, spec=spec)


def _suggest(trial: Any, name: str, dim: Dimension) -> Any:
    if dim.kind == "choice":
        return trial.suggest_categorical(name, list(dim.values))
    low, high = dim.values
    if dim.kind == "int":
        return trial.suggest_int(name, int(low), int(high))
    return trial.suggest_float(name, float(low), float(high), log=dim.kind == "loguniform")


def train_config_dict(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Fixed values + a trial's searched `params` -> the dict `TrainConfig.from_dict` takes.

    Parameters a trial's label does not use are dropped (they keep TrainConfig's defaults); the label
    is a method (`simlab.config.METHODS`: ``mixup`` is one-hot labels with mixup > 0, see
    `simlab.config.method_values`), and per-source / per-model arguments are attached.
    """
    merged = {**spec.fixed, **params}
    label = merged.get("label", TrainConfig.label)
    values = method_values(label)
    for key, value in merged.items():
        if key != "label" and spec.applies(key, label):
            values[key] = value
    source = values.get("similarity", values.get("confidence_source"))
    if source is not None and spec.source_args.get(source):
        values["similarity_args"] = {**spec.source_args[source], **values.get("similarity_args", {})}
    model = values.get("model", TrainConfig.model)
    if spec.model_args.get(model):
        values["model_args"] = {**spec.model_args[model], **values.get("model_args", {})}
    return values


def method_name(params: dict[str, Any], spec: SweepSpec | None = None) -> str:
    """A short name of a trial's label method for tables: ``onehot``, ``uniform``, ``mixup``,
    ``similarity:l2``, ``confidence:pairs`` (from searched params, falling back to fixed values)."""
    merged = {**(spec.fixed if spec else {}), **params}
    label = merged.get("label", TrainConfig.label)
    if label == "similarity":
        return f"similarity:{merged.get('similarity')}"
    if label == "confidence":
        return f"confidence:{merged.get('confidence_source', merged.get('similarity'))}"
    return str(label)


def corner_configs(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Parameter sets that touch every choice and both ends of every range, per label method: a
    base point (each dimension's first corner) and every one-dimension variation of it. Validating
    these catches out-of-range bounds and incompatible choices before any trial starts."""
    for label in spec.labels:
        dims = {
            name: dim.corners()
            for name, dim in spec.space.items()
            if name != "label" and spec.applies(name, label)
        }
        base = {name: corners[0] for name, corners in dims.items()}
        if "label" in spec.space:
            base["label"] = label
        yield dict(base)
        for name, corners in dims.items():
            for value in itertools.islice(corners, 1, None):
                yield {**base, name: value}


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every configuration of a grid sweep (``search: grid``), in a fixed order: per label method (in
    the order of the ``label`` choice), the product of the choices of the dimensions that label uses
    (`SweepSpec.applies`), the first dimension varying slowest. ``spec.points``, when given, replace
    the product. A range dimension that some label uses is a `SpecError` naming it: a grid needs
    choices."""
    if spec.points:
        return [dict(p) for p in spec.points]
    out: list[dict[str, Any]] = []
    for label in spec.labels:
        names = [n for n in spec.space if n != "label" and spec.applies(n, label)]
        for name in names:
            if spec.space[name].kind != "choice":
                raise SpecError(
                    f"space.{name}",
                    f"search 'grid' needs choices, got a {spec.space[name].kind} range "
                    f"(e.g. --set {name}=a,b,c)",
                )
        for combo in itertools.product(*(spec.space[n].values for n in names)):
            point = dict(zip(names, combo, strict=True))
            if "label" in spec.space:
                point = {"label": label, **point}
            if point not in out:
                out.append(point)
    return out
