"""A training process for the fault tests: ``python -m tests.faults.fit_child CONFIG_JSON CKPT_DIR``.

Trains `simlab.train.fit` on a tiny synthetic dataset (`tests.support.TINY_SYNTHETIC`), printing
``epoch N`` after each epoch's checkpoint is written (and, with ``FIT_CHILD_PAUSE_AFTER_EPOCH=N``, sleeps
after epoch N so a test can kill it at a known point) and, at the end, ``final <json of the final
metrics and the history>``. Floats go through ``repr`` (exact round trip), so two processes' results can
be compared bit for bit.
"""

from __future__ import annotations

import json
import os
import sys
import time

from simlab.config import TrainConfig
from simlab.train import fit
from tests.support import TINY_SYNTHETIC, tiny_synthetic_data


def main() -> None:
    cfg = TrainConfig.from_dict({**TINY_SYNTHETIC, **json.loads(sys.argv[1])})
    ckpt = sys.argv[2]
    data = tiny_synthetic_data(cfg.resolved_cache_dir, seed=cfg.seed)
    pause_after = int(os.environ.get("FIT_CHILD_PAUSE_AFTER_EPOCH", "0"))

    def on_epoch_end(report) -> None:
        print("epoch", report.epoch, flush=True)
        if report.epoch == pause_after:  # a known point for the test to SIGKILL: epoch 1 checkpointed
            time.sleep(600)

    result = fit(cfg, data=data, checkpoint_dir=ckpt, on_epoch_end=on_epoch_end)
    print("final", json.dumps({"metrics": result.metrics, "history": result.history}), flush=True)


if __name__ == "__main__":
    main()
