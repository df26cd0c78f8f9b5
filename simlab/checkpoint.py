"""Atomic training checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled classes), so
loading one never runs arbitrary code. Saving is atomic: the state goes to a temporary file in the same
folder, is fsync'ed, and only then replaces the target with ``os.replace``; the checkpoint it replaces
is kept as ``<path>.prev``. A reader therefore sees either the old or the new complete file, and when
the newest one is damaged anyway (a truncated copy, a full disk on another machine) `load_latest`
falls back to the previous complete one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from simlab._io import atomic_path

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "checkpoint_paths",
    "load_checkpoint",
    "load_latest",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
PREV_SUFFIX = ".prev"


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
            # Keep the last complete checkpoint until the new one is in place: a crash between the two
            # replaces leaves only .prev, which load_latest falls back to.
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
