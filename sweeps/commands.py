"""The commands a sweep prints for the user (resume it, open the MLflow UI, build the paper table).

They must run as printed from a shell where the venv is not activated, so they name this interpreter
(`sys.executable`, not resolved: a venv's python is a link whose target lacks the venv's packages) and the
`mlflow` script installed next to it, by absolute path.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from sweeps.spec import SweepSpec

REPO_ROOT = Path(__file__).resolve().parent.parent  # printed commands name scripts by absolute path
UI_PORT = 5000  # the port of the printed `mlflow ui` command


def python_command(script: str | Path, *args: Any) -> str:
    """``<this python> <repo>/<script> args...``, shell-quoted."""
    return shlex.join([sys.executable, str(REPO_ROOT / script), *map(str, args)])


def mlflow_executable() -> str:
    """The `mlflow` console script of this interpreter's environment (falls back to ``python -m mlflow``)."""
    exe = Path(sys.executable).parent / "mlflow"
    return shlex.quote(str(exe)) if exe.exists() else f"{shlex.quote(sys.executable)} -m mlflow"


def mlflow_ui_command(tracking_uri: str, *, port: int = UI_PORT, host: str = "127.0.0.1") -> str:
    """A light `mlflow ui` for one sqlite store: one uvicorn worker and no job runner.

    MLflow 3.17's defaults (4 workers + the job runner's huey consumers) start ~15 processes and take
    ~3 GB; ``--workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` gives 2 processes (~0.5 GB).
    """
    return (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_executable()} ui "
        f"--backend-store-uri {shlex.quote(tracking_uri)} --host {host} --port {int(port)} --workers 1"
    )


def runs_view_url(
    base_url: str, experiment_id: str, *, order_by: str | None = None, ascending: bool = True
) -> str:
    """The experiment's *runs* view, trials listed flat, sorted by ``order_by`` (shown as a column).

    MLflow 3.17 opens an experiment in its GenAI view (traces) unless the URL says
    ``workflowType=machine_learning``; its UI derives the view from that URL parameter (or the
    browser's last choice), not from the ``mlflow.experimentKind`` tag, so no tag can do this. Without
    a filter, the trials are folded under the parent run; ``searchFilter`` on the trial role lists
    them, and ``orderByKey`` on a metric adds its column (the UI shows no metric columns by default).
    """
    from urllib.parse import urlencode

    query = {"workflowType": "machine_learning"}
    if order_by:
        query |= {
            "searchFilter": "tags.`simlab.role` = 'trial'",
            "orderByKey": f"metrics.`{order_by}`",
            "orderByAsc": "true" if ascending else "false",
        }
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def mlflow_view_lines(
    tracking_uri: str,
    experiment_id: str,
    name: str,
    *,
    port: int = UI_PORT,
    order_by: str | None = None,
    ascending: bool = True,
) -> list[str]:
    """What to run / open to see the sweep's runs in MLflow."""
    sort = {"order_by": order_by, "ascending": ascending}
    if tracking_uri.startswith("sqlite:"):
        return [
            f"MLflow UI:  {mlflow_ui_command(tracking_uri, port=port)}",
            f"  then open {runs_view_url(f'http://127.0.0.1:{int(port)}', experiment_id, **sort)}",
        ]
    if tracking_uri.startswith(("http://", "https://")):
        return [f"MLflow: {runs_view_url(tracking_uri, experiment_id, **sort)}"]
    return [f"MLflow: {tracking_uri} (experiment {name!r})"]


def report_command(spec: SweepSpec, tracking_uri: str) -> str:
    """`scripts/report.py` on this sweep's experiment, writing under the sweep's folder when local."""
    args: list[Any] = ["--tracking-uri", tracking_uri, "--experiment", spec.name]
    if "://" not in spec.storage:
        args += ["--out", os.path.join(spec.sweep_dir, "report")]
    return python_command("scripts/report.py", *args)


def resume_command(spec: SweepSpec) -> str:
    """Continue this sweep: the Tuner is restored as it was submitted (the saved ``sweep_spec.json``)."""
    return python_command(
        "sweeps/calibration.py",
        "--preset",
        spec.preset,
        "--name",
        spec.name,
        "--storage",
        spec.storage,
        "--resume",
    )
