"""Experiment tracking behind a small interface, so training code never asks "is MLflow on?".

`simlab.train.fit` logs through a `Tracker`; the default does nothing. The MLflow implementation lives
in `sweeps/` (a thin adapter), keeping `simlab` free of Ray and MLflow imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


class NullTracker:
    """Does nothing: the default for `fit`, and what non-zero DDP ranks use."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model_args": {"depth": 28}}`` -> ``{"model_args.depth": 28}``: a config as flat tracker params
    (what `simlab.train.fit` logs, and what `sweeps.reuse` compares)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value
    return out
