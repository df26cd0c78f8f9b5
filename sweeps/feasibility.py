"""Refuse a per-trial resource request no node can ever satisfy, instead of leaving trials PENDING.

Ray Tune queues a trial whose request fits no node and waits for it forever. Before any trial starts,
the driver compares one trial's request (`trial_bundles`) with the nodes of the cluster
(`infeasible_reason`):

- a cluster this process started (``ray.init`` local: fixed, no autoscaler): an infeasible request is
  a `SpecError` naming the field (``gpus_per_trial``, ``cpus_per_trial``, ``workers_per_trial``),
  exit 2, no trial started;
- a cluster the driver joined (``RAY_ADDRESS``: it may autoscale): a warning, and a bounded wait
  (`StartTimeout`, ``SIMLAB_START_TIMEOUT_S``, default 1200 s) for the first trial to start; past it the
  sweep stops with a `SpecError` that says what was asked and what the cluster has.

A non-finite request (``inf`` / ``nan``) is refused on any cluster.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sweeps.search import local_head_fixed
from sweeps.spec import SpecError, SweepSpec

logger = logging.getLogger(__name__)

START_TIMEOUT_ENV = "SIMLAB_START_TIMEOUT_S"
DEFAULT_START_TIMEOUT_S = 1200.0
DRIVER_CPU = 0.01  # the TorchTrainer mode's trial function (sweeps.tune_setup.make_trainable)


def trial_bundles(spec: SweepSpec) -> list[dict[str, float]]:
    """What one trial holds at once, in Ray resource names (one dict per actor)."""
    worker = {"CPU": float(spec.cpus_per_trial), "GPU": float(spec.gpus_per_trial)}
    if spec.in_process:
        return [worker]
    return [{"CPU": DRIVER_CPU}] + [dict(worker) for _ in range(spec.workers_per_trial)]


_FIELD = {"CPU": "cpus_per_trial", "GPU": "gpus_per_trial"}


def infeasible_reason(
    bundles: Sequence[Mapping[str, float]], nodes: Sequence[Mapping[str, float]]
) -> tuple[str, str] | None:
    """``(field, message)`` when the bundles cannot all be placed on ``nodes`` (each node's total
    resources), else None. Every bundle must fit one node; together they must fit the cluster
    (first-fit decreasing, as Ray's PACK placement would spread a trial's workers)."""
    for bundle in bundles:
        for key, value in bundle.items():
            if not math.isfinite(value) or value < 0:
                return _FIELD.get(key, key), f"{key} request {value!r} per worker is not a finite count >= 0"

    def fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
        return all(v <= 0 or node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())

    def show(node: Mapping[str, float]) -> str:
        return "{" + ", ".join(f"{k}: {node.get(k, 0.0):g}" for k in ("CPU", "GPU")) + "}"

    have = ", ".join(show(n) for n in nodes) or "no nodes"
    for bundle in bundles:
        if not any(fits(bundle, n) for n in nodes):
            short = [
                k for k, v in bundle.items() if v > 0 and not any(n.get(k, 0.0) + 1e-9 >= v for n in nodes)
            ]
            # GPUs first: the scarce resource (and what an autoscaler's node type adds).
            key = "GPU" if "GPU" in short else (short[0] if short else max(bundle, key=lambda k: bundle[k]))
            return _FIELD.get(key, key), (
                f"a trial asks {show(bundle)} per worker; no node of this cluster has that much "
                f"(nodes: {have})"
            )
    free = [dict(n) for n in nodes]
    for bundle in sorted(bundles, key=lambda b: (b.get("GPU", 0.0), b.get("CPU", 0.0)), reverse=True):
        node = next((n for n in free if fits(bundle, n)), None)
        if node is None:
            return "workers_per_trial", (
                f"a trial's {len(bundles)} actors {[show(b) for b in bundles]} do not fit on this cluster "
                f"together (nodes: {have})"
            )
        for k, v in bundle.items():
            node[k] = node.get(k, 0.0) - v
    return None


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of each alive node of the connected Ray cluster."""
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def start_timeout_s() -> float:
    raw = os.environ.get(START_TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_START_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(START_TIMEOUT_ENV, f"expected seconds (a number > 0), got {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise SpecError(START_TIMEOUT_ENV, f"expected seconds (a number > 0), got {raw!r}")
    return value


def check_resources(
    spec: SweepSpec, *, fixed: bool | None = None, nodes: Sequence[Mapping[str, float]] | None = None
) -> float | None:
    """Check one trial's request against the cluster before any trial starts.

    Raises `SpecError` when it can never be met (fixed cluster, or a non-finite request). On a cluster
    that may grow, returns the seconds to wait for the first trial to start (the request does not fit
    now: the autoscaler has to add a node), else None.
    """
    fixed = local_head_fixed() if fixed is None else fixed
    nodes = cluster_nodes() if nodes is None else nodes
    found = infeasible_reason(trial_bundles(spec), nodes)
    if found is None:
        return None
    field, message = found
    if fixed or "finite" in message:
        raise SpecError(field, f"{message}: trials would wait forever")
    timeout = start_timeout_s()
    logger.warning(
        "%s: %s; waiting up to %.0f s for the autoscaler to add a node that fits (%s)",
        field,
        message,
        timeout,
        START_TIMEOUT_ENV,
    )
    return timeout


class StartTimeout:
    """Tune callback: stop the sweep with a clear error if no trial has started within ``timeout_s``."""

    def __init__(self, timeout_s: float, *, field: str = "gpus_per_trial", what: str = "") -> None:
        self.timeout_s = float(timeout_s)
        self.field = field
        self.what = what
        self._deadline: float | None = None
        self._started = False

    def callback(self) -> Any:
        """A `ray.tune.Callback` driving `step` (built lazily: no Ray import at module import)."""
        from ray.tune import Callback

        outer = self

        class _StartTimeoutCallback(Callback):
            def setup(self, **info: Any) -> None:
                outer._deadline = time.monotonic() + outer.timeout_s

            def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
                outer.step(trials)

        return _StartTimeoutCallback()

    def step(self, trials: Sequence[Any]) -> None:
        if self._started:
            return
        if any(getattr(t, "status", "PENDING") != "PENDING" for t in trials):
            self._started = True
            return
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout_s
        if time.monotonic() > self._deadline:
            raise SpecError(
                self.field,
                f"no trial started within {self.timeout_s:.0f} s ({START_TIMEOUT_ENV}): "
                f"{self.what or 'the request fits no node'}; the cluster did not add a node that fits",
            )
