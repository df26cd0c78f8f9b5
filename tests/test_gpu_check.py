"""scripts/bench/gpu_check.sh on a machine without CUDA: says it skipped, exits 0, records why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_skips_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # hide any GPU
    env.pop("GPU_CHECK_OUT", None)
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bench" / "gpu_check.sh"), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stdout and "no CUDA device" in proc.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["skipped"] is True and "parts" not in report
    assert (out / "gpu_check.log").read_text().startswith("gpu_check: skipped")


def test_gpu_check_names_a_bad_argument(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench" / "gpu_check.py"), "--skip", "bogus"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--skip: unknown part(s) ['bogus']" in proc.stderr


def test_trial_overlap_from_mlflow_times():
    from scripts.bench.gpu_check import trial_overlap as overlap

    at_once = [(0, 10_000), (1_000, 9_000), (2_000, 12_000), (3_000, 11_000)]  # ms
    got = overlap(at_once)
    assert got["four_at_once"] and got["all_overlap_s"] == 6.0  # from 3 s (last start) to 9 s (first end)
    in_turn = [
        (0, 4_000),
        (1_000, 9_000),
        (5_000, 12_000),
        (3_000, 11_000),
    ]  # the first ends before the third
    assert not overlap(in_turn)["four_at_once"] and overlap(in_turn)["all_overlap_s"] == -1.0
    assert not overlap(at_once[:3])["four_at_once"]  # three trials are not four
    cut = [(0, 15_000), (1_000, None), (2_000, 12_000), (3_000, None)]  # still running when cut at 20 s
    assert overlap(cut, cut_at=20.0)["four_at_once"]
    assert not overlap(cut)["four_at_once"]  # never ended and not cut: no evidence
    assert overlap([])["trials"] == 0
