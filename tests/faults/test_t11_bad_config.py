"""T11: a bad sweep config is rejected before any work: exit code 2, the field named, 0 trials started.

Each case runs the real CLI (``python sweeps/calibration.py ...``) in a fresh process, wrapped so the
test can see whether Ray was even imported: a rejection must come before Ray starts, and no sweep
folder (Tune state, MLflow database) may appear. How long a rejection takes is measured by
``scripts/bench/bench_reliability.py`` (tests assert no timings).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.faults.helpers import PYTHON, REPO, SWEEP_CLI_WRAPPER, child_env, record_faults

pytestmark = pytest.mark.fault

SHARED = REPO.parent / "shared" / "data"
WORDS = SHARED / "vectors" / "cifar10-words-300d.txt"


def _vectors_without(tmp_path: Path, word: str) -> Path:
    """The CIFAR-10 word-vector file with one class word removed (header count fixed)."""
    lines = WORDS.read_text().splitlines()
    count, dim = lines[0].split()
    kept = [line for line in lines[1:] if line.split(" ", 1)[0] != word]
    assert len(kept) == int(count) - 1
    path = tmp_path / f"vectors-without-{word}.txt"
    path.write_text("\n".join([f"{len(kept)} {dim}", *kept]) + "\n")
    return path


def _cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (CLI arguments, text the error must contain: the field)."""
    return {
        "unknown key": (["--set", "alhpa=0.1"], "alhpa"),
        "alpha out of range": (["--set", "alpha=2"], "alpha"),
        "negative alpha": (["--set", "alpha=-0.1"], "alpha"),
        "beta with one-hot": (["--set", "label=onehot", "--set", "beta=1"], "beta"),
        "missing data": (["--set", f"data_dir={tmp_path / 'no-such.zip'}"], "data_dir"),
        "missing vector file": (
            [
                "--preset",
                "cifar10-calibration",
                "--set",
                "label=similarity",
                "--set",
                "similarity=we",
                "--set",
                f"source_args.we.vectors={tmp_path / 'no-such.txt'}",
            ],
            "source_args.we.vectors",
        ),
        "missing words": (
            [
                "--preset",
                "cifar10-calibration",
                "--set",
                "label=similarity",
                "--set",
                "similarity=we",
                "--set",
                f"source_args.we.vectors={_vectors_without(tmp_path, 'cat')}",
            ],
            "cat",
        ),
    }


CASE_NAMES = [
    "unknown key",
    "alpha out of range",
    "negative alpha",
    "beta with one-hot",
    "missing data",
    "missing vector file",
    "missing words",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_config_exits_2_naming_the_field_before_ray(case: str, tmp_path: Path) -> None:
    if case.startswith("missing v") or case == "missing words":
        if not WORDS.exists():
            pytest.skip(reason=f"shared word vectors not found at {WORDS}")
    args, field = _cases(tmp_path)[case]
    storage = tmp_path / "storage"
    done = subprocess.run(
        [PYTHON, "-c", SWEEP_CLI_WRAPPER, *args, "--storage", str(storage), "--name", "t11"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert error_lines and field in error_lines[-1], done.stderr[-3000:]
    assert "RAY_IMPORTED False" in done.stderr  # rejected before Ray was even imported
    assert not storage.exists() or not any(storage.rglob("*"))  # 0 trials, no Tune or MLflow state
    record_faults(f"T11 {case}", injected=1, survived=1)
