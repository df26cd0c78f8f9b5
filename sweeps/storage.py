"""The sweep folder: its file names and the driver's reads and writes there, local or on object storage.

A sweep lives in ``<storage>/<name>`` (`SweepSpec.sweep_dir`): the search stage's Tune experiment is the
folder itself, a two-stage sweep's seeds stage is ``seeds/`` inside it, and the driver keeps beside
Tune's own files the spec as submitted (`SPEC_FILE`), the stage progress (`STAGES_FILE`) and
``summary.md``. Everything goes through pyarrow.fs, as Ray reaches the storage: the same code for a
local folder and s3:// (gs://, ...).
"""

from __future__ import annotations

import fnmatch
import json
import os
import pickletools
from pathlib import Path
from typing import Any

from simlab._io import write_text_atomic
from sweeps.search import EXPERIMENT_STATE_GLOB, SESSION_STATE_FILES, trial_ids_in_state
from sweeps.spec import SpecError, SweepSpec

SPEC_FILE = "sweep_spec.json"
STAGES_FILE = "stages.json"  # a two-stage sweep's progress: the chosen configurations, the seeds points
SEEDS_SUBDIR = "seeds"  # the seeds stage's Tune experiment inside the sweep folder
DAMAGED_SUFFIX = ".damaged"  # a Tune state file that cannot be read, set aside by `set_aside_damaged_state`


def stage_dir(spec: SweepSpec) -> str:
    """The Tune experiment folder of the spec's stage."""
    return spec.sweep_dir if spec.stage == "search" else f"{spec.sweep_dir.rstrip('/')}/{SEEDS_SUBDIR}"


def _storage_fs(sweep_dir: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" not in sweep_dir:
        return pafs.LocalFileSystem(), os.path.abspath(sweep_dir)
    return pafs.FileSystem.from_uri(sweep_dir)


def read_storage_text(sweep_dir: str, name: str) -> str | None:
    """``<sweep_dir>/<name>`` as text, None when absent."""
    import pyarrow.fs as pafs

    fs, root = _storage_fs(sweep_dir)
    path = f"{root.rstrip('/')}/{name}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as fh:
        return fh.read().decode("utf-8")


def write_storage_text(sweep_dir: str, name: str, text: str) -> None:
    """Write ``<sweep_dir>/<name>``: atomically (temp + os.replace) locally; one PUT on object stores,
    which is atomic there (a reader sees the old object or the new one)."""
    if "://" not in sweep_dir:
        write_text_atomic(Path(sweep_dir) / name, text)
        return
    fs, root = _storage_fs(sweep_dir)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as fh:
        fh.write(text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
def tune_trial_ids(sweep_dir: str | Path) -> set[str]:
    """The trial ids in a local Tune experiment folder's newest saved state (what `Tuner.restore`
    resumes), with its seeds stage's (``seeds/``) when it has one.

    Reads Tune's ``experiment_state-<timestamp>.json`` (JSON, no unpickling). A folder without one is a
    ValueError naming it.
    """
    folder = Path(sweep_dir)
    states = sorted(folder.glob(EXPERIMENT_STATE_GLOB))  # Tune's own choice: the newest timestamp
    if not states:
        raise ValueError(f"sweep_dir: no Tune experiment state (experiment_state-*.json) in {str(folder)!r}")
    try:
        ids = trial_ids_in_state(states[-1].read_text())
    except ValueError as err:  # JSONDecodeError: Tune's state file cut short by a kill while it was copied
        raise ValueError(
            f"sweep_dir: Tune's newest saved state {str(states[-1])!r} cannot be read ({err}); a kill "
            "while Tune wrote it. `python sweeps/calibration.py --name <sweep> --resume` sets it aside and "
            "continues from the state before; clean up after that"
        ) from err
    seeds = folder / SEEDS_SUBDIR
    if seeds.is_dir() and any(seeds.glob(EXPERIMENT_STATE_GLOB)):
        ids |= tune_trial_ids(seeds)
    return ids


def storage_trial_ids(sweep_dir: str) -> set[str]:
    """The trial ids in the newest Tune experiment state under ``sweep_dir`` (local or remote); the
    remote twin of `tune_trial_ids` (which alone adds the seeds stage's)."""
    if "://" not in sweep_dir:
        return tune_trial_ids(sweep_dir)
    fs, root = _storage_fs(sweep_dir)
    states = _experiment_states(fs, root, allow_not_found=False)
    if not states:
        raise ValueError(f"sweep_dir: no Tune experiment state (experiment_state-*.json) in {sweep_dir!r}")
    with fs.open_input_stream(f"{root.rstrip('/')}/{states[-1]}") as fh:
        return trial_ids_in_state(fh.read().decode("utf-8"))


def _experiment_states(fs: Any, root: str, *, allow_not_found: bool) -> list[str]:
    """The names of the Tune experiment states directly in ``root`` on ``fs``, oldest first (Tune
    restores the last: the greatest name)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(root, recursive=False, allow_not_found=allow_not_found)
    return sorted(
        i.base_name
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, EXPERIMENT_STATE_GLOB)
    )


def _damage(fs: Any, root: str, session: str) -> str | None:
    """Why one Tune session's saved state cannot be restored, None when every file of it is whole: the
    experiment state must be Tune's JSON; a pickled searcher file is walked opcode by opcode to its STOP
    (`pickletools.genops`: nothing is built or run), a JSON one parsed."""
    import pyarrow.fs as pafs

    for i, pattern in enumerate(SESSION_STATE_FILES):
        name = pattern.format(session)
        path = f"{root}/{name}"
        if fs.get_file_info(path).type != pafs.FileType.File:
            if i == 0:
                return f"{name} is missing"
            continue  # a searcher that saves nothing
        with fs.open_input_stream(path) as fh:
            data = fh.read()
        try:
            if i == 0:  # the experiment state
                trial_ids_in_state(data.decode("utf-8"))
            elif data[:1] == b"\x80":  # a pickle (protocol 2 or later)
                if [op.name for op, _, _ in pickletools.genops(data)][-1:] != ["STOP"]:
                    raise ValueError("no STOP opcode")
            else:
                json.loads(data)
        except (ValueError, KeyError, TypeError, IndexError) as err:  # truncated, not UTF-8, wrong layout
            return f"{name}: {err}"
    return None


def set_aside_damaged_state(sweep_dir: str) -> list[str]:
    """Before a restore: while the newest Tune session's saved state cannot be read (`_damage`), rename
    its files (experiment state, search generator, searcher) to ``<name>.damaged``, so that Tune
    restores the session before (trials that came later run again as new trials). Returns the names
    set aside.

    Tune copies its state into a local storage folder in place, so a kill during the copy leaves a
    truncated file that would stop every resume. On object stores a write is one PUT (whole or absent).
    When no readable session is left, nothing is renamed and the error says so.
    """
    import pyarrow.fs as pafs

    fs, root = _storage_fs(sweep_dir)
    root = root.rstrip("/")
    prefix, suffix = SESSION_STATE_FILES[0].split("{}")
    states = _experiment_states(fs, root, allow_not_found=True)
    sessions = [name[len(prefix) : -len(suffix)] for name in states]
    damaged: list[tuple[str, str]] = []
    for session in reversed(sessions):  # newest first, as Tune picks
        why = _damage(fs, root, session)
        if why is None:
            break
        damaged.append((session, why))
    else:
        if damaged:
            raise SpecError(
                "resume",
                f"no readable Tune experiment state in {sweep_dir} ({damaged[0][1]}): the sweep cannot be "
                "resumed; run it again under a new --name",
            )
    moved = []
    for session, _ in damaged:
        for pattern in SESSION_STATE_FILES:
            path = f"{root}/{pattern.format(session)}"
            if fs.get_file_info(path).type == pafs.FileType.File:
                fs.move(path, path + DAMAGED_SUFFIX)
                moved.append(pattern.format(session))
    return moved


def all_stage_trial_ids(spec: SweepSpec) -> set[str]:
    """Trial ids of every stage's Tune experiment (search at the top, seeds in ``seeds/``)."""
    ids = storage_trial_ids(spec.sweep_dir)  # local: `tune_trial_ids` already adds seeds/
    if "://" in spec.storage:
        try:
            ids |= storage_trial_ids(f"{spec.sweep_dir.rstrip('/')}/{SEEDS_SUBDIR}")
        except (ValueError, OSError):  # no seeds stage (yet)
            pass
    return ids


def other_stage_trial_ids(spec: SweepSpec) -> set[str]:
    """Trial ids of the other stage's Tune experiment (their MLflow runs are not orphans of this one)."""
    if spec.stage == "search" or "://" in spec.storage:
        return set()
    try:
        return tune_trial_ids(spec.sweep_dir)
    except ValueError:
        return set()


def spool_root(spec: SweepSpec) -> str:
    """Where MLflow calls wait during an outage: the sweep folder, or each node's local disk when the
    storage is remote."""
    if "://" in spec.storage:
        return os.path.join(os.path.expanduser("~"), ".cache", "simlab", "spool", spec.name)
    return os.path.join(spec.sweep_dir, "spool")


def artifact_location(spec: SweepSpec, sweep_dir: str, tracking_uri: str) -> str | None:
    """MLflow artifacts under the sweep folder, local or remote, when the client writes them itself
    (sqlite / file stores); a tracking server keeps its own artifact root."""
    if "://" not in spec.storage:
        return os.path.join(sweep_dir, "mlartifacts")
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return f"{sweep_dir.rstrip('/')}/mlartifacts"
    return None
