"""Train-mode resume point: the newest complete epoch checkpoint in the run folder, registered or not.

Ray Train V2 registers a reported checkpoint only at its controller's next poll, so a worker that dies
right after `ray.train.report` leaves a persisted but unregistered folder (RELIABILITY T1). The
fault test `tests/faults/test_t01_worker_kill.py` kills a real worker; this checks the selection rule
on folders laid out as Ray writes them, including one cut short mid-upload.
"""

from __future__ import annotations

from pathlib import Path

import torch

from simlab.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from sweeps.trial_checkpoints import epoch_checkpoint_name, newest_persisted_checkpoint


def _state(epoch: int) -> dict:
    return {"epoch": epoch, "model": {"w": torch.full((3,), float(epoch))}}


def _write(run: Path, epoch: int, *, states: tuple[int, ...] | None = None) -> Path:
    folder = run / epoch_checkpoint_name(epoch)
    for e in states or (epoch,):  # successive saves leave checkpoint.pt + checkpoint.pt.prev
        save_checkpoint(_state(e), folder / CHECKPOINT_NAME)
    return folder


def test_names_sort_by_epoch() -> None:
    names = [epoch_checkpoint_name(e) for e in (1, 9, 10, 123)]
    assert names == sorted(names)


def test_picks_newest_complete_folder_over_a_truncated_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, 1)
    _write(run, 2, states=(1, 2))
    cut = _write(run, 3)
    data = (cut / CHECKPOINT_NAME).read_bytes()
    (cut / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])  # died mid-upload, no .prev
    (run / "checkpoint_2026-12-04_10-00-00.000000").mkdir()  # Ray's default name: not ours, ignored
    (run / "epoch_notanumber").mkdir()
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    work = tmp_path / "work"
    work.mkdir()

    assert newest_persisted_checkpoint(str(run), work) == 2
    restored = load_checkpoint(work / "ckpt" / CHECKPOINT_NAME)
    assert restored["epoch"] == 2 and torch.equal(restored["model"]["w"], torch.full((3,), 2.0))


def test_prev_inside_the_newest_folder_reports_its_own_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    folder = _write(run, 4, states=(3, 4))
    main = folder / CHECKPOINT_NAME
    main.write_bytes(main.read_bytes()[:100])
    work = tmp_path / "work"
    work.mkdir()
    assert newest_persisted_checkpoint(str(run), work) == 3  # the .prev state, not the folder's name


def test_no_folder_or_empty_folder_restores_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert newest_persisted_checkpoint(str(tmp_path / "missing"), work) is None
    (tmp_path / "empty").mkdir()
    assert newest_persisted_checkpoint(str(tmp_path / "empty"), work) is None
    assert not (work / "ckpt").exists()
