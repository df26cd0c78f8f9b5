"""Two-stage sweeps (``--seeds N``): stage "search" picks each method's configuration, stage "seeds"
re-runs each on N seeds.

One MLflow experiment (runs tagged `STAGE_TAG`), one sweep folder: the search stage's Tune experiment is
the sweep folder itself, the seeds stage's ``seeds/`` (`sweeps.storage.stage_dir`), and ``stages.json``
(written once the search stage has finished) records the chosen configurations and the seeds points, so
``--resume`` continues in whichever stage the sweep was and never redoes the search.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simlab._io import write_text_atomic
from sweeps.spec import SweepSpec
from sweeps.storage import STAGES_FILE
from sweeps.summary import finite_objectives

STAGE_TAG = "simlab.stage"  # MLflow tag of sweep and trial runs: "search" or "seeds"
STAGES_VERSION = 1


def choose_configurations(spec: SweepSpec, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each method's best finished search trial on the first objective (validation), per value of
    ``spec.seeds_group_by``: ``[{"method", "group", "trial_id", "params", <objective>}]``."""
    obj = spec.objectives[0]
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["status"] != "finished" or not finite_objectives(spec, row):
            continue
        merged = {**spec.fixed, **row["params"]}
        group = {g: merged.get(g) for g in spec.seeds_group_by}
        key = json.dumps([row["method"], group], sort_keys=True, default=str)
        old = best.get(key)
        value = row[obj.metric]
        if old is None or (value > old[obj.metric] if obj.mode == "max" else value < old[obj.metric]):
            best[key] = {
                "method": row["method"],
                "group": group,
                "trial_id": row["trial_id"],
                "params": dict(row["params"]),
                obj.metric: value,
            }
    return list(best.values())


def seeds_points(spec: SweepSpec, chosen: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stage "seeds": every chosen configuration x `SweepSpec.seed_values`."""
    return [
        {**{k: v for k, v in c["params"].items() if k != "seed"}, "seed": seed}
        for c in chosen
        for seed in spec.seed_values
    ]


def seeds_stage_state(spec: SweepSpec, chosen: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``stages.json`` records once the search stage has finished."""
    return {
        "version": STAGES_VERSION,
        "stage": "seeds",
        "objective": str(spec.objectives[0]),
        "seeds": list(spec.seed_values),
        "chosen": list(chosen),
        "points": seeds_points(spec, chosen),
    }


def read_stages(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The saved stage progress of a (local) sweep folder, None before the search stage finished."""
    path = Path(sweep_dir) / STAGES_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_stages(sweep_dir: str | Path, state: Mapping[str, Any]) -> Path:
    path = Path(sweep_dir) / STAGES_FILE
    write_text_atomic(path, json.dumps(state, indent=1, default=str) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Tune leaves its SIGINT handler installed after fit; it would swallow a Ctrl-C between the stages
# (setting the finished search's stop flag): the driver puts the caller's handlers back.
def signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    sigs = [signal.SIGINT] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
    return {sig: signal.getsignal(sig) for sig in sigs}


def restore_signal_handlers(handlers: Mapping[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
