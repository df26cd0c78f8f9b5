"""Atomic training checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled classes), so
loading one never runs arbitrary code. Saving is atomic: the state goes to a temporary file in the same
folder, is fsync'ed, and only then replaces the target with ``os.replace``; the checkpoint it replaces
is kept as ``<path>.prev``. A reader therefore sees either the old or the new complete file, and when
the newest one is damaged anyway (a truncated copy, a full disk on another machine) `load_latest`
falls back to the previous complete one.

A *training* checkpoint (what `simlab.train.fit` writes every epoch and resumes from) is one such dict
with the keys of `training_checkpoint`; `check_training_checkpoint` is the check a resume makes before
trusting one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from simlab._io import atomic_path

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "check_training_checkpoint",
    "checkpoint_paths",
    "load_checkpoint",
    "load_latest",
    "save_checkpoint",
    "training_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
PREV_SUFFIX = ".prev"
# The version of the training-checkpoint schema (the keys of `training_checkpoint`).
CHECKPOINT_VERSION = 1
# Config keys that may differ between a checkpoint and the run resuming it: where the data is and how
# the run executes, not what is trained.
RESUME_FREE_KEYS = frozenset({"data_dir", "cache_dir", "device", "compile"})
# Keys a training checkpoint must hold to be resumed from ("rng", "precision" and "class_names" are
# written too but read leniently).
_RESUME_KEYS = frozenset({"version", "epoch", "model", "optimizer", "scheduler", "config", "history"})


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, or not a dict)."""


def _as_path(path: str | os.PathLike, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically, keeping the replaced file as ``<path>.prev``.

    ``state`` must hold only what ``torch.load(weights_only=True)`` accepts (tensors, numbers, strings,
    None, lists, tuples and dicts of those); anything else is rejected here, before writing, so a
    checkpoint that cannot be loaded back is never produced.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state: expected a mapping, got {type(state).__name__}")
    path = _as_path(path)
    _check_weights_only(state, "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    # fsync=False: the file is fsync'ed here, before the old checkpoint moves to .prev (atomic_path would
    # fsync after the block, i.e. after that move).
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(dict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            # Keep the last complete checkpoint until the new one is in place: a crash between this
            # rename and atomic_path's leaves only .prev, which load_latest falls back to.
            os.replace(path, path.with_name(path.name + PREV_SUFFIX))
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a damaged file raises `CheckpointError` naming it.

    A missing file raises ``FileNotFoundError``.
    """
    path = _as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError / UnpicklingError / EOFError / zip errors
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt): {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def checkpoint_paths(checkpoint_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(checkpoint.pt, checkpoint.pt.prev)`` inside ``checkpoint_dir``."""
    root = _as_path(checkpoint_dir, "checkpoint_dir")
    main = root / CHECKPOINT_NAME
    return main, main.with_name(main.name + PREV_SUFFIX)


def load_latest(
    checkpoint_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in ``checkpoint_dir`` and its path, or None if there is none.

    Tries ``checkpoint.pt`` then ``checkpoint.pt.prev``. If files exist but none can be read, raises the
    `CheckpointError` of the newest (silently restarting from scratch would hide lost work).
    """
    errors: list[CheckpointError] = []
    for candidate in checkpoint_paths(checkpoint_dir):
        if not candidate.is_file():
            continue
        try:
            return load_checkpoint(candidate, map_location), candidate
        except CheckpointError as err:
            log.warning("%s; trying the previous checkpoint", err)
            errors.append(err)
    if errors:
        raise errors[0]
    return None


def training_checkpoint(
    *,
    epoch: int,
    model: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    rng: Mapping[str, Any],
    config: Mapping[str, Any],
    precision: str,
    history: Sequence[Mapping[str, float]],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """The training-checkpoint dict (version `CHECKPOINT_VERSION`) of a run after ``epoch`` epochs.

    ``model``/``optimizer``/``scheduler``: state dicts (``{}`` without a scheduler); ``rng``: the seed, the
    world size and the end-of-epoch generator states (for audit: each epoch re-derives its generators,
    so resuming needs only ``epoch``); ``config``: ``TrainConfig.to_dict()``; ``precision``: the resolved
    label (``fp32``, ``bf16+channels_last``, ...); ``history``: one metrics dict per epoch so far.
    """
    return {
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": rng,
        "config": config,
        "precision": precision,
        "history": [dict(h) for h in history],
        "class_names": list(class_names),
    }


def check_training_checkpoint(
    state: Mapping[str, Any], path: Path, *, config: Mapping[str, Any], class_names: Sequence[str]
) -> None:
    """Raise ``ValueError`` (naming ``checkpoint_dir`` and ``path``) unless ``state`` is a training
    checkpoint of this version, written by the same ``config`` (except `RESUME_FREE_KEYS`) on the same
    ``class_names``: resuming anything else would silently train a different run."""
    missing = sorted(_RESUME_KEYS - set(state))
    if missing or state["version"] != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint_dir: {path} is not a version-{CHECKPOINT_VERSION} training checkpoint "
            f"(version {state.get('version')!r}, missing keys {missing})"
        )
    saved = state.get("config", {})
    differ = sorted(
        k for k in set(saved) | set(config) if k not in RESUME_FREE_KEYS and saved.get(k) != config.get(k)
    )
    if differ:
        raise ValueError(
            f"checkpoint_dir: {path} was written by a different config "
            f"(keys {', '.join(differ)} differ); use a fresh checkpoint_dir"
        )
    if list(state.get("class_names", [])) != list(class_names):
        raise ValueError(
            f"checkpoint_dir: {path} was trained on classes {state.get('class_names')}, "
            f"the data has {list(class_names)}"
        )


# ---------------------------------------------------------------------------------------------
_SCALARS = (bool, int, float, str, type(None))


def _check_weights_only(obj: Any, where: str) -> None:
    if isinstance(obj, _SCALARS) or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: keys must be str or int, got {type(key).__name__} ({key!r})")
            _check_weights_only(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_weights_only(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: a weights_only checkpoint holds tensors, numbers, strings, lists and dicts; "
        f"got {type(obj).__name__}"
    )


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable (POSIX); not possible/needed on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
