"""Constants and helpers shared by test modules (``from tests.support import ...``); no tests here.

Fixtures live in ``tests/conftest.py``; fault-test machinery (servers, sweeps in subprocesses) in
``tests/faults/helpers.py``. A test module never imports another test module: what two of them share
comes from here.

- `TINY`: the tiny training config (digits, 8 images per class, an 8-channel small CNN, fp32): about a
  second per epoch on 2 cores.
- `TINY_SYNTHETIC` / `TINY_SYNTHETIC_DATA` / `tiny_synthetic_data`: the fault tests' training config on
  a 4-class synthetic dataset (``tests/faults/fit_child.py`` trains it in a child process).
- `TinyData` / `tiny_data`: a few seeded uint8 images per class with the `simlab.data.ImageData`
  fields a similarity source reads.
- `RecordingTracker`: a `simlab.tracking.Tracker` that keeps every call.
- `sweep_store` / `log_run`: an MLflow store with a sweep run, and its finished trial runs logged by
  hand, as a sweep would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

TINY: dict[str, Any] = dict(
    dataset="digits",
    subset_per_class=8,
    epochs=2,
    batch_size=16,
    lr=0.05,
    model_args={"width": 8},
    recalibrate=False,
    seed=0,
    precision="fp32",  # the same numbers on every CPU (auto may pick bf16)
)

TINY_SYNTHETIC_DATA: dict[str, int] = {
    "num_classes": 4,
    "num_superclasses": 2,
    "samples_per_class": 24,
    "test_samples_per_class": 8,
    "image_size": 16,
}

TINY_SYNTHETIC: dict[str, Any] = {
    "dataset": "synthetic",
    "model": "small_cnn",
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.05,
    "device": "cpu",
    "amp": False,
    "channels_last": False,
    "augment": True,
    "val_fraction": 0.25,
    "seed": 0,
}


def tiny_synthetic_data(cache_dir: str, seed: int = 0):
    """The `TINY_SYNTHETIC_DATA` dataset split as `TINY_SYNTHETIC` splits it."""
    from simlab.data import load_dataset

    return load_dataset(
        "synthetic",
        cache_dir=cache_dir,
        val_fraction=TINY_SYNTHETIC["val_fraction"],
        seed=seed,
        **TINY_SYNTHETIC_DATA,
    )


@dataclass
class TinyData:
    """The fields of `simlab.data.ImageData` that sources read (train split only)."""

    class_names: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    identity: str = "tiny"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def tiny_data(class_names=("cat", "dog", "horse"), per_class=(5, 7, 4), size=4, seed=0) -> TinyData:
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for k, n in enumerate(per_class):
        # class-dependent brightness so the classes really differ
        base = torch.randint(0, 256, (n, 3, size, size), generator=g)
        xs.append(((base + 60 * k) % 256).to(torch.uint8))
        ys.append(torch.full((n,), k, dtype=torch.long))
    perm = torch.randperm(sum(per_class), generator=g)  # classes interleaved, as in a real dataset
    return TinyData(list(class_names), torch.cat(xs)[perm], torch.cat(ys)[perm])


class RecordingTracker:
    """A `simlab.tracking.Tracker` that keeps every call, to see what reached tracking."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.artifacts: list[str] = []
        self.tags: list[dict[str, Any]] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.append(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(str(path))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.append(dict(tags))


def sweep_store(folder: Path, experiment: str) -> tuple[str, Any, str, str]:
    """A sqlite MLflow store in ``folder`` with ``experiment`` and one sweep (parent) run, as a sweep
    leaves it: ``(tracking uri, MlflowClient, experiment id, parent run id)``; add trials with `log_run`."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment(experiment, artifact_location=str(folder / "artifacts"))
    parent = client.create_run(exp_id, tags={"simlab.role": "sweep"}).info.run_id
    return uri, client, exp_id, parent


def log_run(client, exp_id, parent, method, params, metrics, probs=None, tmp=None, status="FINISHED") -> str:
    """A trial run of ``method`` under the sweep run ``parent``: its params, its metrics at step 1, and
    with ``probs=(probs, labels)`` a ``test_probs.npz`` artifact (written under ``tmp``); returns its id."""
    run = client.create_run(
        exp_id, tags={"mlflow.parentRunId": parent, "simlab.role": "trial", "simlab.method": method}
    )
    rid = run.info.run_id
    for k, v in params.items():
        client.log_param(rid, k, v)
    for k, v in metrics.items():
        client.log_metric(rid, k, v, step=1)
    if probs is not None:
        path = Path(tmp) / rid / "test_probs.npz"
        path.parent.mkdir(parents=True)
        np.savez(path, probs=probs[0], labels=probs[1])
        client.log_artifact(rid, str(path))
    client.set_terminated(rid, status)
    return rid
