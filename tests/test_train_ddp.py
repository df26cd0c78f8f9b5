"""simlab.train.fit under torch.distributed: 2 CPU processes (gloo), gathered evaluation.

The metrics of both ranks must be identical (they are computed from the all-gathered logits of the
whole split) and must match a plain single-process evaluation of the checkpointed weights.
"""

from __future__ import annotations

import datetime
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from simlab.calibration import DirichletCalibration, EnsembleTemperatureScaling, TemperatureScaling
from simlab.checkpoint import load_checkpoint
from simlab.config import TrainConfig
from simlab.data import load_dataset
from simlab.models import build_model
from simlab.train import METRIC_NAMES, fit
from tests.support import TINY

# TINY is fp32: the reference below evaluates in fp32; auto is tested on its own
CFG = dict(TINY, recalibrate=True, device="cpu")


def _cheap_dir():
    return DirichletCalibration(lambdas=(1e-2,), mus=(1e-2,), max_iter=50)


RECALIBRATORS = {"ts": TemperatureScaling, "ets": EnsembleTemperatureScaling, "dir": _cheap_dir}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, cache: str, extra: dict | None = None) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    try:
        data = load_dataset("digits", cache_dir=cache, subset_per_class=8, seed=0)
        reports = []
        cfg = TrainConfig.from_dict({**CFG, "cache_dir": cache, **(extra or {})})
        result = fit(
            cfg,
            data=data,
            checkpoint_dir=os.path.join(out, "ck"),
            artifact_dir=os.path.join(out, f"art{rank}"),
            on_epoch_end=lambda r: reports.append(r.epoch),
            recalibrators=RECALIBRATORS,
        )
        torch.save(
            {
                "metrics": result.metrics,
                "history": result.history,
                "test_probs": result.test_probs,
                "val_probs": result.val_probs,
                "reports": reports,
                "artifacts": sorted(result.artifacts),
                "precision": result.precision,
            },
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_ranks_gathered_metrics(tmp_path):
    cache = str(tmp_path / "cache")
    # Decode once, before the ranks start.
    data = load_dataset("digits", cache_dir=cache, subset_per_class=8, seed=0)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), cache), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)

    # Same numbers on both ranks, every epoch report on both ranks, artifacts only on rank 0.
    assert r0["metrics"] == r1["metrics"]
    assert r0["history"] == r1["history"]
    assert torch.equal(r0["test_probs"], r1["test_probs"])
    assert r0["reports"] == r1["reports"] == [1, 2]
    assert r0["artifacts"] and r1["artifacts"] == []
    for prefix in ("", "val_", "ts_", "ets_", "dir_"):
        for name in METRIC_NAMES:
            assert math.isfinite(r0["metrics"][prefix + name]), prefix + name

    # A single-process evaluation of the checkpointed weights, normalising by hand.
    state = load_checkpoint(tmp_path / "ck" / "checkpoint.pt")
    assert state["epoch"] == 2 and state["rng"]["world_size"] == 2
    model = build_model("small_cnn", 10, in_channels=1, width=8)
    model.load_state_dict(state["model"])
    model.eval()
    for x_uint8, y, probs, prefix in (
        (data.test_x, data.test_y, r0["test_probs"], ""),
        (data.val_x, data.val_y, r0["val_probs"], "val_"),
    ):
        mean = torch.tensor(data.mean).view(1, -1, 1, 1)
        std = torch.tensor(data.std).view(1, -1, 1, 1)
        with torch.no_grad():
            logits = model(((x_uint8.float() / 255.0 - mean) / std).float())
        p = torch.softmax(logits.double(), dim=1)
        assert probs.shape == p.shape  # every sample of the split, none duplicated by the padding
        torch.testing.assert_close(probs.double(), p, atol=1e-5, rtol=0)
        m = r0["metrics"]
        assert m[prefix + "accuracy"] == pytest.approx((p.argmax(1) == y).double().mean().item(), abs=1e-12)
        assert m[prefix + "nll"] == pytest.approx(F.nll_loss(p.log(), y).item(), abs=1e-5)
        brier = ((p - F.one_hot(y, 10).double()) ** 2).sum(1).mean().item()
        assert m[prefix + "brier"] == pytest.approx(brier, abs=1e-5)


@pytest.mark.slow
def test_ddp_auto_precision_is_decided_once_for_all_ranks(tmp_path):
    """precision='auto' on CPU DDP: rank 0's probe decides and every rank trains in that precision."""
    cache = str(tmp_path / "cache")
    load_dataset("digits", cache_dir=cache, subset_per_class=8, seed=0)
    extra = {"precision": "auto", "epochs": 1, "recalibrate": False}
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), cache, extra), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["precision"] == r1["precision"] and r0["precision"] in ("fp32", "bf16+channels_last")
    assert load_checkpoint(tmp_path / "ck" / "checkpoint.pt")["precision"] == r0["precision"]
    assert r0["metrics"] == r1["metrics"]
