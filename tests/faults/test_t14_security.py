"""T14: security smoke — code never unpickles untrusted files; MLflow sits behind auth with a secret.

- A scan of the project's own code (``simlab/``, ``sweeps/``, ``scripts/``) with ``ast``: every
  ``torch.load`` passes ``weights_only=True``; no ``pickle``/``dill``/``joblib`` load, no
  ``np.load(allow_pickle=True)``, no ``yaml.load`` without a safe loader — outside the dataset readers
  in ``simlab/data`` (which read the datasets' own published formats). The scanner is checked on a
  bad snippet first, so the scan cannot pass vacuously.
- A real ``mlflow server --app-name basic-auth`` with a random admin password (as ``cluster.yaml``
  starts it): anonymous requests and MLflow's historical default password are refused, the tracker
  works with the secret, and a wrong password fails at once instead of being spooled as an "outage".
- ``cluster.yaml`` (dashboard on 127.0.0.1, token auth, SSH-only ingress) is checked in
  tests/test_cluster_yaml.py; here only what the live server showed it needs.
"""

from __future__ import annotations

import ast
import base64
import re
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.faults.helpers import REPO, MlflowServer, record_faults

pytestmark = pytest.mark.fault

SCANNED = ("simlab", "sweeps", "scripts")
DATA_READERS = REPO / "simlab" / "data"  # dataset formats (e.g. CIFAR's python pickles) are read here only
HISTORICAL_DEFAULT_PASSWORD = "password1234"  # MLflow basic-auth's default admin password before 3.x


# ------------------------------------------------------------------------------------------------
# static scan
def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, *, data_reader: bool = False) -> list[str]:
    """Unsafe deserialisation calls in ``source``: ``'line N: what'`` for each."""
    tree = ast.parse(source)
    # Names bound by `from torch import load`, `from pickle import load as l`, `import numpy as np` ...
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        where = f"line {node.lineno}: {name}"
        if full in ("torch.load", "torch.serialization.load") and not _is_true(_kw(node, "weights_only")):
            found.append(f"{where} without weights_only=True")
        elif full in ("numpy.load", "np.load") and _is_true(_kw(node, "allow_pickle")):
            found.append(f"{where} with allow_pickle=True")
        elif full in ("yaml.load", "yaml.load_all") and "Safe" not in _dotted(
            _kw(node, "Loader") or ast.Name("")
        ):
            found.append(f"{where} without a safe Loader")
        elif not data_reader and re.fullmatch(
            r"(c?pickle|_pickle|dill|cloudpickle|joblib|pandas|pd)\.(load|loads|read_pickle)|"
            r"torch\.package\..*|shelve\.open",
            full,
        ):
            found.append(f"{where} unpickles")
    return found


def test_scanner_flags_every_unsafe_pattern() -> None:
    bad = """
import pickle, torch, yaml
import numpy as np
from torch import load as tl
from pickle import loads
torch.load("a.pt")
torch.load("a.pt", weights_only=False)
tl("b.pt")
np.load("x.npy", allow_pickle=True)
pickle.load(open("f", "rb"))
loads(b"")
yaml.load(s, Loader=yaml.Loader)
yaml.load(s)
"""
    good = """
import torch, yaml
import numpy as np
torch.load("a.pt", map_location="cpu", weights_only=True)
np.load("x.npy", allow_pickle=False)
np.load("x.npy")
yaml.safe_load(s)
yaml.load(s, Loader=yaml.SafeLoader)
"""
    assert len(unsafe_loads(bad)) == 8, unsafe_loads(bad)
    assert unsafe_loads(good) == []
    assert [f for f in unsafe_loads(bad, data_reader=True) if "unpickles" in f] == []


def test_project_code_never_unpickles_untrusted_files() -> None:
    files = [p for d in SCANNED for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 10  # the scan saw the code base
    problems = {
        str(p.relative_to(REPO)): found
        for p in files
        if (found := unsafe_loads(p.read_text(encoding="utf-8"), data_reader=DATA_READERS in p.parents))
    }
    assert problems == {}
    n_torch_loads = sum(p.read_text(encoding="utf-8").count("torch.load(") for p in files)
    record_faults(
        "T14 code scan", injected=0, survived=0, detail=f"{len(files)} files, {n_torch_loads} torch.load"
    )


# ------------------------------------------------------------------------------------------------
# live MLflow server with basic auth
def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_mlflow_basic_auth_refuses_anonymous_and_default_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from sweeps import tracking as mt

    # The auth config cluster.yaml writes: no permission by default, admin password only from the env.
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{tmp_path}/auth.db\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    password = secrets.token_urlsafe(18)
    server = MlflowServer(
        tmp_path / "mlflow",
        app_name="basic-auth",
        env={
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        },
    )
    server.start(timeout=180)
    try:
        url = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _status(url) == 401  # anonymous
        assert _status(url, "admin", HISTORICAL_DEFAULT_PASSWORD) == 401
        assert _status(url, "admin", password + "x") == 401
        assert _status(url, "admin", password) == 200

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", HISTORICAL_DEFAULT_PASSWORD)
        with pytest.raises(MlflowException) as info:
            mt.ensure_experiment(server.uri, "t14", timeout=60)
        assert info.value.error_code == "UNAUTHENTICATED"  # refused, not mistaken for an outage

        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        exp = mt.ensure_experiment(server.uri, "t14")
        run_id = mt.get_or_create_run(server.uri, exp, key="trial_0", run_name="trial_0")
        with mt.MlflowTracker(server.uri, run_id, spool_dir=tmp_path / "spool") as tracker:
            tracker.log_metrics({"accuracy": 0.75}, step=0)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
            with pytest.raises(MlflowException, match="401|not authenticated"):
                tracker.log_metrics({"accuracy": 0.8}, step=1)
            assert tracker.pending == 0  # a refused call is an error, never queued as if the server were down
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        history = MlflowClient(server.uri).get_metric_history(run_id, "accuracy")
        assert [(m.step, m.value) for m in history] == [(0, 0.75)]
    finally:
        server.stop()
    record_faults(
        "T14 mlflow auth", injected=4, survived=4, detail="anonymous, default, wrong password refused"
    )


def test_cluster_mlflow_server_has_what_basic_auth_needs_to_start() -> None:
    # The live test above shows `mlflow server --app-name basic-auth` refuses to start without
    # MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF); it must come from a secret, like the admin password.
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    (server,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c and "nohup" in c]
    assert "--app-name basic-auth" in server
    assert "MLFLOW_AUTH_ADMIN_PASSWORD=" in server
    assert re.search(r"MLFLOW_FLASK_SERVER_SECRET_KEY=\"?\$\(", server), "no CSRF secret key for the auth app"
    assert HISTORICAL_DEFAULT_PASSWORD not in (REPO / "cluster.yaml").read_text()
