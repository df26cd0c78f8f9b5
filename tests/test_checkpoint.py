"""simlab.checkpoint: atomic saves, .prev fallback, weights_only loading, the training-checkpoint schema."""

import os

import pytest
import torch

from simlab.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    check_training_checkpoint,
    checkpoint_paths,
    load_checkpoint,
    load_latest,
    save_checkpoint,
    training_checkpoint,
)


def _state(value: float) -> dict:
    gen = torch.Generator().manual_seed(3)
    return {
        "version": 1,
        "epoch": int(value),
        "model": {"w": torch.full((3, 2), value)},
        "rng": {"shuffle": gen.get_state()},
        "history": [{"accuracy": value, "lr": 0.1}],
        "class_names": ["a", "b"],
        "note": None,
    }


def test_round_trip_preserves_tensors_and_rng(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(2.0), path)
    state = load_checkpoint(path)
    assert state["epoch"] == 2
    torch.testing.assert_close(state["model"]["w"], torch.full((3, 2), 2.0))
    gen = torch.Generator()
    gen.set_state(state["rng"]["shuffle"])
    ref = torch.Generator().manual_seed(3)
    assert torch.equal(torch.rand(5, generator=gen), torch.rand(5, generator=ref))
    assert state["history"] == [{"accuracy": 2.0, "lr": 0.1}]
    # Nothing but the target is left in the folder (no stray temp files) on the first save.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_second_save_keeps_prev(tmp_path):
    path, prev = checkpoint_paths(tmp_path)
    save_checkpoint(_state(1.0), path)
    save_checkpoint(_state(2.0), path)
    assert load_checkpoint(path)["epoch"] == 2
    assert load_checkpoint(prev)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.prev"]


def test_truncated_file_is_detected_and_prev_used(tmp_path):
    path, prev = checkpoint_paths(tmp_path)
    save_checkpoint(_state(1.0), path)
    save_checkpoint(_state(2.0), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        load_checkpoint(path)
    state, used = load_latest(tmp_path)
    assert used == prev
    assert state["epoch"] == 1


def test_only_prev_left_after_crash_between_replaces(tmp_path):
    path, prev = checkpoint_paths(tmp_path)
    save_checkpoint(_state(1.0), path)
    os.replace(path, prev)  # what a crash between the two os.replace calls leaves
    state, used = load_latest(tmp_path)
    assert (state["epoch"], used) == (1, prev)


def test_all_damaged_raises(tmp_path):
    path, _ = checkpoint_paths(tmp_path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_latest(tmp_path)


def test_empty_dir_gives_none(tmp_path):
    assert load_latest(tmp_path) is None


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


class _Custom:
    pass


def test_weights_only_rejects_pickled_objects_on_load(tmp_path):
    # A file with an arbitrary class in it (written by plain torch.save) must not be unpickled.
    path = tmp_path / "evil.pt"
    torch.save({"obj": _Custom()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_save_rejects_non_weights_only_state_before_writing(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=r"state\['obj'\].*_Custom"):
        save_checkpoint({"obj": _Custom()}, path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    with pytest.raises(TypeError, match="state: expected a mapping"):
        save_checkpoint([1, 2], "x.pt")
    with pytest.raises(TypeError, match="path: expected a str or os.PathLike"):
        load_checkpoint(3)


def test_failed_write_leaves_old_checkpoint_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(1.0), path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# ---------------------------------------------------------------------------------------------
# the training-checkpoint schema
def _training(**config) -> dict:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return training_checkpoint(
        epoch=3,
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler={},
        rng={"seed": 0, "world_size": 1, "states": {"torch": torch.get_rng_state()}},
        config={"lr": 0.1, "data_dir": "/a", **config},
        precision="fp32",
        history=[{"epoch": 1.0}, {"epoch": 2.0}, {"epoch": 3.0}],
        class_names=("a", "b"),
    )


def test_training_checkpoint_loads_weights_only_and_passes_its_own_check(tmp_path):
    path = save_checkpoint(_training(), tmp_path / "checkpoint.pt")
    state = load_checkpoint(path)
    assert state["version"] == CHECKPOINT_VERSION and state["epoch"] == 3
    assert set(state) == {
        "version", "epoch", "model", "optimizer", "scheduler", "rng", "config", "precision", "history",
        "class_names",
    }  # fmt: skip
    assert state["class_names"] == ["a", "b"] and state["history"][-1] == {"epoch": 3.0}
    # data_dir, cache_dir, device and compile may change between the run and its resume.
    check_training_checkpoint(state, path, config={"lr": 0.1, "data_dir": "/b"}, class_names=["a", "b"])


def test_training_checkpoint_check_rejects_another_run(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = _training()
    with pytest.raises(
        ValueError, match=r"checkpoint_dir: .* was written by a different config \(keys lr differ\)"
    ):
        check_training_checkpoint(state, path, config={"lr": 0.2, "data_dir": "/a"}, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"keys lr, seed differ"):
        check_training_checkpoint(state, path, config={"lr": 0.2, "seed": 1}, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"trained on classes \['a', 'b'\], the data has \['a', 'c'\]"):
        check_training_checkpoint(state, path, config={"lr": 0.1}, class_names=["a", "c"])
    with pytest.raises(
        ValueError, match=r"not a version-1 training checkpoint \(version 2, missing keys \[\]\)"
    ):
        check_training_checkpoint({**state, "version": 2}, path, config={"lr": 0.1}, class_names=["a", "b"])
    partial = {k: v for k, v in state.items() if k not in ("optimizer", "history")}
    with pytest.raises(ValueError, match=r"missing keys \['history', 'optimizer'\]"):
        check_training_checkpoint(partial, path, config={"lr": 0.1}, class_names=["a", "b"])
