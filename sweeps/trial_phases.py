"""Wall-clock timings of an in-process trial's phases, for `scripts/bench/bench_sweep.py`.

When `PROFILE_ENV` names a folder, each in-process trial (`sweeps.trainable.inprocess_trainable`) writes
``<trial id>.json`` with its phase timings there (and ``<trial id>.prof``, a cProfile of the whole
trainable, when `PROFILE_CPROFILE_ENV` is ``1``). Unset (the default) costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from simlab._io import write_text_atomic

logger = logging.getLogger(__name__)

PROFILE_ENV = "SIMLAB_TRIAL_PROFILE"
PROFILE_CPROFILE_ENV = "SIMLAB_TRIAL_CPROFILE"


class _Phases:
    """Wall-clock seconds of a trial's phases (written only when `PROFILE_ENV` names a folder)."""

    def __init__(self) -> None:
        self.folder = os.environ.get(PROFILE_ENV) or None
        self.start = time.time()
        self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.profiler = None
        if self.folder and os.environ.get(PROFILE_CPROFILE_ENV) == "1":
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def mark(self, name: str) -> None:
        """Charge the time since the previous mark to phase ``name``."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def write(self, trial_id: str, **extra: Any) -> None:
        if not self.folder:
            return
        try:
            folder = Path(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            if self.profiler is not None:
                self.profiler.disable()
                self.profiler.dump_stats(str(folder / f"{trial_id}.prof"))
            record = {
                "trial_id": trial_id,
                "pid": os.getpid(),
                "start": self.start,
                "end": time.time(),
                "phases_s": self.seconds,
                **extra,
            }
            write_text_atomic(folder / f"{trial_id}.json", json.dumps(record, indent=1))
        except OSError:
            logger.exception("could not write the phase timings of trial %s", trial_id)


class _TimedTracker:
    """A Tracker that charges the time of every call of the tracker it wraps to ``phases``."""

    def __init__(self, tracker: Any, phases: _Phases, name: str) -> None:
        self._tracker, self._phases, self._name = tracker, phases, name

    def _timed(self, method: str, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return getattr(self._tracker, method)(*args, **kwargs)
        finally:
            self._phases.add(self._name, time.perf_counter() - t0)

    def log_params(self, params: Any) -> None:
        self._timed("log_params", params)

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self._timed("log_metrics", metrics, step=step)

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        self._timed("log_artifact", path, artifact_path=artifact_path)

    def set_tags(self, tags: Any) -> None:
        self._timed("set_tags", tags)
