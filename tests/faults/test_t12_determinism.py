"""T12: the same seed twice, and a run SIGKILLed mid-training then resumed, give identical results (CPU).

Every run is its own process with the same environment (one torch thread), so the comparison is
bit for bit: final metrics and the whole per-epoch history. The interrupted run is killed for real,
in the middle of epoch 2, and resumed from its checkpoint by a new process.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.faults.helpers import PYTHON, REPO, child_env, record_faults

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def _start(cfg: dict, ckpt: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "tests.faults.fit_child", json.dumps(cfg), str(ckpt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **env),
    )


def _finish(proc: subprocess.Popen) -> tuple[dict, list[int]]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    epochs = [int(line.split()[1]) for line in out.splitlines() if line.startswith("epoch ")]
    final = next(line for line in out.splitlines() if line.startswith("final "))
    return json.loads(final[len("final ") :]), epochs


def test_same_seed_twice_and_resumed_run_are_identical(tmp_path: Path) -> None:
    cfg = {"cache_dir": str(tmp_path / "cache"), "recalibrate": True, "epochs": 3, "seed": 3}
    first = _start(cfg, tmp_path / "a")
    second = _start(cfg, tmp_path / "b")
    run_a, epochs_a = _finish(first)
    run_b, epochs_b = _finish(second)
    assert epochs_a == epochs_b == [1, 2, 3]
    assert run_b == run_a  # same seed, separate processes: bit-identical metrics and history

    # Interrupted: SIGKILL once epoch 1's checkpoint is written (the child waits there), then resume.
    victim = _start(cfg, tmp_path / "c", FIT_CHILD_PAUSE_AFTER_EPOCH="1")
    line = victim.stdout.readline()
    assert line.strip() == "epoch 1", line + victim.stderr.read()[-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed, epochs_c = _finish(_start(cfg, tmp_path / "c"))
    assert epochs_c == [2, 3]  # resumed after epoch 1, not from scratch
    assert resumed == run_a  # identical to the uninterrupted run: metrics and the whole history
    assert len({h["train_loss"] for h in run_a["history"]}) == 3  # epochs differ: a real comparison
    record_faults("T12 kill + resume", injected=1, survived=1, detail="resumed at epoch 2")
