"""Progress of long loops as periodic INFO lines with count, rate and ETA.

Not tqdm: it is not a declared dependency (only a transitive one), and bars redrawn with carriage
returns garble Ray's interleaved worker logs and log files. A line every ``every_s`` seconds (and a
final one for loops that took at least that long) says the work is alive and when it will end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``1m15s``; ``3725`` -> ``1h02m``; below a minute ``12.3s``."""
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Progress:
    """``with Progress(total, "l2 distances", logger=log, unit="blocks") as p: ... p.update()``.

    Logs ``<what>: <done>/<total> <unit> (<pct>%), <rate> <unit>/s, ETA <t>`` at most every ``every_s``
    seconds, and ``<what>: <total> <unit> in <t>`` at the end when the loop took ``every_s`` or more.
    """

    def __init__(
        self,
        total: int,
        what: str,
        *,
        logger: logging.Logger,
        unit: str = "steps",
        every_s: float = 10.0,
        level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total < 0:
            raise ValueError(f"total: expected >= 0, got {total}")
        self.total, self.what, self.unit = int(total), what, unit
        self.logger, self.every_s, self.level, self.clock = logger, float(every_s), level, clock
        self.done = 0
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.logger.log(
                self.level,
                "%s: %d/%d %s (%.0f%%), %.3g %s/s, ETA %s",
                self.what,
                self.done,
                self.total,
                self.unit,
                100.0 * self.done / max(1, self.total),
                rate,
                self.unit,
                format_seconds(eta),
            )

    def close(self) -> None:
        elapsed = self.clock() - self.start
        if elapsed >= self.every_s:
            self.logger.log(
                self.level, "%s: %d %s in %s", self.what, self.done, self.unit, format_seconds(elapsed)
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
