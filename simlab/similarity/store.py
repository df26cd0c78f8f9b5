"""Content-addressed, checksummed cache of class-similarity matrices.

A similarity matrix is computed once per (dataset identity, source, parameters, source version, code
version) and then loaded by every trial of a sweep. Layout under ``root``::

    <key>.npy    float64 [K, K], written with np.save (never pickled)
    <key>.json   metadata: class names, source, kind, params, sha256 of the array bytes, seconds, created
    <key>.lock   advisory lock held while the entry is computed (POSIX fcntl), so concurrent trials
                 wait for one computation instead of all computing

``key`` = sha256 of the canonical JSON of those inputs (plus the contents' fingerprints of any files a
source reads, e.g. a word-vector file or a checkpoint), so a changed input can never hit a stale entry.

Writes are atomic (`simlab._io.atomic_path`: temp file in the same folder, fsync, ``os.replace``;
the ``.npy`` before the ``.json``, so a ``.json`` only ever describes a complete array). On load the
metadata is compared with what was asked for and the sha256 of the array bytes is verified; a
corrupted, truncated or stale entry is logged as a warning and recomputed, never used.

How to prove that a sweep computes each matrix once: ``meta["computed"]`` is True only in the call
that computed it, ``store.stats`` counts hits/computations in this process, every computation logs one
INFO line ``similarity store: computed ...``, and each entry's ``.json`` keeps ``created`` (the time of
its only computation).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from simlab._io import atomic_path
from simlab.similarity.sources import SimilaritySource, resolve_params, source_named

logger = logging.getLogger(__name__)

# Bump when the store's layout or key derivation changes, or when a change outside the sources (e.g. in
# simlab.similarity.distances.class_distance_matrix) alters results; every old entry then misses.
CODE_VERSION = "1"

try:  # POSIX advisory locks; on other platforms concurrent computations are merely duplicated work.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass
class StoreStats:
    """Counts for this process (each Ray worker has its own)."""

    hits: int = 0  # valid entry loaded
    computed: int = 0  # computations (misses + invalid entries)
    invalid: int = 0  # entries found corrupted, truncated or stale (then recomputed)
    keys_computed: list[str] = field(default_factory=list)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, tuples as lists, numpy scalars as Python numbers."""
    return json.dumps(
        _jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"params: keys must be strings, got {k!r} ({type(k).__name__})")
            out[k] = _jsonable(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        "params: values must be JSON-like (None, bool, int, float, str, list, dict), "
        f"got {type(value).__name__}"
    )


class SimilarityStore:
    """``store.get(data, source, params) -> (matrix float64 [K, K], meta dict)``; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root: expected a path (str or os.PathLike), got {type(root).__name__}")
        self.root = Path(root)
        self.stats = StoreStats()

    # ------------------------------------------------------------------------------------------
    def key(self, data: Any, source: str, params: Mapping[str, Any] | None = None) -> str:
        """The cache key (sha256 hex) of ``source`` with ``params`` on ``data``."""
        src, resolved = self._resolve(data, source, params)
        return self._key(data, src, resolved)

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    def get(
        self, data: Any, source: str, params: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Load the matrix of ``source`` on ``data`` or compute and save it.

        Args:
            data: a `simlab.data.ImageData` (``identity``, ``class_names`` and what the source reads).
            source: a `simlab.similarity.sources.SIMILARITIES` key.
            params: the source's parameters (unknown names are a ValueError listing the valid ones).

        Returns:
            ``(matrix, meta)``: matrix float64 ``[K, K]`` (read-only), meta the entry's JSON metadata
            plus ``computed`` (True only when this call computed it) and ``path``.
        """
        src, resolved = self._resolve(data, source, params)
        identity = getattr(data, "identity", None)
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"data: expected an ImageData with a non-empty str identity, got {identity!r}")
        key = self._key(data, src, resolved)
        expected = self._expected_meta(data, src, resolved, key)

        hit, problem = self._load(key, expected)
        if hit is None:
            self.root.mkdir(parents=True, exist_ok=True)
            with self._lock(key):
                # Another process may have computed it while we waited for the lock.
                hit, problem_now = self._load(key, expected)
                problem = problem or problem_now
                if problem is not None:
                    self.stats.invalid += 1
                    logger.warning(
                        "similarity store: entry %s in %s is invalid: %s; recomputing",
                        key,
                        self.root,
                        problem,
                    )
                if hit is None:
                    return self._compute(data, src, resolved, key, expected)
        self.stats.hits += 1
        logger.debug("similarity store: hit %s (%s)", key, src.name)
        return hit

    # ------------------------------------------------------------------------------------------
    def _resolve(
        self, data: Any, source: str, params: Mapping[str, Any] | None
    ) -> tuple[SimilaritySource, dict]:
        if not isinstance(source, str):
            raise TypeError(f"source: expected a str key of SIMILARITIES, got {type(source).__name__}")
        src = source_named(source)
        resolved = resolve_params(src, params or {})
        canonical_json(resolved)  # fail early on params that cannot be keyed
        return src, resolved

    def _key(self, data: Any, src: SimilaritySource, resolved: dict) -> str:
        keyed = {k: v for k, v in resolved.items() if k not in src.runtime_params}
        payload = {
            "identity": getattr(data, "identity", None),
            "source": src.name,
            "params": keyed,
            "files": src.file_fingerprints(resolved),
            "source_version": src.version,
            "code_version": CODE_VERSION,
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def _expected_meta(self, data: Any, src: SimilaritySource, resolved: dict, key: str) -> dict[str, Any]:
        return {
            "key": key,
            "identity": data.identity,
            "source": src.name,
            "kind": src.kind,
            "source_version": src.version,
            "code_version": CODE_VERSION,
            "params": json.loads(
                canonical_json({k: v for k, v in resolved.items() if k not in src.runtime_params})
            ),
            "class_names": list(data.class_names),
        }

    def _load(
        self, key: str, expected: dict[str, Any]
    ) -> tuple[tuple[np.ndarray, dict[str, Any]] | None, str | None]:
        """``(hit or None, problem or None)``; a missing entry is ``(None, None)``."""
        npy, meta_path = self.paths(key)
        if not meta_path.exists():
            return None, None  # a plain miss (an .npy without .json is an interrupted write: overwritten)
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a JSON object")
        except (OSError, ValueError) as err:
            return None, f"unreadable metadata ({err})"
        stale = [k for k, v in expected.items() if meta.get(k) != v]
        if stale:
            return None, f"stale metadata (mismatch in {', '.join(stale)})"
        try:
            matrix = np.load(npy, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            return None, f"unreadable or truncated array ({type(err).__name__}: {err})"
        k = len(expected["class_names"])
        if matrix.dtype != np.float64 or matrix.shape != (k, k):
            return None, f"array is {matrix.dtype} {tuple(matrix.shape)}, expected float64 ({k}, {k})"
        if hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest() != meta.get("sha256"):
            return None, "sha256 of the array does not match its metadata (corrupted)"
        matrix.setflags(write=False)
        return (matrix, {**meta, "computed": False, "path": str(npy)}), None

    def _compute(
        self, data: Any, src: SimilaritySource, resolved: dict, key: str, expected: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        info: dict[str, Any] = {}
        start = time.perf_counter()
        matrix = src(data, resolved, info=info)
        seconds = time.perf_counter() - start
        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        meta = {
            **expected,
            "shape": list(matrix.shape),
            "dtype": "float64",
            "sha256": hashlib.sha256(matrix.tobytes()).hexdigest(),
            "seconds": seconds,
            "created": datetime.now(UTC).isoformat(),
            "info": json.loads(canonical_json(info)),
        }
        npy, meta_path = self.paths(key)
        # The array first: a .json never points at a missing or partial array.
        with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, matrix, allow_pickle=False)
        with atomic_path(meta_path) as tmp, open(tmp, "w") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True)
        self.stats.computed += 1
        self.stats.keys_computed.append(key)
        logger.info(
            "similarity store: computed %s on %s (key %s) in %.2f s", src.name, data.identity, key, seconds
        )
        matrix.setflags(write=False)
        return matrix, {**meta, "computed": True, "path": str(npy)}

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.root / f"{key}.lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
