"""Errors that a retry cannot fix (bad configuration, bad data): a sweep fails the trial at once.

`sweeps.trainable` ends a trial whose `fit` raised one of these (`is_non_retryable`) as failed with the
reason, without raising it to Ray Tune, so Tune's `FailureConfig(max_failures)` (even -1: retry
forever) never retries it. Library code raises `ConfigError` / `DataError` (both `ValueError`s, so
callers that catch `ValueError` keep working) where the input itself is wrong.
"""

from __future__ import annotations


class NonRetryableError(Exception):
    """Marker base: the same call with the same input fails the same way."""


class ConfigError(NonRetryableError, ValueError):
    """A configuration no retry can make valid (e.g. model arguments the model does not accept)."""


class DataError(NonRetryableError, ValueError):
    """Data that cannot be used as given (missing, empty, undecodable, inconsistent)."""


# Built-in errors that mean "wrong input" in this code base (I/O and runtime failures are OSError /
# RuntimeError and stay retryable): a deterministic trial raises them again on every retry.
NON_RETRYABLE_TYPES: tuple[type[BaseException], ...] = (NonRetryableError, ValueError, TypeError, LookupError)


def is_non_retryable(err: BaseException) -> bool:
    """True when ``err`` (or an exception it was raised from) is one a retry cannot fix."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, NON_RETRYABLE_TYPES):
            return True
        seen.add(id(cur))
        cur = cur.__cause__
    return False
