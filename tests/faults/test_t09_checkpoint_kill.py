"""T9: a process SIGKILLed in the middle of checkpoint writes always leaves a loadable last checkpoint.

A child process writes checkpoints in a loop (a few MB each, so the kill often lands inside a write)
and reports each completed save; it is SIGKILLed at random moments, many times. After every kill,
`load_latest` must return a complete checkpoint whose epoch is the last one reported complete or the
one being written, with its tensors intact (every element equals the epoch that wrote it).
"""

from __future__ import annotations

import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch

from simlab.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint, load_latest, save_checkpoint
from tests.faults.helpers import PYTHON, REPO, child_env, record_faults

pytestmark = pytest.mark.fault

WRITER = textwrap.dedent(
    """
    import sys, torch
    from simlab.checkpoint import save_checkpoint, checkpoint_paths
    path = checkpoint_paths(sys.argv[1])[0]
    epoch = int(sys.argv[2])
    print("ready", flush=True)
    while True:
        state = {"version": 1, "epoch": epoch,
                 "model": {"w": torch.full((512, 1024), float(epoch)), "b": torch.full((7,), float(epoch))},
                 "history": [{"epoch": float(e)} for e in range(epoch)]}
        save_checkpoint(state, path)
        print("saved", epoch, flush=True)
        epoch += 1
    """
)


def _check_intact(state: dict) -> int:
    epoch = state["epoch"]
    assert torch.equal(state["model"]["w"], torch.full((512, 1024), float(epoch)))
    assert torch.equal(state["model"]["b"], torch.full((7,), float(epoch)))
    assert [h["epoch"] for h in state["history"]] == [float(e) for e in range(epoch)]
    return epoch


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_last_complete_checkpoint_loads(tmp_path: Path) -> None:
    rng = random.Random(9)
    start = 0
    for _ in range(8):
        proc = subprocess.Popen(
            [PYTHON, "-c", WRITER, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=child_env(),
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = [int(line.split()[1]) for line in proc.stdout.read().splitlines() if line.startswith("saved")]
        last_reported = saved[-1] if saved else start - 1
        found = load_latest(tmp_path)
        assert found is not None, "no checkpoint loads after the kill"
        state, path = found
        epoch = _check_intact(state)
        # The newest complete one: the last reported save, or the one whose os.replace finished
        # just before the kill (its "saved" line not yet printed).
        assert last_reported <= epoch <= last_reported + 1, (epoch, last_reported, path)
        start = epoch + 1  # the next writer continues, as a resumed trial would
    # Kills that landed inside a write leave that write's temp file behind (never under the real name).
    mid_write = len(list(tmp_path.glob(".checkpoint.pt.*.tmp")))
    record_faults("T9 checkpoint kill", injected=8, survived=8, detail=f"{mid_write} of them mid-write")


def test_truncated_newest_checkpoint_falls_back_to_previous(tmp_path: Path) -> None:
    path = checkpoint_paths(tmp_path)[0]
    for epoch in (1, 2):
        save_checkpoint(
            {
                "epoch": epoch,
                "model": {"w": torch.full((64,), float(epoch))},
                "history": [{"epoch": float(e)} for e in range(epoch)],
            },
            path,
        )
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # e.g. a copy to another node cut short
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    state, used = load_latest(tmp_path)
    assert used == path.with_name(path.name + ".prev")
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.full((64,), 1.0))
