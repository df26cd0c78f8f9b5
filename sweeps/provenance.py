"""Provenance tags for every MLflow run of a sweep: which code, who, where, with which packages.

`MlflowClient.create_run` resolves no context tags (unlike `mlflow.start_run`), so the sweep sets them
itself: MLflow's standard ``mlflow.source.git.commit`` / ``mlflow.source.name`` / ``mlflow.source.type``
/ ``mlflow.user`` (shown by the UI as Source, Created by, the commit) plus ``simlab.git.dirty``,
``simlab.version.<package>`` and ``simlab.host.{cpu,gpu,name}``. Everything is best effort: a missing
git, package or /proc entry leaves its tag out, never fails a run.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES: tuple[str, ...] = ("torch", "ray", "mlflow", "optuna", "numpy")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state() -> dict[str, str]:
    """``mlflow.source.git.commit`` and ``simlab.git.dirty`` (tracked files modified) of this checkout."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags = {"mlflow.source.git.commit": commit}
    if status is not None:
        tags["simlab.git.dirty"] = "true" if status else "false"
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    return tags


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_model() -> str | None:
    torch = sys.modules.get("torch")  # only when already imported: no CUDA initialisation for a tag
    try:
        if torch is not None and torch.cuda.is_available():
            n = torch.cuda.device_count()
            return f"{n} x {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - a broken driver must not fail a run
        return None
    return None


@lru_cache(maxsize=1)
def _static_tags() -> dict[str, str]:
    tags = dict(git_state())
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    tags["simlab.version.python"] = platform.python_version()
    for name in PACKAGES:
        try:
            tags[f"simlab.version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    cpu = cpu_model()
    if cpu:
        tags["simlab.host.cpu"] = f"{os.cpu_count()} x {cpu}"
    tags["simlab.host.name"] = socket.gethostname()
    return tags


def provenance_tags(entry_point: str) -> dict[str, str]:
    """The tags above; ``entry_point`` (e.g. ``sweeps/calibration.py``) becomes ``mlflow.source.name``."""
    tags = {**_static_tags(), "mlflow.source.name": entry_point, "mlflow.source.type": "LOCAL"}
    gpu = gpu_model()
    if gpu:
        tags["simlab.host.gpu"] = gpu
    return tags


def entry_point() -> str:
    """This process's script, relative to the repository when inside it (``sweeps/calibration.py``)."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is None or not script.name:
        return "python"
    try:
        return str(script.relative_to(REPO_ROOT))
    except ValueError:
        return str(script)
