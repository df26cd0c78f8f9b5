"""What a trial is given: the sweep context, its `TrainConfig` and its similarity matrix.

The driver hands every trial a `TrialContext` (plain data) and the similarity matrices it computed once
(key -> float64 ``[K, K]``) through `tune.with_parameters`, i.e. Ray's object store. `matrix_key` names a
matrix by everything it depends on, computed identically by the driver and the trials; `DATA_FIELDS`
are the config fields that fix the data split, read by `matrix_key`, the in-process trainable's data
cache and the driver.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from simlab.config import TrainConfig
from sweeps.space import train_config_dict
from sweeps.spec import SweepSpec

# Fields the data split (and so a pixel-distance matrix) depends on: fixed or choices, never ranges.
DATA_FIELDS: tuple[str, ...] = (
    "dataset",
    "data_dir",
    "cache_dir",
    "val_fraction",
    "subset_per_class",
    "seed",
    "dataset_args",
)
# ... and the source a similarity matrix is computed from (`TrainConfig.source`: the distance source of
# similarity labels or the score source of confidence labels), with its arguments.
SOURCE_FIELDS: tuple[str, ...] = ("source", "similarity_args")


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs to know about its sweep (plain data: goes through Ray's object store)."""

    spec: dict[str, Any]  # SweepSpec.to_json()
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    spool_root: str  # local folder (per node) where MLflow calls wait during an outage
    reuse: list[dict[str, str]] = field(default_factory=list)  # `sweeps.reuse.ReuseSource.to_dict()`s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_spec(ctx: Mapping[str, Any]) -> SweepSpec:
    """The sweep spec of a trial's context (`TrialContext.to_dict()`)."""
    return SweepSpec.from_json(ctx["spec"])


def trial_config(config: Mapping[str, Any], ctx: Mapping[str, Any]) -> tuple[SweepSpec, TrainConfig]:
    """The sweep spec and the validated `TrainConfig` of a trial's Tune ``config``."""
    spec = trial_spec(ctx)
    return spec, TrainConfig.from_dict(train_config_dict(spec, dict(config)))


def data_key(cfg: TrainConfig) -> str:
    """The key of a config's data split: its `DATA_FIELDS`, with the cache folder resolved (an unset
    ``cache_dir`` means the environment's default). Equal keys load the same `ImageData`."""
    values = [str(cfg.resolved_cache_dir) if n == "cache_dir" else getattr(cfg, n) for n in DATA_FIELDS]
    return json.dumps(values, default=str)


def matrix_key(cfg_values: Mapping[str, Any]) -> str | None:
    """The key of the similarity matrix a trial config needs (None: it needs none).

    It covers everything the matrix depends on: the data split (`DATA_FIELDS`: dataset, files,
    validation fraction, subset, seed) and the source with its arguments (`SOURCE_FIELDS`). Computed
    identically by the driver and trials.
    """
    from simlab.targets import needs_source_matrix  # imports torch

    cfg = cfg_values if isinstance(cfg_values, TrainConfig) else TrainConfig.from_dict(dict(cfg_values))
    if not needs_source_matrix(cfg):
        return None
    parts = {name: getattr(cfg, name) for name in SOURCE_FIELDS}
    return json.dumps({"data": data_key(cfg), **parts}, sort_keys=True, default=str)


def lookup_matrix(cfg: TrainConfig, matrices: Mapping[str, Any]) -> Any:
    """The trial's similarity matrix from the driver's ``matrices`` (None: the config needs none)."""
    key = matrix_key(cfg)
    if key is None:
        return None
    if key not in matrices:
        # The driver computes every matrix a trial can need before the first trial; a miss is a bug.
        raise KeyError(f"matrices: no similarity matrix for {key}; the driver computed {sorted(matrices)}")
    # Arrays from Ray's object store are read-only views; a [K, K] copy is cheap and safe to hand to torch.
    import numpy as np  # only where a matrix is used: the driver's CLI path stays light

    return np.array(matrices[key], copy=True)
