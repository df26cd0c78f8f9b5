"""cluster.yaml against Ray's own cluster-config validation (no cloud access) and the security plan
(RELIABILITY T14): dashboard on localhost, Ray token auth, SSH-only ingress, MLflow behind auth with a
password that is not in the file."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def commands(config: dict, *keys: str) -> list[str]:
    return [c for k in keys for c in config.get(k, [])]


def test_ray_accepts_the_config(config):
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before validating
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["available_node_types"]["gpu_worker"]["max_workers"] == 8
    assert prepared["available_node_types"]["gpu_worker"]["min_workers"] == 0  # autoscaling from zero


def test_ray_validation_is_not_vacuous(config):
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["max_wrokers"] = 8
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_dashboard_bound_to_localhost(config):
    (start,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in " ".join(commands(config, "head_start_ray_commands", "worker_start_ray_commands"))


def test_token_auth_on_every_node(config):
    starts = [
        c
        for c in commands(config, "head_start_ray_commands", "worker_start_ray_commands")
        if "ray start" in c
    ]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_only_ssh_open_to_the_outside(config):
    rules = config["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in rules] == [(22, 22, "tcp")]
    assert all(rng["CidrIp"] != "0.0.0.0/0" for r in rules for rng in r["IpRanges"])


def test_mlflow_server_behind_basic_auth_without_a_password_in_the_file(config):
    (server,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c and "nohup" in c]
    assert "--app-name basic-auth" in server
    assert "--artifacts-destination s3://" in server
    assert "0.0.0.0" not in server
    text = CLUSTER_YAML.read_text()
    assert "password1234" not in text  # MLflow's historical default admin password
    assert not re.search(r"(admin_password|mlflow_tracking_password)\s*=\s*[^%\s]", text)
    assert "secretsmanager get-secret-value" in server


def test_project_installed_and_data_mounted(config):
    assert config["file_mounts"]["~/simlab"] == "."
    assert any("pip install" in c and "-e ~/simlab" in c for c in config["setup_commands"])
