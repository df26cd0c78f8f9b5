"""``--set key=value`` overrides of a raw sweep dict (a preset or a ``--config`` file).

`parse_value` reads one command-line value (scalars, ``a,b,c`` choices, ``lo..hi[:log|:int]`` ranges);
`apply_overrides` applies them, then drops the preset's settings that no longer fit: those no remaining
label method uses (`sweeps.spec.used_by`), warm-start points and grid points outside the new space.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from simlab._validate import did_you_mean
from simlab.config import TrainConfig
from sweeps.spec import DIMENSION_KINDS, SpecError, is_number, used_by

# Top-level sweep keys `--set` may set directly (``trial_scheduler`` is Tune's `scheduler`).
SWEEP_KEYS: tuple[str, ...] = (
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

# Dict-valued TrainConfig fields set one option at a time: ``--set dataset_args.image_size=32`` (fixed).
OPTION_FIELDS: tuple[str, ...] = ("dataset_args", "ood_dataset_args")


def parse_value(text: str) -> Any:
    """A command-line value: JSON/YAML scalars and lists (``0.1``, ``true``, ``[1, 2]``, ``{"a": 1}``),
    ``a,b,c`` -> a choice, ``lo..hi`` -> uniform, ``lo..hi:log`` -> loguniform, ``lo..hi:int`` -> int."""

    text = text.strip()
    if ".." in text and not text.startswith(("[", "{", "/", ".")):
        bounds, _, kind = text.partition(":")
        low, _, high = bounds.partition("..")
        lo, hi = _scalar(low), _scalar(high)
        if is_number(lo) and is_number(hi):
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

    A TrainConfig field given a plain value becomes fixed (and leaves the
    search space); given a choice/range it becomes a search dimension. ``source_args.<src>.<arg>=v`` and
    ``model_args.<model>.<arg>=v`` set per-source / per-model arguments, ``dataset_args.<arg>=v`` and
    ``ood_dataset_args.<arg>=v`` one fixed option of the dataset loaders; other top-level sweep keys
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
        elif key.count(".") == 1 and key.split(".")[0] in OPTION_FIELDS:
            top, arg = key.split(".")
            fixed = out["fixed"].get(top)
            out["fixed"][top] = {**(fixed if isinstance(fixed, dict) else {}), arg: value}
            out["space"].pop(top, None)
        elif key in TrainConfig.field_names():
            is_dim = isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DIMENSION_KINDS
            if is_dim and key not in ("model_args", "similarity_args", *OPTION_FIELDS):
                out["space"][key] = value
                out["fixed"].pop(key, None)
            else:
                out["fixed"][key] = value
                out["space"].pop(key, None)
        elif key in SWEEP_KEYS:
            out[key] = value
        elif key == "trial_scheduler":  # Tune's scheduler; `scheduler` is the TrainConfig LR schedule
            out["scheduler"] = value
        else:
            valid = sorted({*TrainConfig.field_names(), *SWEEP_KEYS, "trial_scheduler"})
            raise SpecError(key, f"unknown key{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}")
    if "label" in user_keys:
        _prune_for_labels(out, user_keys)
    # The preset's warm-start and grid points that still fit the (overridden) space. So
    # ``--set noise_rate=0.4,0.8`` narrows a table preset's grid; a grid with no point left is an error.
    out["warm_start"] = _fitting_points(out.get("warm_start", []), out["space"])
    if out.get("points"):
        out["points"] = _fitting_points(out["points"], out["space"])
        if not out["points"]:
            raise SpecError("points", "no point of the preset's grid fits the --set overrides")
    return out


def _fitting_points(points: Sequence[dict[str, Any]], space: dict[str, Any]) -> list[dict[str, Any]]:
    """`points` after overrides: keys no longer searched (now fixed) are dropped from each point, a
    point naming a removed choice is dropped, empty points and duplicates are dropped."""
    kept = []
    for point in points:
        point = {k: v for k, v in point.items() if k in space}
        fits = all(
            v in space[k]["choice"]
            for k, v in point.items()
            if isinstance(space[k], dict) and "choice" in space[k]
        )
        if point and fits and point not in kept:
            kept.append(point)
    return kept


def _prune_for_labels(out: dict[str, Any], user_keys: set[str]) -> None:
    """After the user narrows the labels, drop the preset's settings that no remaining label uses
    (a user's own setting stays, so validation can name it: e.g. beta with one-hot)."""
    label = out["space"].get("label", {}).get("choice") or [out["fixed"].get("label", TrainConfig.label)]
    only_for = out.get("only_for", {})
    for section in ("fixed", "space"):
        for key in list(out[section]):
            allowed = used_by(key, only_for)
            if key not in user_keys and allowed is not None and not set(label) & set(allowed):
                del out[section][key]
