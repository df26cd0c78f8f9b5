"""Real processes for the fault tests: an MLflow server that can be stopped and restarted on the same
port and database, free ports, and waiting on conditions. No mocks: faults are signals and files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: one torch thread each (2 shared cores), repo importable."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite store; `stop()` kills it, `start()` brings it back
    on the same port and database (a real outage, as a client sees it)."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        app_name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "mlflow.db"
        self.artifacts = self.root / "artifacts"
        self.port = port or free_port()
        self.app_name = app_name
        # The job runner (a huey consumer process) serves GenAI features these tests never use: off, to
        # spare the two shared cores.
        self.env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        cmd = [
            MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.app_name:
            cmd += ["--app-name", self.app_name]
        with open(self.log, "ab") as log:
            # Own session: stop() kills the whole group (the CLI spawns the web server as a child).
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=child_env(**self.env),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                )
            if self.healthy():
                return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"mlflow server not healthy after {timeout} s: {self.log.read_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGKILL the server's process group and wait until the port is closed."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None
        wait_for(lambda: not port_open(self.port), timeout=30, what=f"port {self.port} to close")

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def record_faults(test: str, *, injected: int, survived: int, detail: str = "") -> None:
    """Append how many faults a test injected and survived to ``$SIMLAB_FAULT_LOG`` (JSONL), if set.

    `scripts/bench/fault_summary.py`-style tallies for BENCHMARKS.md read it; tests never depend on it.
    """
    path = os.environ.get("SIMLAB_FAULT_LOG")
    if not path:
        return
    import json

    line = json.dumps(
        {
            "test": test,
            "injected": injected,
            "survived": survived,
            "detail": detail,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
