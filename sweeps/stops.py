"""Why a trial stopped: the trial scheduler (ASHA) or an interrupt (Ctrl-C) of the sweep.

Tune stops a running function trainable the same way in both cases: `tune.report` raises
``SystemExit(0)`` in the trial once the driver asks the trial's actor to stop (ASHA's STOP decision, or
the clean-up after the driver's SIGINT handler ended `Tuner.fit`). In the Tune state both end
TERMINATED. Only the driver knows which it was, so it writes it down in the sweep folder (shared
storage on a cluster: Ray Tune requires it for more than one node) before any trial is asked to stop:

- ``<sweep_dir>/simlab_stops/<trial_id>``: written by `RecordingASHAScheduler` when ASHA decides STOP
  (the scheduler's decision itself, not a guess from the trial's end);
- ``<sweep_dir>/simlab_interrupted``: written by `SigintGuard` when the driver receives SIGINT (removed
  when the sweep is resumed).

A trial that stops without a scheduler decision was interrupted: its MLflow run ends KILLED with the
tag ``simlab.interrupted`` (never FINISHED), it stays RUNNING in Tune's saved state, and ``--resume``
continues it from its checkpoint.

`SigintGuard` makes Ctrl-C end the sweep promptly at any moment: during `Tuner.fit` it hands the signal
to Tune's own stop (its SIGUSR1 handler: Tune saves the experiment state, then stops the trials; Tune's
SIGINT handler is disabled with ``TUNE_DISABLE_SIGINT_HANDLER`` so the guard sees the signal first);
outside it (MLflow set-up, Ray start-up, similarity matrices) it raises `KeyboardInterrupt`, deferred
while Ray starts (no half-started Ray processes), and checked again between phases, so a library that
swallows `KeyboardInterrupt` cannot make the sweep run on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from simlab._io import write_text_atomic

logger = logging.getLogger(__name__)

STOPS_DIR = "simlab_stops"
INTERRUPT_FLAG = "simlab_interrupted"
INTERRUPTED_TAG = "simlab.interrupted"  # MLflow tag of a trial run that an interrupt stopped (ends KILLED)
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"

SCHEDULER = "scheduler"
INTERRUPTED = "interrupted"
UNKNOWN = "stopped by Tune"


def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def _write(path: str, text: str) -> None:
    if "://" not in path:  # local: atomic (never a partial file)
        write_text_atomic(os.path.abspath(path), text)
        return
    fs, p = _fs(path)
    fs.create_dir(os.path.dirname(p), recursive=True)
    with fs.open_output_stream(p) as out:
        out.write(text.encode())


def _exists(path: str) -> bool:
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def mark_scheduler_stop(sweep_dir: str, trial_id: str) -> None:
    """Record that the trial scheduler decided to stop ``trial_id`` (before the trial is stopped)."""
    _write(f"{sweep_dir.rstrip('/')}/{STOPS_DIR}/{trial_id}", json.dumps({"time": time.time()}))


def scheduler_stops(sweep_dir: str) -> set[str]:
    """The trial ids the scheduler stopped, over the sweep's whole life (resumes included)."""
    import pyarrow.fs

    fs, p = _fs(f"{sweep_dir.rstrip('/')}/{STOPS_DIR}")
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True))
    except OSError:
        return set()
    return {os.path.basename(i.path) for i in infos if i.type == pyarrow.fs.FileType.File}


def mark_interrupted(sweep_dir: str, *, reason: str) -> None:
    _write(f"{sweep_dir.rstrip('/')}/{INTERRUPT_FLAG}", json.dumps({"time": time.time(), "reason": reason}))


def clear_interrupted(sweep_dir: str) -> None:
    fs, p = _fs(f"{sweep_dir.rstrip('/')}/{INTERRUPT_FLAG}")
    with contextlib.suppress(FileNotFoundError, OSError):
        fs.delete_file(p)


def was_interrupted(sweep_dir: str) -> bool:
    try:
        return _exists(f"{sweep_dir.rstrip('/')}/{INTERRUPT_FLAG}")
    except OSError:
        return False


def stop_cause(sweep_dir: str, trial_id: str) -> str:
    """Why Tune stopped a running trial: `SCHEDULER`, `INTERRUPTED` or `UNKNOWN` (neither recorded)."""
    try:
        if _exists(f"{sweep_dir.rstrip('/')}/{STOPS_DIR}/{trial_id}"):
            return SCHEDULER
    except OSError:
        logger.exception("could not read the scheduler's stop record of trial %s", trial_id)
    return INTERRUPTED if was_interrupted(sweep_dir) else UNKNOWN


def recording_asha(*, sweep_dir: str, **asha_kwargs: Any) -> Any:
    """An `ASHAScheduler` that records each STOP decision (`mark_scheduler_stop`) before Tune acts on it."""
    from ray.tune.schedulers import ASHAScheduler

    class RecordingASHAScheduler(ASHAScheduler):
        def __init__(self, *, sweep_dir: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._simlab_sweep_dir = sweep_dir

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == self.STOP:
                try:
                    mark_scheduler_stop(self._simlab_sweep_dir, trial.trial_id)
                except OSError:
                    logger.exception("could not record the scheduler's stop of trial %s", trial.trial_id)
            return decision

    return RecordingASHAScheduler(sweep_dir=sweep_dir, **asha_kwargs)


# ---------------------------------------------------------------------------------------------
class SigintGuard:
    """SIGINT handling of one sweep run (see the module docstring); a no-op off the main thread."""

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = sweep_dir
        self.count = 0
        self._defer = False
        self._tune_usr1: Any = None  # SIGUSR1 handler before Tuner.fit: Tune installs its own in fit
        self._in_fit = False
        self._active = False
        self._prev: Any = None
        self._prev_env: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.count > 0

    def __enter__(self) -> SigintGuard:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._active = True
        self._prev = signal.signal(signal.SIGINT, self._handle)
        self._prev_env = os.environ.get(TUNE_SIGINT_ENV)
        os.environ[TUNE_SIGINT_ENV] = "1"  # Tune's stop is reached through its SIGUSR1 handler instead
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._active:
            return
        signal.signal(signal.SIGINT, self._prev)
        if self._prev_env is None:
            os.environ.pop(TUNE_SIGINT_ENV, None)
        else:
            os.environ[TUNE_SIGINT_ENV] = self._prev_env
        self._active = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            logger.warning("interrupted (SIGINT): stopping the sweep; continue it later with --resume")
            if os.path.isdir(self.sweep_dir) or "://" in self.sweep_dir:
                try:
                    mark_interrupted(self.sweep_dir, reason="SIGINT")
                except Exception:  # noqa: BLE001 - the interrupt must go on
                    logger.exception("could not record the interrupt in %s", self.sweep_dir)
            if self._in_fit:
                tune_handler = signal.getsignal(signal.SIGUSR1)
                if callable(tune_handler) and tune_handler is not self._tune_usr1:
                    tune_handler(signum, frame)  # Tune: save the experiment state, stop the trials
                    return
            if self._defer:
                return  # raised by `check` once the deferred section ends
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise `KeyboardInterrupt` if a SIGINT came (and was deferred or swallowed)."""
        if self.count:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A section a SIGINT must not cut short (Ray start-up); `check` after it."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False

    @contextlib.contextmanager
    def tune_fit(self) -> Iterator[None]:
        """Around `Tuner.fit`: the first SIGINT goes to Tune's graceful stop, a second one aborts."""
        self.check()
        self._tune_usr1 = signal.getsignal(signal.SIGUSR1) if self._active else None
        self._in_fit = self._active
        try:
            yield
        finally:
            self._in_fit = False
