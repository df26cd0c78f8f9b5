"""A training process for the fault tests: ``python -m tests.faults.fit_child CONFIG_JSON CKPT_DIR``.

Trains `simlab.train.fit` on a tiny synthetic dataset, printing ``epoch N`` after each epoch's
checkpoint is written (and, with ``FIT_CHILD_PAUSE_AFTER_EPOCH=N``, sleeps after epoch N so a test
can kill it at a known point) and, at the end, ``final <json of the final metrics and the history>``. Floats
go through ``repr`` (exact round trip), so two processes' results can be compared bit for bit.
"""

from __future__ import annotations

import json
import os
import sys
import time

from simlab.config import TrainConfig
from simlab.data import load_dataset
from simlab.train import fit

TINY_DATA = {
    "num_classes": 4,
    "num_superclasses": 2,
    "samples_per_class": 24,
    "test_samples_per_class": 8,
    "image_size": 16,
}

TINY_CFG = {
    "dataset": "synthetic",
    "model": "small_cnn",
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.05,
    "device": "cpu",
    "amp": False,
    "channels_last": False,
    "augment": True,
    "val_fraction": 0.25,
    "seed": 0,
}


def tiny_data(cache_dir: str, seed: int = 0):
    return load_dataset(
        "synthetic", cache_dir=cache_dir, val_fraction=TINY_CFG["val_fraction"], seed=seed, **TINY_DATA
    )


def main() -> None:
    cfg = TrainConfig.from_dict({**TINY_CFG, **json.loads(sys.argv[1])})
    ckpt = sys.argv[2]
    data = tiny_data(cfg.resolved_cache_dir, seed=cfg.seed)
    pause_after = int(os.environ.get("FIT_CHILD_PAUSE_AFTER_EPOCH", "0"))

    def on_epoch_end(report) -> None:
        print("epoch", report.epoch, flush=True)
        if report.epoch == pause_after:  # a known point for the test to SIGKILL: epoch 1 checkpointed
            time.sleep(600)

    result = fit(cfg, data=data, checkpoint_dir=ckpt, on_epoch_end=on_epoch_end)
    print("final", json.dumps({"metrics": result.metrics, "history": result.history}), flush=True)


if __name__ == "__main__":
    main()
