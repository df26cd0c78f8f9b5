"""The cluster path of `cluster.yaml`, exercised on this machine (issue 15): an autoscaling Ray cluster.

`ray up cluster.yaml` cannot reach a cloud here, but its scheduling can be exercised with Ray's fake
multi-node provider (what `ray.cluster_utils.AutoscalingCluster` sets up; that class itself runs
``ray stop --force``, which would kill every Ray instance on a shared machine, and its config template
is not in the wheel, so the head is started here through `ray.cluster_utils.Cluster` with the same kind
of autoscaling config): the worker node types come from `cluster.yaml` (resources with GPUs declared,
min/max workers; CPUs scaled down to 1 per node for a 2-core machine), the head holds no CPU, so the
sweep's first trial needs the autoscaler to add a worker. Two trials share a worker
(``--gpus-per-trial 0.5 --cpus-per-trial 0.5``); the nodes have no CUDA, so training falls back to CPU
(``device=auto``). Once both trials have logged epoch 1, their worker node is killed (its raylet,
SIGKILL): Tune retries them, the autoscaler adds a node, and every trial finishes exactly once in
MLflow (one run per trial, FINISHED), nothing left RUNNING.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.faults.helpers import (
    REPO,
    Sweep,
    cmdline,
    descendants,
    free_port,
    record_faults,
    trial_steps,
    tune_trials,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.cluster]

# Long enough that both trials are still training when the node is killed (checked at the kill).
EPOCHS = 12
PER_CLASS = 60  # digits images per class (the fault suite's default 15 makes an epoch a few ms)
MAX_WORKERS = 2  # per node type: enough for one replacement node


def worker_node_types(path: Path = REPO / "cluster.yaml") -> dict:
    """The autoscaler's worker node types of `cluster.yaml`, sized for this machine: GPUs as declared,
    1 CPU per node, at most `MAX_WORKERS` nodes of a type."""
    config = yaml.safe_load(path.read_text())
    head = config["head_node_type"]
    out = {}
    for name, node in config["available_node_types"].items():
        if name == head:
            continue
        resources = dict(node.get("resources") or {})
        assert resources.get("GPU", 0) >= 1, f"{name}: cluster.yaml declares no GPU resource"
        resources["CPU"] = 1
        resources["object_store_memory"] = 100 * 1024 * 1024
        out[name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": int(node.get("min_workers", 0)),
            "max_workers": min(int(node.get("max_workers", 1)), MAX_WORKERS),
        }
    assert out, "cluster.yaml has no worker node type"
    return out


def fake_autoscaling_config(gcs_address: str, workers: dict) -> dict:
    """Ray's fake multi-node provider config (as in Ray's fake_multi_node/example.yaml)."""
    return {
        "cluster_name": "simlab-fake",
        "max_workers": sum(t["max_workers"] for t in workers.values()),
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            **workers,
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def _raylets(head_raylet: int) -> list[int]:
    """Raylets started from this test process (the head's and the fake worker nodes'), but the head's."""
    return [p for p in descendants(os.getpid()) if "raylet" in cmdline(p).split(" ")[0] and p != head_raylet]


def test_autoscaled_gpu_packing_survives_worker_node_loss(tmp_path: Path, monkeypatch) -> None:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    workers = worker_node_types()
    node_type = next(iter(workers))
    port = free_port()
    gcs = f"{ray._private.services.get_node_ip_address()}:{port}"
    config_path = tmp_path / "autoscaling.json"
    config_path.write_text(json.dumps(fake_autoscaling_config(gcs, workers)))
    monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")  # the monitor (autoscaler) inherits it
    monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "gcs_server_port": port,
            "autoscaling_config": str(config_path),
        },
    )
    started: set[int] = set()
    try:
        assert cluster.address == gcs, (cluster.address, gcs)
        head_raylet = cluster.head_node.all_processes["raylet"][0].process.pid
        sweep = Sweep(
            tmp_path,
            "t17",
            f"epochs={EPOCHS}",
            f"subset_per_class={PER_CLASS}",
            "tune_max_failures=3",
            args=(
                "--num-samples", "2",
                "--max-concurrent", "2",
                "--gpus-per-trial", "0.5",
                "--cpus-per-trial", "0.5",
            ),
            env={"RAY_ADDRESS": cluster.address},
        )  # fmt: skip
        sweep.start()
        try:
            deadline = time.monotonic() + 900
            while sum(1 in s for s in trial_steps(sweep.db).values()) < 2:
                assert sweep.proc.poll() is None, sweep.tail()
                assert time.monotonic() < deadline, sweep.tail()
                time.sleep(0.1)
            victims = _raylets(head_raylet)
            started.update(victims)
            assert len(victims) == 1, victims  # both trials packed on the one node the autoscaler added
            os.kill(victims[0], signal.SIGKILL)
            at_kill = trial_steps(sweep.db)  # MLflow lags the trials: this is an upper bound at the kill
            assert all(max(s) < EPOCHS for s in at_kill.values()), f"trials ended before the kill: {at_kill}"
            assert sweep.wait(timeout=1500) == 0, sweep.tail()
            started.update(_raylets(head_raylet))
        finally:
            started.update(descendants(os.getpid()))
            sweep.kill_tree()
    finally:
        started.update(descendants(os.getpid()))
        cluster.shutdown()
        for pid in started:  # the fake worker nodes (their raylets and workers) outlive the head
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    out = sweep.output()
    assert "waiting up to" in out, sweep.tail()  # the driver saw that the autoscaler had to add a node
    trials = tune_trials(sweep.sweep_dir)
    assert len(trials) == 2 and {t["status"] for t in trials} == {"TERMINATED"}, trials
    assert all(t["num_failures"] >= 1 for t in trials), trials  # both were on the killed node
    steps = trial_steps(sweep.db)
    for trial in trials:
        assert sorted(set(steps[trial["trial_id"]])) == list(range(1, EPOCHS + 1)), steps
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t17")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
    assert sorted((r.data.tags["mlflow.simlab.key"], r.info.status) for r in children) == sorted(
        (t["trial_id"], "FINISHED") for t in trials
    )  # exactly one run per trial, each FINISHED
    assert all(r.info.status != "RUNNING" for r in runs)
    record_faults(
        "T17 autoscaling cluster (cluster.yaml node types), worker node killed",
        injected=1,
        survived=1,
        detail=f"{node_type} x{workers[node_type]['resources'].get('GPU')} GPU declared, 2 trials packed "
        "at 0.5 GPU, node added by the autoscaler, killed mid-sweep, both retried on a new node",
    )
