"""A trial's folders: its local work folder's checkpoint, and its Ray Train run folder's epoch
checkpoints and failure marker.

- ``<work>/ckpt`` (`CHECKPOINT_SUBDIR`): what `fit` saves to and resumes from; filled from Ray's
  checkpoint (`restore_checkpoint`) or, in Train mode, from the newest persisted epoch folder
  (`newest_persisted_checkpoint`). What is handed to Ray is `ray_checkpoint_dir`: ``checkpoint.pt`` only.
- ``<storage>/train/<trial id>`` (`train_run_uri`, local path or ``s3://...``): the Train run, whose
  checkpoints are named by epoch (`epoch_checkpoint_name`), and `FAILED_MARKER`, by which rank 0 tells
  the trial driver that the workers ended on a non-retryable error.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "ckpt"  # inside a trial's local work folder: what fit resumes from
EPOCH_CHECKPOINT_PREFIX = "epoch_"  # Train-mode checkpoint folders: <storage>/train/<trial id>/epoch_000003
FAILED_MARKER = "simlab_failed.txt"  # in a Train run folder: rank 0 ended on a non-retryable error


def train_storage(sweep_dir: str) -> str:
    """The ``storage_path`` of the sweep's Train runs."""
    return f"{sweep_dir}/train"


def train_run_uri(sweep_dir: str, trial_id: str) -> str:
    """Where Ray Train keeps trial ``trial_id``'s run: local path or ``s3://...`` like the sweep dir."""
    return f"{train_storage(sweep_dir)}/{trial_id}"


def restore_checkpoint(checkpoint: Any, work: Path) -> None:
    """Unpack Ray's ``checkpoint`` (None: nothing to restore) into ``work/ckpt``."""
    target = work / CHECKPOINT_SUBDIR
    if checkpoint is None:
        return
    if target.exists():
        shutil.rmtree(target)
    checkpoint.to_directory(str(target))
    logger.info("restored trial checkpoint %s into %s", checkpoint.path, target)


def epoch_checkpoint_name(epoch: int) -> str:
    """The folder name of epoch ``epoch``'s checkpoint inside a Train run (ordered by name and epoch)."""
    return f"{EPOCH_CHECKPOINT_PREFIX}{epoch:06d}"


def newest_persisted_checkpoint(run_uri: str, work: Path) -> int | None:
    """Copy the newest complete epoch checkpoint of a Train run into ``work/ckpt``; its epoch, or None.

    Why not only ``ray.train.get_checkpoint()``: Ray Train V2 persists a reported checkpoint to storage
    inside ``ray.train.report``, but registers it only when its controller next polls the workers
    (every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s). A worker that dies between the two takes the
    queued report with it, and the restarted group would get an older checkpoint — or none, restarting
    from epoch 0 (RELIABILITY T1: at most one epoch redone). The folders themselves survive, named by
    `epoch_checkpoint_name`, so the newest one whose ``checkpoint.pt`` (or its ``.prev``) loads is the
    true resume point. A folder cut short by a death mid-upload fails to load and is skipped.
    """
    import pyarrow.fs as pafs  # heavy; only Train-mode workers list run folders

    from simlab.checkpoint import CheckpointError, load_latest  # imports torch

    fs, root = pafs.FileSystem.from_uri(run_uri)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    epochs = sorted(
        (
            (int(info.base_name[len(EPOCH_CHECKPOINT_PREFIX) :]), info.path)
            for info in infos
            if info.type == pafs.FileType.Directory
            and info.base_name.startswith(EPOCH_CHECKPOINT_PREFIX)
            and info.base_name[len(EPOCH_CHECKPOINT_PREFIX) :].isdigit()
        ),
        reverse=True,
    )
    target = work / CHECKPOINT_SUBDIR
    for epoch, path in epochs:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        local = pafs.LocalFileSystem()
        pafs.copy_files(path, str(target), source_filesystem=fs, destination_filesystem=local)
        try:
            found = load_latest(target, map_location="cpu")
        except CheckpointError as err:
            logger.warning("skipping checkpoint folder %s: %s", path, err)
            continue
        if found is not None:  # the state's own epoch: a folder's .prev fallback holds the one before
            state, file = found
            logger.info("resuming from persisted checkpoint %s (epoch %s)", file, state.get("epoch"))
            return int(state.get("epoch", epoch))
    if target.exists():
        shutil.rmtree(target)
    return None


def ray_checkpoint_dir(checkpoint_dir: str | Path, parent: str | Path) -> Path:
    """A fresh folder under ``parent`` holding only ``checkpoint.pt`` of `fit`'s ``checkpoint_dir``
    (hard-linked, copied across file systems): what is handed to Ray. The ``checkpoint.pt.prev``
    fallback stays local, so each report uploads one checkpoint, not two. The caller removes the folder
    once Ray has persisted it (``tune.report`` / ``ray.train.report`` return after the upload)."""
    from simlab.checkpoint import CHECKPOINT_NAME  # imports torch

    src = Path(checkpoint_dir) / CHECKPOINT_NAME
    out = Path(tempfile.mkdtemp(prefix="report-", dir=parent))
    try:
        os.link(src, out / CHECKPOINT_NAME)
    except OSError:
        shutil.copy2(src, out / CHECKPOINT_NAME)
    return out


def _failure_marker(run_uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs  # heavy; only Train-mode trials use the marker

    fs, root = pafs.FileSystem.from_uri(run_uri)
    return fs, f"{root.rstrip('/')}/{FAILED_MARKER}"


def write_failure_marker(run_uri: str, reason: str) -> None:
    """Rank 0 tells the trial driver (through the run's storage, reachable from every node) that the
    workers ended on a non-retryable error: Train's `Result` carries no metrics reported without a
    checkpoint, so the driver could not tell this end from a finished run."""
    fs, path = _failure_marker(run_uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as fh:
        fh.write(reason.encode("utf-8"))


def pop_failure_marker(run_uri: str) -> str | None:
    """The reason `write_failure_marker` left (then removed), or None."""
    import pyarrow.fs as pafs  # heavy; see _failure_marker

    fs, path = _failure_marker(run_uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as fh:
        reason = fh.read().decode("utf-8", errors="replace")
    fs.delete_file(path)
    return reason
