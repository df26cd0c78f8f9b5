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
