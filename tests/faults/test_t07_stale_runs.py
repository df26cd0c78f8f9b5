"""T7: runs left RUNNING by a killed process are marked KILLED by the clean-up command.

A real writer process logs to a real MLflow server; the server goes away, the writer spools one more
epoch, and is SIGKILLed. With the server back, ``python -m sweeps.cleanup`` must deliver the spooled
epoch and close the run KILLED; a run whose owner is still alive stays RUNNING.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps import tracking as mt
from sweeps.cleanup import main as cleanup_main
from tests.faults.helpers import PYTHON, REPO, MlflowServer, child_env, record_faults

pytestmark = [pytest.mark.fault, pytest.mark.slow]

WRITER = textwrap.dedent(
    """
    import sys, time
    from sweeps.tracking import MlflowTracker, ensure_experiment, get_or_create_run
    uri, key, spool = sys.argv[1], sys.argv[2], sys.argv[3]
    exp = ensure_experiment(uri, "t7")
    run = get_or_create_run(uri, exp, key=key, run_name=key)
    tracker = MlflowTracker(uri, run, spool_dir=spool, max_attempts=1, probe_interval=3600)
    tracker.log_metrics({"accuracy": 0.5}, step=0)
    print(run, flush=True)
    for line in sys.stdin:          # the test says when to log the next epoch
        step = int(line)
        tracker.log_metrics({"accuracy": 0.5 + step / 10}, step=step)
        print(f"logged {step} pending={tracker.pending}", flush=True)
    time.sleep(600)
    """
)


def _start_writer(uri: str, key: str, spool: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [PYTHON, "-c", WRITER, uri, key, str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=child_env(),
    )
    run_id = proc.stdout.readline().strip()
    assert run_id, f"writer {key} did not start"
    return proc, run_id


def test_cleanup_command_replays_spool_and_kills_orphaned_run(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spools"
    victim, victim_run = _start_writer(mlflow_server.uri, "victim", spool / "victim")
    survivor, survivor_run = _start_writer(mlflow_server.uri, "survivor", spool / "survivor")
    try:
        mlflow_server.stop()  # outage: the victim's next epoch can only go to its spool
        victim.stdin.write("1\n")
        victim.stdin.flush()
        assert victim.stdout.readline().strip() == "logged 1 pending=1"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        mlflow_server.start()

        client = MlflowClient(mlflow_server.uri)
        assert client.get_run(victim_run).info.status == "RUNNING"  # what a killed process leaves behind
        done = subprocess.run(
            [
                PYTHON,
                "-m",
                "sweeps.cleanup",
                "--tracking-uri",
                mlflow_server.uri,
                "--experiment",
                "t7",
                "--spool-dir",
                str(spool),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=child_env(),
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"spool {victim_run}: replayed 1 call(s)" in done.stdout
        assert "1 stale run(s) closed" in done.stdout
        victim_info = client.get_run(victim_run)
        assert victim_info.info.status == "KILLED"
        assert "no longer running" in victim_info.data.tags[mt.STALE_TAG]
        history = sorted((m.step, m.value) for m in client.get_metric_history(victim_run, "accuracy"))
        assert history == [(0, 0.5), (1, 0.6)]  # the spooled epoch was not lost
        assert client.get_run(survivor_run).info.status == "RUNNING"  # its owner is alive

        again = subprocess.run(
            [PYTHON, "-m", "sweeps.cleanup", "--tracking-uri", mlflow_server.uri, "--spool-dir", str(spool)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=child_env(),
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert "0 stale run(s) closed; 0 spooled call(s) delivered" in again.stdout
        record_faults("T7 killed writer + server outage", injected=2, survived=2)
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_cleanup_command_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # No server at all: validation must answer first, with exit code 2 and the argument named.
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "sweeps.cleanup",
            "--tracking-uri",
            "http://127.0.0.1:9",
            "--spool-dir",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "spool_dir" in done.stderr
    for args, needle in (
        (["--heartbeat-timeout", "0"], "--heartbeat-timeout"),
        (["--status", "FINISHED"], "--status"),
        ([], "--tracking-uri"),
    ):
        uri = [] if not args else ["--tracking-uri", "http://127.0.0.1:9"]
        with pytest.raises(SystemExit) as exit_info:
            cleanup_main([*uri, *args])
        assert exit_info.value.code == 2, args
        assert needle in capsys.readouterr().err


def test_cleanup_command_reports_unreachable_server() -> None:
    done = subprocess.run(
        [PYTHON, "-m", "sweeps.cleanup", "--tracking-uri", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 1
    assert "127.0.0.1:9" in done.stderr
