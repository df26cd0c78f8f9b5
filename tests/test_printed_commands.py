"""Every command the sweep prints runs exactly as printed, from a shell without the venv activated.

The commands come from `sweeps.summary.format_summary` on a real sqlite MLflow store holding one
finished trial run (no Ray: the summary is what `run_sweep` fills). Each is run through
``env -i PATH=/usr/bin:/bin bash -c "<printed>"``: no VIRTUAL_ENV, no PYTHONPATH, the venv's bin not on
PATH. The `mlflow ui` one is started on a free 127.0.0.1 port, must answer, and is stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.commands import mlflow_ui_command, resume_command
from sweeps.overrides import apply_overrides
from sweeps.presets import get_preset
from sweeps.summary import SweepSummary, format_summary
from sweeps.validation import build_spec

BARE_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
METRICS = ("accuracy", "ece_hist_prediction", "ece_hist_output", "ece_kde_prediction", "ece_kde_output")


def _bare(command: str, **kw) -> subprocess.CompletedProcess:
    """Run ``command`` as a user would paste it: bash, an empty environment, cwd = /."""
    return subprocess.run(
        ["env", "-i", *[f"{k}={v}" for k, v in BARE_ENV.items()], "bash", "-c", command],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
        **kw,
    )


@pytest.fixture()
def printed(tmp_path):
    storage = tmp_path / "sweeps"
    raw = apply_overrides(get_preset("quickstart"), [f"cache_dir={tmp_path / 'cache'}"])
    spec = build_spec(raw, preset="quickstart", name="printed", storage=str(storage))
    os.makedirs(spec.sweep_dir)
    uri = spec.resolved_tracking_uri
    client = MlflowClient(uri)
    exp_id = client.create_experiment(spec.name)
    run = client.create_run(exp_id, tags={"simlab.role": "trial", "simlab.method": "onehot"})
    client.log_param(run.info.run_id, "label", "onehot")
    for i, name in enumerate(METRICS):
        client.log_metric(run.info.run_id, name, 0.1 * (i + 1))
        client.log_metric(run.info.run_id, f"val_{name}", 0.1 * (i + 1))
    client.log_metric(run.info.run_id, "val_nll", 1.0)
    client.set_terminated(run.info.run_id, "FINISHED")
    summary = SweepSummary(spec.name, spec.sweep_dir, uri, exp_id, "parent", interrupted=True)
    return spec, summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_report_command_runs_as_printed(printed):
    spec, summary = printed
    text = format_summary(spec, summary)
    (line,) = [x for x in text.splitlines() if x.startswith("paper-style table:")]
    command = line.split(":", 1)[1].strip()
    proc = _bare(command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(spec.sweep_dir) / "report"
    assert (out / "report.md").exists() and "One-hot" in (out / "report.md").read_text()


@pytest.mark.slow
def test_resume_hint_names_this_interpreter_and_runs(printed):
    spec, summary = printed
    text = format_summary(spec, summary)
    (line,) = [x for x in text.splitlines() if x.startswith("interrupted: continue with")]
    command = line.split("continue with", 1)[1].strip()
    assert command == resume_command(spec) and "--resume" in command
    # The full resume would start Ray; the same command line with --help must parse and exit 0.
    proc = _bare(command.replace(" --resume", " --resume --help"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--resume" in proc.stdout


def test_mlflow_ui_command_is_light_and_absolute(printed):
    spec, summary = printed
    command = mlflow_ui_command(summary.tracking_uri, port=5123)
    assert "--workers 1" in command and command.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false /")
    text = format_summary(spec, summary)
    assert f"#/experiments/{summary.experiment_id}/runs?workflowType=machine_learning" in text


@pytest.mark.slow
def test_mlflow_ui_runs_as_printed_and_answers(printed):
    spec, summary = printed
    port = _free_port()
    text = format_summary(spec, summary, ui_port=port)
    (line,) = [x for x in text.splitlines() if x.startswith("MLflow UI:")]
    command = line.split(":", 1)[1].strip()
    url = re.search(r"then open (\S+)", text).group(1)
    assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
    proc = subprocess.Popen(
        ["env", "-i", *[f"{k}={v}" for k, v in BARE_ENV.items()], "bash", "-c", command],
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole below
    )
    try:
        deadline = time.monotonic() + 180
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                time.sleep(1)
        died = proc.poll() is not None
        assert body is not None, proc.stdout.read().decode()[-3000:] if died else "no answer"
        assert "OK" in body
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={spec.name}"
        with urllib.request.urlopen(api, timeout=10) as resp:
            assert summary.experiment_id in resp.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_bare_shell_has_no_venv():
    """The harness itself: without the absolute paths, `mlflow` is not found in that shell."""
    if shutil.which("mlflow", path=BARE_ENV["PATH"]):
        pytest.skip(reason="an mlflow is installed system-wide; the bare shell cannot show the failure")
    assert _bare("mlflow --version").returncode == 127
