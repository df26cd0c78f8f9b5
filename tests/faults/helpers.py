"""Real processes for the fault tests: an MLflow server that can be stopped and restarted on the same
port and database, free ports, and waiting on conditions. No mocks: faults are signals and files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
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


# ------------------------------------------------------------------------------------------------
# sweeps as real processes
SWEEP_CLI = REPO / "sweeps" / "calibration.py"
# `python -c SWEEP_CLI_WRAPPER ARGS` (cwd REPO) runs the CLI as `python sweeps/calibration.py ARGS` would,
# then reports on stderr whether Ray was imported (``RAY_IMPORTED True/False``).
SWEEP_CLI_WRAPPER = textwrap.dedent(
    """
    import runpy, sys
    sys.argv = ["sweeps/calibration.py", *sys.argv[1:]]
    try:
        runpy.run_path("sweeps/calibration.py", run_name="__main__")
    finally:
        print("RAY_IMPORTED", "ray" in sys.modules, file=sys.stderr, flush=True)
    """
)
# A sweep that takes a minute or two on 2 cores: quickstart preset (digits, small CNN, CPU, in-process
# trials), 15 images per class, uniform label smoothing with a continuous alpha (so every Optuna
# suggestion is a distinct number), no post-hoc recalibration.
TINY_SWEEP = (
    "epochs=3",
    "subset_per_class=15",
    "batch_size=32",
    "label=uniform",
    "recalibrate=false",
)


class Sweep:
    """``python sweeps/calibration.py`` in its own session (so the test can signal the whole tree)."""

    def __init__(
        self,
        root: Path,
        name: str,
        *sets: str,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.name = name
        self.storage = self.root / "sweeps"
        self.sets = (*TINY_SWEEP, f"cache_dir={self.root / 'cache'}", *sets)
        self.args = args
        self.env = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), **(env or {})}
        self.tracking_uri = tracking_uri
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def sweep_dir(self) -> Path:
        return self.storage / self.name

    @property
    def db(self) -> Path:
        """The sweep's default sqlite MLflow store (when no tracking URI is given)."""
        return self.sweep_dir / "mlflow.db"

    @property
    def uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.db}"

    def command(self, *, resume: bool = False) -> list[str]:
        cmd = [PYTHON, str(SWEEP_CLI), "--name", self.name, "--storage", str(self.storage), *self.args]
        for s in self.sets:
            cmd += ["--set", s]
        if self.tracking_uri:
            cmd += ["--tracking-uri", self.tracking_uri]
        return [*cmd, "--resume"] if resume else cmd

    def start(self, *, resume: bool = False) -> Sweep:
        self.runs += 1
        self.log = self.root / f"sweep-{self.name}-{self.runs}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(resume=resume),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=child_env(**self.env),
                start_new_session=True,
            )
        return self

    def wait(self, timeout: float = 900) -> int:
        """The driver's exit code; past ``timeout`` its threads' stacks (SIGUSR2, which the driver hands
        to faulthandler) and the log's tail go into the error, then the whole tree is killed."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            try:
                os.kill(self.proc.pid, signal.SIGUSR2)
                time.sleep(3.0)
            except ProcessLookupError:
                pass
            self.kill_tree(signal.SIGKILL)
            raise TimeoutError(
                f"the sweep ran past {timeout} s; its stacks and the log's tail:\n{self.tail(12000)}"
            ) from err

    def signal_tree(self, sig: int) -> None:
        """Send ``sig`` to the sweep's whole session, as a terminal's Ctrl-C or an OOM kill would."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill_tree(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL the sweep, every process it started (Ray included), and wait for the driver."""
        if self.proc is None:
            return
        victims = [self.proc.pid, *descendants(self.proc.pid)]
        self.signal_tree(sig)
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, n: int = 4000) -> str:
        return self.output()[-n:]


def _ppid_map() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        out[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for child, parent in _ppid_map().items():
        children.setdefault(parent, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def find_descendant(pid: int, needle: str) -> int | None:
    """A descendant of ``pid`` whose command line (Ray sets it to ``ray::<Actor>...``) holds ``needle``."""
    for child in descendants(pid):
        if needle in cmdline(child):
            return child
    return None


# ------------------------------------------------------------------------------------------------
# reading a sweep's MLflow store directly (sqlite), while the sweep writes it
def sql(db: Path, query: str, *args: object) -> list[tuple]:
    import sqlite3

    if not Path(db).exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(query, args).fetchall()
    except sqlite3.OperationalError:  # schema not created yet / locked
        return []
    finally:
        con.close()


def trial_steps(db: Path, metric: str = "train_loss") -> dict[str, list[int]]:
    """Trial key (Tune trial id) -> the steps at which ``metric`` was logged, one entry per point."""
    rows = sql(
        db,
        "SELECT t.value, m.step FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
        "WHERE t.key = 'mlflow.simlab.key' AND t.value NOT LIKE 'sweep:%' AND m.key = ? ORDER BY m.step",
        metric,
    )
    out: dict[str, list[int]] = {}
    for key, step in rows:
        out.setdefault(key, []).append(step)
    return out


def finished_trials(db: Path) -> int:
    rows = sql(
        db,
        "SELECT COUNT(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'simlab.role' AND t.value = 'trial' AND r.status = 'FINISHED'",
    )
    return rows[0][0] if rows else 0


def tune_trials(sweep_dir: Path) -> list[dict]:
    """Trials in Tune's newest experiment state: trial_id, status, num_failures, config."""
    import json

    # Newest by the timestamp in the name, as Tune picks it (after a restore Tune may touch old ones too).
    # Tune rewrites the file in place (open "w", then json.dump), so a read while a sweep runs can land
    # between the truncation and the write and see an empty or partial file: read again until it parses.
    read: list[dict | None] = []

    def parsed() -> bool:
        states = sorted(Path(sweep_dir).glob("experiment_state-*.json"))
        try:
            read.append(json.loads(states[-1].read_text()) if states else None)
        except (json.JSONDecodeError, FileNotFoundError):
            return False
        return True

    wait_for(parsed, timeout=30, what=f"a complete Tune experiment state in {sweep_dir}")
    data = read[-1]
    if data is None:
        return []
    out = []
    for meta_json, runtime_json in data["trial_data"]:
        meta, runtime = json.loads(meta_json), json.loads(runtime_json)
        out.append(
            {
                "trial_id": meta["trial_id"],
                "status": meta.get("status"),
                "num_failures": runtime.get("num_failures", 0),
                "config": meta.get("config"),
            }
        )
    return out


def optuna_study(sweep_dir: Path):
    """The Optuna study as Tune last saved it with its searcher: ``(study, {trial id: Optuna trial})``
    (`sweeps.search.saved_optuna_study`, the one reader of the searcher's private state)."""
    from sweeps.search import saved_optuna_study

    return saved_optuna_study(sweep_dir)
