"""The decoded-image cache: checksummed uncompressed .npz files, written atomically, one decode per source."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from simlab._io import atomic_write
from simlab.data.splits import RawImages

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when decoding changes: old cache files are then ignored


def cached_raw(cache_dir: Path, kind: str, key_source: str, build: Callable[[], RawImages]) -> RawImages:
    key = hashlib.sha256(f"{key_source}|cache=v{CACHE_VERSION}".encode()).hexdigest()[:24]
    path = cache_dir / "datasets" / f"{kind}-{key}.npz"
    raw = _try_cache(path, kind, key_source)
    if raw is not None:
        return raw
    # Several trials starting at once would each decode the same source: the first one to take the
    # lock decodes, the others wait and then read its cache file.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            raw = _try_cache(path, kind, key_source, quiet=True)
            if raw is None:
                raw = build()
                _write_cache(path, raw)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return raw


def _try_cache(path: Path, kind: str, key_source: str, *, quiet: bool = False) -> RawImages | None:
    """The cached dataset at ``path``, or None when it is missing, unreadable, corrupt or stale."""
    if not path.exists():
        return None
    try:
        raw = _read_cache(path)
        if raw.source != key_source:
            raise ValueError(f"source mismatch ({raw.source!r})")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        if not quiet:
            logger.warning("dataset cache %s is unreadable or corrupt (%s); rebuilding it", path, err)
        return None
    logger.debug("loaded %s from cache %s", kind, path)
    return raw


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def _array_checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in _ARRAYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _write_cache(path: Path, raw: RawImages) -> None:
    arrays = {k: getattr(raw, k).numpy() for k in _ARRAYS}
    meta = {
        "version": CACHE_VERSION,
        "class_names": list(raw.class_names),
        "source": raw.source,
        "info": raw.info,
        "sha256": _array_checksum(arrays),
    }
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))
    logger.info("cached decoded dataset at %s", path)


def _read_cache(path: Path) -> RawImages:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in _ARRAYS}
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"cache version {meta.get('version')!r} != {CACHE_VERSION}")
    if _array_checksum(arrays) != meta["sha256"]:
        raise ValueError("array checksum mismatch")
    return RawImages(
        list(meta["class_names"]),
        *(torch.from_numpy(arrays[k]) for k in _ARRAYS),
        source=meta["source"],
        info=meta.get("info", {}),
    )
