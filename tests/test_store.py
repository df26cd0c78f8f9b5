"""SimilarityStore: hits and misses, keys, and that damaged or stale entries are recomputed, never used."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from simlab.similarity import store as store_mod
from simlab.similarity.sources import SIMILARITIES, SimilaritySource
from simlab.similarity.store import SimilarityStore, canonical_json
from tests.support import tiny_data


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch):
    """A registered fake source whose computations are counted; the matrix depends on its params."""
    calls: list[dict] = []

    def compute(data, *, scale=1.0, device="cpu", delay=0.0, info=None):
        calls.append({"scale": scale, "device": device})
        time.sleep(delay)
        k = len(data.class_names)
        i = np.arange(k, dtype=np.float64)
        if info is not None:
            info["note"] = "fake"
        return scale * np.abs(i[:, None] - i[None, :])

    src = SimilaritySource(
        "fake",
        "distance",
        compute,
        "1",
        {"scale": 1.0, "device": "cpu", "delay": 0.0},
        runtime_params=frozenset({"device", "delay"}),
    )
    monkeypatch.setitem(SIMILARITIES, "fake", src)
    return calls


def _expected(k: int, scale: float = 1.0) -> np.ndarray:
    return np.array([[scale * abs(a - b) for b in range(k)] for a in range(k)], dtype=np.float64)


def test_miss_then_hit(tmp_path: Path, counting):
    store = SimilarityStore(tmp_path)
    data = tiny_data()
    m1, meta1 = store.get(data, "fake", {"scale": 2.0})
    m2, meta2 = store.get(data, "fake", {"scale": 2.0})
    assert len(counting) == 1
    np.testing.assert_array_equal(m1, _expected(3, 2.0))
    np.testing.assert_array_equal(m2, m1)
    assert meta1["computed"] is True and meta2["computed"] is False
    assert (store.stats.computed, store.stats.hits, store.stats.invalid) == (1, 1, 0)
    assert meta2["class_names"] == data.class_names and meta2["source"] == "fake"
    assert meta2["params"] == {"scale": 2.0} and meta2["info"] == {"note": "fake"}
    assert meta2["sha256"] == hashlib.sha256(m1.tobytes()).hexdigest()
    assert meta2["seconds"] >= 0 and "created" in meta2
    # a second store (another process) on the same folder hits too
    other = SimilarityStore(tmp_path)
    other.get(data, "fake", {"scale": 2.0})
    assert other.stats.hits == 1 and len(counting) == 1


def test_entries_on_disk_are_plain_npy_and_json(tmp_path: Path, counting):
    store = SimilarityStore(tmp_path)
    _, meta = store.get(tiny_data(), "fake")
    npy, js = store.paths(meta["key"])
    np.testing.assert_array_equal(np.load(npy, allow_pickle=False), _expected(3))
    assert json.loads(js.read_text())["key"] == meta["key"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_key_changes_with_params_identity_version_not_runtime(tmp_path: Path, counting, monkeypatch):
    store = SimilarityStore(tmp_path)
    data = tiny_data()
    base = store.key(data, "fake", {})
    assert store.key(data, "fake", {"scale": 1.0}) == base  # explicit default == omitted
    assert store.key(data, "fake", {"device": "cuda", "delay": 1.0}) == base  # runtime-only params
    assert store.key(data, "fake", {"scale": 3.0}) != base
    other = tiny_data()
    other.identity = "tiny-seed1"
    assert store.key(other, "fake", {}) != base
    monkeypatch.setitem(
        SIMILARITIES,
        "fake",
        SIMILARITIES["fake"].__class__(**{**SIMILARITIES["fake"].__dict__, "version": "2"}),
    )
    assert store.key(data, "fake", {}) != base
    monkeypatch.setattr(store_mod, "CODE_VERSION", "999")
    assert store.key(data, "fake", {}) != base


def test_key_follows_file_contents(tmp_path: Path):
    vec = tmp_path / "v.txt"
    vec.write_text("2 2\ncat 1 0\ndog 0 1\n")
    store = SimilarityStore(tmp_path / "store")
    data = tiny_data(class_names=("cat", "dog"), per_class=(1, 1))
    k1 = store.key(data, "we", {"vectors": str(vec)})
    m1, _ = store.get(data, "we", {"vectors": str(vec)})
    np.testing.assert_allclose(m1, [[0, np.sqrt(2)], [np.sqrt(2), 0]])
    time.sleep(0.01)
    vec.write_text("2 2\ncat 3 0\ndog 0 4\n")  # same path, new contents
    os.utime(vec, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert store.key(data, "we", {"vectors": str(vec)}) != k1
    m2, meta2 = store.get(data, "we", {"vectors": str(vec)})
    assert meta2["computed"] and m2[0, 1] == pytest.approx(5.0)


def _corrupt_one_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # inside the array data, after the .npy header
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage",
    [
        "flip_byte",
        "truncate",
        "stale_class_names",
        "stale_version",
        "garbage_json",
        "pickled_array",
        "wrong_shape",
    ],
)
def test_damaged_or_stale_entry_is_recomputed_with_warning(tmp_path: Path, counting, damage: str, caplog):
    store = SimilarityStore(tmp_path)
    data = tiny_data()
    _, meta = store.get(data, "fake")
    npy, js = store.paths(meta["key"])
    if damage == "flip_byte":
        _corrupt_one_byte(npy)
    elif damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:100])
    elif damage in ("stale_class_names", "stale_version"):
        m = json.loads(js.read_text())
        if damage == "stale_class_names":
            m["class_names"] = ["a", "b", "c"]
        else:
            m["source_version"] = "0"
        js.write_text(json.dumps(m))
    elif damage == "garbage_json":
        js.write_text('{"key": ')
    elif damage == "pickled_array":
        np.save(npy, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    elif damage == "wrong_shape":
        arr = np.zeros((2, 2))
        np.save(npy, arr)
        m = json.loads(js.read_text())
        m["sha256"] = hashlib.sha256(arr.tobytes()).hexdigest()
        js.write_text(json.dumps(m))
    with caplog.at_level(logging.WARNING, logger="simlab.similarity.store"):
        matrix, meta2 = store.get(data, "fake")
    assert meta2["computed"] is True and len(counting) == 2
    np.testing.assert_array_equal(matrix, _expected(3))
    assert store.stats.invalid == 1
    assert any("invalid" in r.getMessage() and meta["key"] in r.getMessage() for r in caplog.records)
    # repaired: the next get is a clean hit
    store.get(data, "fake")
    assert len(counting) == 2


def test_failed_write_leaves_no_partial_file(tmp_path: Path, counting, monkeypatch):
    store = SimilarityStore(tmp_path)
    data = tiny_data()
    key = store.key(data, "fake", {})
    real_save = np.save

    def save_then_die(fh, arr, **kw):
        real_save(fh, arr, **kw)
        fh.truncate(10)  # a partial file on disk, as a crash mid-write would leave
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.np, "save", save_then_die)
    with pytest.raises(OSError, match="disk full"):
        store.get(data, "fake")
    npy, js = store.paths(key)
    assert not npy.exists() and not js.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    monkeypatch.setattr(store_mod.np, "save", real_save)
    matrix, meta = store.get(data, "fake")
    np.testing.assert_array_equal(matrix, _expected(3))


def test_crash_between_array_and_metadata_is_a_miss(tmp_path: Path, counting, monkeypatch):
    store = SimilarityStore(tmp_path)
    data = tiny_data()
    real_dump = json.dump

    def die(*a, **kw):
        raise KeyboardInterrupt  # the process dies after the .npy was replaced, before the .json

    monkeypatch.setattr(store_mod.json, "dump", die)
    with pytest.raises(KeyboardInterrupt):
        store.get(data, "fake")
    monkeypatch.setattr(store_mod.json, "dump", real_dump)
    npy, js = store.paths(store.key(data, "fake", {}))
    assert npy.exists() and not js.exists()
    _, meta = store.get(data, "fake")
    assert meta["computed"] is True and len(counting) == 2


def test_concurrent_gets_compute_once(tmp_path: Path, counting):
    data = tiny_data()
    results = []

    def worker():
        results.append(SimilarityStore(tmp_path).get(data, "fake", {"delay": 0.3})[1]["computed"])

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counting) == 1 and sorted(results) == [False, False, True]


def test_bad_arguments(tmp_path: Path, counting):
    store = SimilarityStore(tmp_path)
    with pytest.raises(ValueError, match="valid sources are"):
        store.get(tiny_data(), "nope")
    with pytest.raises(ValueError, match="'colour'"):
        store.get(tiny_data(), "fake", {"colour": 1})
    with pytest.raises(TypeError, match="params"):
        store.get(tiny_data(), "fake", {"scale": torch.tensor(1.0)})
    nameless = tiny_data()
    nameless.identity = ""
    with pytest.raises(ValueError, match="identity"):
        store.get(nameless, "fake")
    with pytest.raises(TypeError, match="root"):
        SimilarityStore(3)


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": [1, (2, 3)], "a": {"y": 1, "x": None}}) == canonical_json(
        {"a": {"x": None, "y": 1}, "b": [1, [2, 3]]}
    )
    assert canonical_json({"a": np.int64(3)}) == canonical_json({"a": 3})
