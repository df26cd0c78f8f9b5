"""T8: a corrupted or stale similarity cache entry is detected, recomputed once, never half-visible.

Faults are real file damage (a flipped byte, a truncated array, garbage or stale metadata) and real
SIGKILLs of a process that is writing entries. The recomputed matrix is checked against a brute-force
reference (all pairwise distances with ``torch.cdist``), not against the store's own earlier output.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from simlab.data import load_dataset
from simlab.similarity.store import SimilarityStore
from tests.faults.helpers import PYTHON, REPO, child_env, record_faults

pytestmark = pytest.mark.fault

DATA_KW = {
    "num_classes": 4,
    "num_superclasses": 2,
    "samples_per_class": 12,
    "test_samples_per_class": 3,
    "image_size": 8,
}


def _data(tmp_path: Path):
    return load_dataset("synthetic", cache_dir=tmp_path / "cache", val_fraction=0.25, seed=0, **DATA_KW)


def _brute_l2(data) -> np.ndarray:
    """Paper A eq. 13-15, p=2: mean over all pairs (self-pairs too) of ||x - x'||_2, in [0, 1] pixel units."""
    x = data.train_x.reshape(len(data.train_x), -1).double() / 255.0
    y = data.train_y
    k = data.num_classes
    out = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            out[a, b] = torch.cdist(x[y == a], x[y == b]).mean().item()
    return out


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # inside the float64 payload (the .npy header is at the front)
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 17])


def _garbage_json(path: Path) -> None:
    path.write_text('{"key": "trunc')


def _stale_json(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["class_names"] = list(reversed(meta["class_names"]))  # describes some other class order
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "which"),
    [(_flip_byte, "npy"), (_truncate, "npy"), (_garbage_json, "json"), (_stale_json, "json")],
    ids=["flipped-byte", "truncated-array", "garbage-metadata", "stale-metadata"],
)
def test_damaged_entry_is_detected_and_recomputed_once(tmp_path: Path, damage, which: str) -> None:
    data = _data(tmp_path)
    reference = _brute_l2(data)
    root = tmp_path / "similarity"
    first, meta = SimilarityStore(root).get(data, "l2", {})
    assert meta["computed"] is True
    np.testing.assert_allclose(first, reference, rtol=1e-9, atol=1e-12)
    npy, meta_path = Path(meta["path"]), Path(meta["path"]).with_suffix(".json")
    damage(npy if which == "npy" else meta_path)

    store = SimilarityStore(root)
    again, meta2 = store.get(data, "l2", {})
    assert meta2["computed"] is True
    assert (store.stats.invalid, store.stats.computed, store.stats.hits) == (1, 1, 0)
    np.testing.assert_allclose(again, reference, rtol=1e-9, atol=1e-12)

    fresh = SimilarityStore(root)
    third, meta3 = fresh.get(data, "l2", {})
    assert meta3["computed"] is False  # the repaired entry is used: recomputed once, not every time
    assert (fresh.stats.invalid, fresh.stats.computed, fresh.stats.hits) == (0, 0, 1)
    record_faults(f"T8 {damage.__name__.strip('_')}", injected=1, survived=1)
    np.testing.assert_allclose(third, reference, rtol=1e-9, atol=1e-12)
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == sorted(
        [npy.name, meta_path.name]
    )  # no temp file left behind


CONCURRENT_GET = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from simlab.data import load_dataset
    from simlab.similarity.store import SimilarityStore
    kw = {kw!r}
    data = load_dataset("synthetic", cache_dir=Path(sys.argv[1]) / "cache", val_fraction=0.25, seed=0, **kw)
    matrix, meta = SimilarityStore(sys.argv[2]).get(data, "l2", {{}})
    print("computed", meta["computed"], flush=True)
    """
).format(kw=DATA_KW)


def test_concurrent_trials_recompute_a_corrupted_entry_once(tmp_path: Path) -> None:
    data = _data(tmp_path)
    root = tmp_path / "similarity"
    _, meta = SimilarityStore(root).get(data, "l2", {})
    _flip_byte(Path(meta["path"]))
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", CONCURRENT_GET, str(tmp_path), str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=child_env(),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    computed = sorted(o[0].strip() for o in outs)
    assert computed == ["computed False", "computed True"]  # one recomputation; the other waited and loaded
    record_faults("T8 concurrent corrupted read", injected=1, survived=1)
    np.testing.assert_allclose(SimilarityStore(root).get(data, "l2", {})[0], _brute_l2(data), rtol=1e-9)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from simlab.data import load_dataset
    from simlab.similarity.store import SimilarityStore
    kw = {kw!r}
    data = load_dataset("synthetic", cache_dir=Path(sys.argv[1]) / "cache", val_fraction=0.25, seed=0, **kw)
    store = SimilarityStore(sys.argv[2])
    print("ready", flush=True)
    seed = int(sys.argv[3])
    while True:                      # a new entry (new key) after another, until killed
        store.get(data, "l2", {{"max_per_class": 5, "seed": seed}})
        seed += 1
    """
).format(kw=DATA_KW)


@pytest.mark.slow
def test_sigkill_while_writing_never_leaves_a_partial_entry(tmp_path: Path) -> None:
    data = _data(tmp_path)
    root = tmp_path / "similarity"
    rng = random.Random(8)
    kills = 0
    for round_ in range(6):
        proc = subprocess.Popen(
            [PYTHON, "-c", WRITER, str(tmp_path), str(root), str(round_ * 10_000)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=child_env(),
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        # Every entry under its final name is complete: each .json describes an array that verifies,
        # and each .npy (with or without its .json) loads in full.
        for npy in root.glob("*.npy"):
            arr = np.load(npy, allow_pickle=False)
            assert arr.shape == (4, 4) and np.isfinite(arr).all(), npy
        for meta_path in root.glob("*.json"):
            meta = json.loads(meta_path.read_text())
            assert (root / f"{meta['key']}.npy").exists(), meta_path
    entries = list(root.glob("*.json"))
    assert kills == 6 and entries, "the writer never completed an entry"
    # Every completed entry is a hit (verified by sha256) for a fresh reader: nothing recomputed.
    store = SimilarityStore(root)
    for meta_path in entries:
        params = json.loads(meta_path.read_text())["params"]
        _, meta = store.get(data, "l2", {"max_per_class": params["max_per_class"], "seed": params["seed"]})
        assert meta["computed"] is False
    assert store.stats.invalid == 0
    mid_write = len(list(root.glob(".*.tmp")))
    record_faults(
        "T8 store kill",
        injected=kills,
        survived=kills,
        detail=f"{len(entries)} entries, {mid_write} mid-write",
    )
