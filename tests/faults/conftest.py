"""Fixtures for the fault tests (RELIABILITY.md T1-T14): real servers and processes, cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.helpers import MlflowServer


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite store), killed at the end of the test."""
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        yield server
    finally:
        server.stop()
