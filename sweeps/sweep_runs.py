"""The sweep's MLflow records, from the driver's side: provenance and spec of the parent run, trial runs
Tune left RUNNING closed by what Tune says of their trial, runs of lost trials retired, dataset inputs
and the best trial's model after the sweep, and the summary artifacts.

(Opening, tagging and closing runs themselves is `sweeps.tracking`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from simlab.config import TrainConfig
from sweeps.provenance import entry_point, provenance_tags
from sweeps.space import train_config_dict
from sweeps.spec import SweepSpec
from sweeps.stops import INTERRUPTED_TAG
from sweeps.storage import SPEC_FILE, write_storage_text
from sweeps.summary import SweepSummary, summary_table
from sweeps.tracking import FAILURE_TAG, KEY_TAG, delete_orphan_runs, run_tag
from sweeps.trial_context import data_key
from sweeps.trial_runs import STOPPED_TAG

logger = logging.getLogger(__name__)


def provenance() -> dict[str, str]:
    """Git commit + dirty flag, user, entry point, package versions, CPU/GPU (`sweeps.provenance`)."""
    return provenance_tags(entry_point())


def log_spec_artifact(parent: Any, spec: SweepSpec) -> None:
    """The resolved sweep spec as the parent run's ``sweep_spec.json`` artifact, from the start."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SPEC_FILE
        path.write_text(json.dumps(spec.to_json(), indent=2, default=str))
        parent.log_artifact(path)
        parent.flush(timeout=30)


def _dataset_entity(data: Any) -> Any:
    """An MLflow dataset input of a split dataset: name, digest of its identity, split sizes."""
    digest = hashlib.sha256(data.identity.encode()).hexdigest()[:10]
    profile = {
        "train": int(len(data.train_y)),
        "val": int(len(data.val_y)),
        "test": int(len(data.test_y)),
        "classes": int(data.num_classes),
        "image_shape": list(data.image_shape),
    }
    return Dataset(
        name=data.name,
        digest=digest,
        source_type="simlab",
        source=json.dumps({"identity": data.identity}),
        profile=json.dumps(profile),
    )


def log_inputs_and_best_model(spec: SweepSpec, grid: Any, summary: SweepSummary) -> None:
    """Dataset inputs on the parent and every trial run; the best trial's model as an MLflow model.

    Best effort after the sweep: a failure here is logged, never fails a finished sweep.
    """
    try:
        _log_dataset_inputs(spec, summary)
    except Exception:  # noqa: BLE001
        logger.exception("could not log the dataset inputs to MLflow")
    if summary.best and not spec.multi_objective:
        try:
            _log_best_model(spec, grid, summary)
        except Exception:  # noqa: BLE001
            logger.exception("could not log the best trial's model to MLflow")


def _trial_config(spec: SweepSpec, row: Mapping[str, Any]) -> Any:
    return TrainConfig.from_dict(train_config_dict(spec, dict(row["params"])))


def _trial_runs(tracking_uri: str, experiment_id: str) -> dict[str, str]:
    runs = MlflowClient(tracking_uri).search_runs(
        [experiment_id], filter_string="tags.`simlab.role` = 'trial'", max_results=50000
    )
    return {run_tag(r.data.tags, KEY_TAG) or "": r.info.run_id for r in runs}


def _log_dataset_inputs(spec: SweepSpec, summary: SweepSummary) -> None:
    from simlab.data import load_split  # torch: imported when the sweep is over

    client = MlflowClient(summary.tracking_uri)
    runs = _trial_runs(summary.tracking_uri, summary.experiment_id)
    entities: dict[str, Any] = {}
    logged_parent: set[str] = set()
    for row in summary.rows:
        cfg = _trial_config(spec, row)
        key = data_key(cfg)
        if key not in entities:
            entities[key] = _dataset_entity(load_split(cfg))
        inputs = [DatasetInput(entities[key], tags=[InputTag("mlflow.data.context", "training")])]
        if row["trial_id"] in runs:
            client.log_inputs(runs[row["trial_id"]], datasets=inputs)
        if key not in logged_parent:
            client.log_inputs(summary.parent_run_id, datasets=inputs)
            logged_parent.add(key)


def _log_best_model(spec: SweepSpec, grid: Any, summary: SweepSummary) -> None:
    """`mlflow.pytorch.log_model` of the best trial's last checkpoint, into that trial's run."""
    import numpy as np
    import torch  # imported when the sweep is over

    from simlab.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from simlab.data import load_split
    from simlab.models import build_model

    best = summary.best[0]
    run_id = _trial_runs(summary.tracking_uri, summary.experiment_id).get(best["trial_id"])
    result = next(
        (r for r in grid if (r.metrics or {}).get("trial_id", Path(r.path).name) == best["trial_id"]), None
    )
    if run_id is None or result is None or result.checkpoint is None:
        logger.warning("best trial %s: no run or checkpoint; no model logged", best["trial_id"])
        return
    cfg = _trial_config(spec, best)
    with result.checkpoint.as_directory() as folder:
        state = load_checkpoint(Path(folder) / CHECKPOINT_NAME)
    shape = tuple(load_split(cfg).image_shape)  # (C, H, W): the model's input
    model = build_model(cfg.model, len(state["class_names"]), in_channels=shape[0], **cfg.model_args)
    model.load_state_dict(state["model"])
    model.eval()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(summary.tracking_uri)
    try:
        mlflow.pytorch.log_model(
            model,
            name="model",
            run_id=run_id,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # no slow inference
            # MLflow 3.17's default 'pt2' export fixes the batch size of the example; pickle keeps the
            # module (loading needs `simlab` importable). The example gives the model its signature.
            serialization_format="pickle",
            input_example=np.zeros((2, *shape), dtype=np.float32),
            metadata={
                "trial_id": best["trial_id"],
                "epoch": int(state["epoch"]),
                "classes": state["class_names"],
            },
        )
    finally:
        mlflow.set_tracking_uri(previous)
    logger.info(
        "logged the best trial's model (%s, epoch %d) to run %s", best["trial_id"], state["epoch"], run_id
    )


def close_trial_runs(tracking_uri: str, experiment_id: str, summary: SweepSummary) -> None:
    """End the trial runs still RUNNING after `Tuner.fit` returned, by what Tune says of their trial.

    A trial actor can be torn down before its trainable closed its run (a scheduler stop, an error in
    Ray itself, Ctrl-C): finished or early-stopped -> FINISHED, errored -> FAILED with the reason,
    unfinished (interrupted; `--resume` reopens it) -> KILLED.
    """
    client = MlflowClient(tracking_uri)
    by_key = {r["trial_id"]: r for r in summary.rows}
    running = client.search_runs(
        [experiment_id],
        filter_string="tags.`simlab.role` = 'trial' and attributes.status = 'RUNNING'",
        max_results=50000,
    )
    for run in running:
        row = by_key.get(run_tag(run.data.tags, KEY_TAG) or "")
        if row is None:
            continue
        status = {"finished": "FINISHED", "stopped": "FINISHED", "error": "FAILED"}.get(
            row["status"], "KILLED"
        )
        if row["status"] == "stopped":
            client.set_tag(run.info.run_id, STOPPED_TAG, "stopped early by the trial scheduler")
        if row["status"] in ("interrupted", "unfinished"):
            client.set_tag(run.info.run_id, INTERRUPTED_TAG, f"{row['status']}: continue with --resume")
        if row["status"] == "error" and row["error"]:
            client.set_tag(run.info.run_id, FAILURE_TAG, row["error"][:5000])
        client.set_terminated(run.info.run_id, status)
        logger.info("closed MLflow run %s of trial %s as %s", run.info.run_id, row["trial_id"], status)


def retire_lost_runs(tracking_uri: str, experiment_id: str, live_keys: set[str]) -> None:
    """Move to MLflow's trash the trial runs whose trial is not in the (restored) sweep.

    Tune snapshots its experiment periodically: a trial started after the last snapshot and killed with
    the driver is not in the restored experiment (Tune runs a new trial in its place), and its
    half-written run would be a second run of the sweep. `delete_orphan_runs` tags it
    ``simlab.orphaned``, closes it KILLED and deletes it recoverably (RELIABILITY T4).
    """
    orphans = delete_orphan_runs(tracking_uri, experiment_id, live_keys=live_keys)
    if orphans:
        logger.warning(
            "deleted %d MLflow run(s) of trials lost by the kill (not in Tune's saved state)", len(orphans)
        )


def log_summary(parent: Any, spec: SweepSpec, summary: SweepSummary) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp) / "summary.md"
        md.write_text(summary_table(spec, summary.rows) + "\n")
        (Path(tmp) / "summary.csv").write_text(summary_table(spec, summary.rows, markdown=False))
        (Path(tmp) / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=2, default=str))
        for name in ("summary.md", "summary.csv", SPEC_FILE):
            parent.log_artifact(Path(tmp) / name)
        parent.flush(timeout=30)
    if summary.best:
        best = summary.best[0]
        parent.set_tags({"simlab.best_trial": best["trial_id"], "simlab.best_method": best["method"]})
        parent.log_metrics(
            {f"best_{o.metric}": best[o.metric] for o in spec.objectives}
            | {"num_finished": summary.num_finished, "num_errored": summary.num_errored}
        )
    write_storage_text(spec.sweep_dir, "summary.md", summary_table(spec, summary.rows) + "\n")
