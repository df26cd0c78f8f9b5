"""Shared test fixtures (keep small)."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (marked gpu); none is available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``),
    restored after it. Small tensors: intra-op threads only add synchronisation, and on a shared,
    oversubscribed 2-core machine they make every tiny op ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def generator() -> torch.Generator:
    """A fresh seeded CPU generator: tests draw their data from it, never from the global RNG."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Run a test on CPU and, where a GPU exists, on CUDA."""
    return torch.device(request.param)
