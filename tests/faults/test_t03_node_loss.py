"""T3: remove a simulated node mid-sweep; its trial is rescheduled on another node and finishes.

A real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): a head with no CPUs (so
no trial runs there) and two one-CPU worker nodes, one trial on each. Once both trials have logged
epoch 2 (so each has a registered checkpoint), one worker node is removed (its raylet and workers
killed). The sweep (a separate driver process joined to the cluster through ``RAY_ADDRESS``) must
retry the lost trial on the surviving node from its checkpoint and finish both trials.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.faults.helpers import Sweep, record_faults, trial_steps, tune_trials

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.cluster]

EPOCHS = 3


def test_node_loss_reschedules_trial(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        sweep = Sweep(
            tmp_path,
            "t3",
            "tune_max_failures=2",
            args=("--num-samples", "2", "--max-concurrent", "2"),
            env={"RAY_ADDRESS": cluster.address},
        )
        sweep.start()
        try:
            deadline = time.monotonic() + 800
            while sum(2 in s for s in trial_steps(sweep.db).values()) < 2:
                assert sweep.proc.poll() is None, sweep.tail()
                assert time.monotonic() < deadline, sweep.tail()
                time.sleep(0.2)
            cluster.remove_node(nodes[1], allow_graceful=False)
            assert sweep.wait() == 0, sweep.tail()
        finally:
            sweep.kill_tree()
    finally:
        cluster.shutdown()

    trials = tune_trials(sweep.sweep_dir)
    assert len(trials) == 2 and {t["status"] for t in trials} == {"TERMINATED"}, trials
    hit = [t for t in trials if t["num_failures"] >= 1]
    assert len(hit) == 1, trials  # exactly the trial on the removed node was rescheduled
    steps = trial_steps(sweep.db)
    for trial in trials:
        got = steps[trial["trial_id"]]
        assert sorted(set(got)) == list(range(1, EPOCHS + 1)), got
        assert got.count(1) == 1, got  # the rescheduled trial resumed from its checkpoint
        assert len(got) <= EPOCHS + 1, got
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t3")
    children = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("simlab.role") == "trial"
    ]
    assert sorted((r.data.tags["mlflow.simlab.key"], r.info.status) for r in children) == sorted(
        (t["trial_id"], "FINISHED") for t in trials
    )
    record_faults("T3 node removed", injected=1, survived=1, detail=f"rescheduled {hit[0]['trial_id']}")
