"""T11 continued (issue 15 items 3-6): a sweep that cannot run because of its environment or its data
is refused before Ray starts, with one line naming what is wrong, exit code 2, and nothing created.

Environment faults run the real CLI without ``--dry-run`` (a sweep that would start); data faults run
``--dry-run``, which must now catch them too (an empty or corrupt zip used to pass it). Each case runs
in a fresh process, wrapped to report whether Ray was imported.
"""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.helpers import PYTHON, REPO, SWEEP_CLI_WRAPPER, child_env, free_port, record_faults

pytestmark = pytest.mark.fault


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 20, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, *, classes=("a", "b"), bad: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "test"):
            for c in classes:
                for i in range(4):
                    name = f"d/{split}/{c}/{i}.png"
                    zf.writestr(name, b"\x89PNG garbage" if name == bad else _png())
    return path


def _file(path: Path, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    return path


def _existing_sweep(storage: Path, name: str) -> None:
    (storage / name).mkdir(parents=True)
    (storage / name / "sweep_spec.json").write_text("{}")


IMAGEFOLDER = ["--set", "dataset=imagefolder", "--set", "model_args.small_cnn.width=4"]

# name -> (dry_run, setup(tmp) -> (CLI args, text the error line must contain))
CASES: dict[str, tuple[bool, Callable[[Path], tuple[list[str], list[str]]]]] = {
    "storage is a file": (False, lambda t: (["--storage", str(_file(t / "f"))], ["storage", str(t / "f")])),
    "storage under a file": (
        False,
        lambda t: (["--storage", str(_file(t / "f") / "sub")], ["storage", "is a file"]),
    ),
    "storage not writable": (
        False,
        lambda t: (t.joinpath("ro").mkdir(mode=0o555) or ["--storage", str(t / "ro")], ["not writable"]),
    ),
    "name too long": (False, lambda t: (["--storage", str(t / "s"), "--name", "n" * 300], ["name", "255"])),
    "resume a sweep that never existed": (
        False,
        lambda t: (
            _existing_sweep(t / "s", "other") or ["--storage", str(t / "s"), "--name", "never", "--resume"],
            ["no sweep 'never'", "other"],
        ),
    ),
    "unknown tracking-URI scheme": (
        False,
        lambda t: (
            ["--storage", str(t / "s"), "--tracking-uri", "mlfow://host:5000"],
            ["tracking_uri", "mlfow"],
        ),
    ),
    "unreachable tracking server": (
        False,
        lambda t: (
            ["--storage", str(t / "s"), "--tracking-uri", f"http://127.0.0.1:{free_port()}"],
            ["tracking_uri", "cannot reach"],
        ),
    ),
    "sqlite store under a file": (
        False,
        lambda t: (
            ["--storage", str(t / "s"), "--tracking-uri", f"sqlite:///{_file(t / 'f')}/mlflow.db"],
            ["tracking_uri", "is a file"],
        ),
    ),
    "infinite cpus_per_trial": (
        False,
        lambda t: (["--storage", str(t / "s"), "--cpus-per-trial", "inf"], ["cpus_per_trial", "inf"]),
    ),
    "empty data zip": (
        True,
        lambda t: ([*IMAGEFOLDER, "--data-dir", str(_zip(t / "e.zip", classes=()))], ["data_dir", "e.zip"]),
    ),
    "corrupt data zip": (
        True,
        lambda t: (
            [*IMAGEFOLDER, "--data-dir", str(_file(t / "c.zip", b"PK\x03\x04cut"))],
            ["data_dir", "c.zip"],
        ),
    ),
    "corrupt image in the data": (
        True,
        lambda t: (
            [*IMAGEFOLDER, "--data-dir", str(_zip(t / "i.zip", bad="d/train/a/0.png"))],
            ["data_dir", "d/train/a/0.png"],
        ),
    ),
    "one class in the data": (
        True,
        lambda t: ([*IMAGEFOLDER, "--data-dir", str(_zip(t / "o.zip", classes=("a",)))], ["data_dir", "2"]),
    ),
    "trusted_size beyond the data": (
        True,
        lambda t: (["--set", "trusted_size=5000"], ["trusted_size", "per class"]),
    ),
    "model_args typo": (
        True,
        lambda t: (["--set", "model_args.small_cnn.widht=8"], ["model_args", "did you mean 'width'"]),
    ),
}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_environment_exits_2_with_one_line_before_ray(case: str, tmp_path: Path) -> None:
    if case == "storage not writable" and os.geteuid() == 0:
        pytest.skip(reason="root writes anywhere: permissions cannot make a folder unwritable")
    dry_run, setup = CASES[case]
    args, needles = setup(tmp_path)
    if "--storage" not in args:
        args = [*args, "--storage", str(tmp_path / "s")]
    before = _tree(tmp_path)
    done = subprocess.run(
        [PYTHON, "-c", SWEEP_CLI_WRAPPER, *args, *(["--dry-run"] if dry_run else [])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        timeout=float(os.environ.get("SIMLAB_T18_TIMEOUT", "180")),
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert "RAY_IMPORTED False" in done.stderr  # refused before Ray was even imported
    assert _tree(tmp_path) == before  # nothing created: no sweep folder, no MLflow store
    assert done.stdout == ""  # nothing resolved or started
    record_faults(f"T18 {case}", injected=1, survived=1)


def test_probe_accepts_a_real_mlflow_server_and_refuses_a_non_mlflow_one(mlflow_server) -> None:
    """The fail-fast probe must pass a real ``mlflow server`` (a positive control) and refuse an HTTP
    server that is not one (a proxy's 404): that one used to pass a /health-only probe, then the sweep
    created its folder and died on MLflow's first call with a traceback."""
    import http.server
    import threading

    from sweeps.preflight import PreflightError, check_tracking

    check_tracking(mlflow_server.uri)  # no error

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", free_port()), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(PreflightError, match="HTTP 404"):
            check_tracking(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    record_faults("T18 tracking server that is not MLflow", injected=1, survived=1)
