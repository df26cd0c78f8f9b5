"""Talking to the MLflow server: a fail-fast client, which errors are worth a retry, and the retry.

The MLflow client retries a refused connection 7 times with back-off factor 2 (minutes) and waits
120 s for a response by default; the tracker's own retry + spool is the outage policy, so the client
should give up within seconds and hand over (`CLIENT_ENV_DEFAULTS`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

__all__ = ["CLIENT_ENV_DEFAULTS", "configure_client_env", "is_transient", "mlflow_client", "retry"]

# Applied with `os.environ.setdefault`: a value the user set explicitly wins.
CLIENT_ENV_DEFAULTS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # No tqdm bars in a sweep's log (an adopted run's artifacts are downloaded, `sweeps.reuse`).
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

# Error codes that mean "the server said no", not "the server was unreachable": retrying cannot help.
_PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "BAD_REQUEST",
        "INVALID_STATE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "ENDPOINT_NOT_FOUND",
        "NOT_FOUND",
    }
)

T = TypeVar("T")


def configure_client_env() -> None:
    """Make the MLflow HTTP client fail fast (see `CLIENT_ENV_DEFAULTS`); explicit settings win."""
    for name, value in CLIENT_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """A fail-fast `MlflowClient` for ``tracking_uri`` (all calls pass explicit run ids: no global
    active-run state)."""
    if not isinstance(tracking_uri, str) or not tracking_uri:
        raise TypeError(f"tracking_uri: expected a non-empty str, got {tracking_uri!r}")
    configure_client_env()
    return MlflowClient(tracking_uri=tracking_uri)


def is_transient(err: BaseException) -> bool:
    """True for an unreachable/overloaded server (retry, then spool), False for a rejected request."""
    if isinstance(err, MlflowException):
        return err.error_code not in _PERMANENT_ERROR_CODES
    return isinstance(err, (OSError, TimeoutError, ConnectionError)) or type(err).__module__.startswith(
        ("requests", "urllib3", "sqlalchemy")
    )


def retry(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int | None = None,
    deadline: float | None = None,
    base_delay: float,
    max_delay: float,
) -> T:
    """Call ``fn`` until it succeeds: at most ``attempts`` tries and/or until ``deadline`` (monotonic).

    Back-off doubles from ``base_delay`` up to ``max_delay``. Permanent errors are raised at once.
    """
    delay = base_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            out_of_attempts = attempts is not None and attempt >= attempts
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if out_of_attempts or out_of_time:
                raise
            logger.warning("%s failed (attempt %d): %s; retrying in %.1f s", what, attempt, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
