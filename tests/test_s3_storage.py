"""S3 parity: a tiny sweep on ``s3://`` against a real S3 API server (moto's server mode, started here on
127.0.0.1): started, SIGKILLed with everything it started, resumed with changed flags. The driver's own
files (sweep_spec.json, summary.md), Tune's state and checkpoints, and the MLflow artifacts all land in
the bucket; the resume continues the sweep as submitted (the saved spec, read back from S3), and every
trial ends with exactly one FINISHED MLflow run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("moto", reason="moto[server] (dev extra) runs the local S3 API server")
boto3 = pytest.importorskip("boto3")
from mlflow.tracking import MlflowClient  # noqa: E402

from tests.faults.helpers import Sweep, finished_trials, free_port, port_open, wait_for  # noqa: E402

pytestmark = [pytest.mark.slow]

BUCKET = "simlab"
NUM_SAMPLES = 3


class S3Sweep(Sweep):
    """`tests.faults.helpers.Sweep` with its storage in the bucket and a local sqlite MLflow store."""

    def __init__(self, root: Path, name: str, **kw) -> None:
        super().__init__(root, name, tracking_uri=f"sqlite:///{root / 'mlflow.db'}", **kw)
        self.s3_storage = f"s3://{BUCKET}/sweeps"

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    def command(self, *, resume: bool = False) -> list[str]:
        cmd = super().command(resume=resume)
        cmd[cmd.index("--storage") + 1] = self.s3_storage
        return cmd


@pytest.fixture()
def s3_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(tmp_path / "moto.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: port_open(port), timeout=120, what="moto server")
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,  # boto3 (MLflow's S3 artifacts) and pyarrow.fs (Ray, the driver)
            "AWS_ENDPOINT_URL_S3": endpoint,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield s3, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _keys(s3, prefix: str) -> list[str]:
    out, token = [], None
    while True:
        kw = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = s3.list_objects_v2(**kw)
        out += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def test_sweep_on_s3_runs_is_killed_and_resumes(tmp_path, s3_server):
    s3, env = s3_server
    sweep = S3Sweep(
        tmp_path, "s3sweep", args=("--num-samples", str(NUM_SAMPLES), "--max-concurrent", "1"), env=env
    )
    sweep.start()
    try:
        deadline = time.monotonic() + 900
        while finished_trials(sweep.db) < 1:
            assert sweep.proc.poll() is None, "the sweep ended before it could be killed:\n" + sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.5)
        time.sleep(2.0)  # let the next trial start
    finally:
        sweep.kill_tree(signal.SIGKILL)
    prefix = "sweeps/s3sweep/"
    saved = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "sweep_spec.json")["Body"].read())
    assert saved["num_samples"] == NUM_SAMPLES and saved["storage"] == sweep.s3_storage

    sweep.args = ("--num-samples", str(NUM_SAMPLES), "--max-concurrent", "2")  # changed: ignored on resume
    sweep.start(resume=True)
    assert sweep.wait() == 0, sweep.tail()
    assert "changed settings are ignored" in sweep.output()

    keys = _keys(s3, prefix)
    assert prefix + "summary.md" in keys
    assert any(k.rsplit("/", 1)[-1].startswith("experiment_state-") for k in keys)
    assert any(k.endswith("/checkpoint.pt") for k in keys)  # Tune's trial checkpoints
    assert not any(k.endswith("checkpoint.pt.prev") for k in keys)  # the fallback stays local
    artifacts = [k for k in keys if k.startswith(prefix + "mlartifacts/")]
    assert any(k.endswith("/config.json") for k in artifacts), artifacts[:20]

    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("s3sweep")
    assert exp.artifact_location == f"s3://{BUCKET}/sweeps/s3sweep/mlartifacts"
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("simlab.role") == "trial"]
    keys_ = [r.data.tags["mlflow.simlab.key"] for r in trials]
    assert len(keys_) == len(set(keys_)) == NUM_SAMPLES, keys_
    assert {r.info.status for r in trials} == {"FINISHED"}
