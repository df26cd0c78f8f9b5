"""Periodic progress lines (count, rate, ETA) of long loops, checked against a fake clock."""

from __future__ import annotations

import logging

import pytest

from simlab.progress import Progress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_every_interval_with_rate_and_eta(caplog):
    clock, log = Clock(), logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        with Progress(100, "l2 pair distances", logger=log, unit="blocks", every_s=10, clock=clock) as p:
            for _ in range(100):
                clock.t += 0.5  # 2 blocks/s: 100 blocks take 50 s
                p.update()
    lines = [r.getMessage() for r in caplog.records]
    # one line per 10 s of work (at 20, 40, 60, 80 blocks), then the final one
    assert len(lines) == 5
    assert lines[0] == "l2 pair distances: 20/100 blocks (20%), 2 blocks/s, ETA 40.0s"
    assert lines[3] == "l2 pair distances: 80/100 blocks (80%), 2 blocks/s, ETA 10.0s"
    assert lines[4] == "l2 pair distances: 100 blocks in 50.0s"


def test_short_loops_stay_quiet(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO):
        with Progress(3, "quick", logger=logging.getLogger("q"), every_s=10, clock=clock) as p:
            for _ in range(3):
                clock.t += 1
                p.update()
    assert caplog.records == []


@pytest.mark.parametrize(("s", "text"), [(12.34, "12.3s"), (75.2, "1m15s"), (3725, "1h02m")])
def test_format_seconds(s, text):
    assert format_seconds(s) == text
