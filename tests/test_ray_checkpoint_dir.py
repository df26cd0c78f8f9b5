"""The folder handed to Ray holds one checkpoint: `checkpoint.pt`, never the local `.prev` fallback."""

from __future__ import annotations

import torch

from simlab.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from sweeps.trial_checkpoints import ray_checkpoint_dir


def test_ray_checkpoint_dir_holds_only_the_newest_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    save_checkpoint({"epoch": 1, "w": torch.zeros(3)}, ckpt / "checkpoint.pt")
    save_checkpoint({"epoch": 2, "w": torch.ones(3)}, ckpt / "checkpoint.pt")  # epoch 1 -> .prev
    main, prev = checkpoint_paths(ckpt)
    assert prev.exists()
    folder = ray_checkpoint_dir(ckpt, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 2
    # The next epoch's save replaces checkpoint.pt; the folder's link keeps the reported bytes.
    save_checkpoint({"epoch": 3, "w": torch.full((3,), 2.0)}, ckpt / "checkpoint.pt")
    assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 2
    assert load_checkpoint(main)["epoch"] == 3
