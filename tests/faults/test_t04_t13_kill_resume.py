"""T4 + T13: SIGKILL the whole sweep (driver, Ray, trials), then ``--resume``.

T4: exactly ``num_samples`` trials, none duplicated, no Optuna trial left RUNNING, one MLflow run per
trial and none left RUNNING. T13: the restored sweep continues the same Optuna study — the trials it
held when killed are still there with the same parameters (sampler history intact), and no suggestion
is repeated (a sampler restarted from scratch with the same seed would suggest the same alphas again).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.faults.helpers import Sweep, finished_trials, optuna_study, record_faults, tune_trials

pytestmark = [pytest.mark.fault, pytest.mark.slow]

NUM_SAMPLES = 4


def test_sigkill_whole_sweep_then_resume(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "t4", args=("--num-samples", str(NUM_SAMPLES), "--max-concurrent", "1"))
    sweep.start()
    try:
        deadline = time.monotonic() + 600
        while finished_trials(sweep.db) < 1:
            assert sweep.proc.poll() is None, "the sweep ended before it could be killed:\n" + sweep.tail()
            assert time.monotonic() < deadline, sweep.tail()
            time.sleep(0.5)
        time.sleep(2.0)  # let the next trial start, so one is cut off mid-training
        assert sweep.proc.poll() is None, sweep.tail()
    finally:
        sweep.kill_tree(signal.SIGKILL)
    assert sweep.proc.returncode == -signal.SIGKILL
    before_study, _ = optuna_study(sweep.sweep_dir)
    before = [(t.number, t.params) for t in before_study.trials]
    finished_before = finished_trials(sweep.db)
    assert 1 <= finished_before < NUM_SAMPLES

    sweep.start(resume=True)
    assert sweep.wait() == 0, sweep.tail()

    # T4: exactly num_samples trials in Tune, each once, all finished.
    trials = tune_trials(sweep.sweep_dir)
    ids = [t["trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == NUM_SAMPLES, trials
    assert {t["status"] for t in trials} == {"TERMINATED"}, trials

    # T4 + T13: the Optuna study: num_samples trials, none RUNNING, the pre-kill history kept as is.
    study, ot_trials = optuna_study(sweep.sweep_dir)
    states = [t.state.name for t in study.trials]
    assert len(study.trials) == NUM_SAMPLES and "RUNNING" not in states, states
    assert set(ot_trials) == set(ids)  # every Tune trial is one Optuna trial
    assert [(t.number, t.params) for t in study.trials[: len(before)]] == before  # history intact
    alphas = [t.params["alpha"] for t in study.trials]
    assert len(set(alphas)) == NUM_SAMPLES, alphas  # no repeated suggestion after the restore

    # T4: one MLflow run per trial, none RUNNING (the killed ones were closed, then reattached).
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t4")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
    keys = sorted(r.data.tags["mlflow.simlab.key"] for r in children)
    assert keys == sorted(ids)
    assert [r.info.status for r in children] == ["FINISHED"] * NUM_SAMPLES
    assert all(r.info.status != "RUNNING" for r in runs)
    assert len([r for r in runs if r.data.tags.get("simlab.role") == "sweep"]) == 1
    # A trial started after Tune's last snapshot is lost by the kill: its run is in the trash, tagged.
    from mlflow.entities import ViewType

    from sweeps.tracking import ORPHAN_TAG

    deleted = client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert all(ORPHAN_TAG in r.data.tags and r.info.status != "RUNNING" for r in deleted)
    # The clean-up command agrees: nothing stale, no orphan left (it reads Tune's saved state too).
    from sweeps.cleanup import cleanup
    from sweeps.storage import tune_trial_ids

    assert tune_trial_ids(sweep.sweep_dir) == set(ids)
    report = cleanup(sweep.uri, sweep_dir=sweep.sweep_dir)
    assert report.orphans == [] and report.stale == {exp.experiment_id: []}, report
    record_faults(
        "T4/T13 SIGKILL sweep + resume",
        injected=1,
        survived=1,
        detail=f"{finished_before}/{NUM_SAMPLES} finished at the kill",
    )


def _copy_state_group(sweep_dir: Path, to: Path) -> list[str] | None:
    """Copy Tune's state files (experiment, search generator, searcher) of one moment into ``to``; the
    trial statuses of that experiment state, or None when Tune wrote a newer one while copying or the
    copy caught it mid-write (under load the mtime can read the same before and after)."""
    import json
    import shutil

    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not states:
        return None
    try:  # Tune may replace a file between the listing and the copy: then this moment is skipped
        before = states[-1].stat().st_mtime_ns
        to.mkdir(exist_ok=True)
        for pattern in ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl"):
            for f in sweep_dir.glob(pattern):
                shutil.copy2(f, to / f.name)
        if states[-1].stat().st_mtime_ns != before:
            return None
    except OSError:
        return None
    try:  # Tune writes this folder's state in place: a copy taken mid-write is empty or cut short
        data = json.loads((to / states[-1].name).read_text())
    except json.JSONDecodeError:
        return None
    return [json.loads(meta)["status"] for meta, _ in data["trial_data"]]


def test_resume_after_kills_during_tunes_state_writes(tmp_path: Path) -> None:
    """T4 when the kill lands while Tune writes its state.

    (1) Tune copies its experiment state into a local folder in place: a truncated one is refused with
    exit 2 when it is the only one, and set aside with its session's searcher files when a session
    before it can be restored. (2) Tune saves the trials (experiment state) and the searcher state
    (trials created; the limiter's running set) separately: here the trials come from after trial 1
    finished (trial 2 done, trial 3 running) and the searcher state from while trial 2 ran. Tune's own
    limiter would keep trial 2's slot forever and the resumed sweep wait forever
    (tests/test_search_limiter.py); this one runs exactly num_samples trials.
    """
    num_samples = 3
    sweep = Sweep(tmp_path, "t4b", args=("--num-samples", str(num_samples), "--max-concurrent", "1"))
    sweep.start()
    groups: dict[tuple[str, ...], Path] = {}
    last = None
    deadline = time.monotonic() + 600
    while sweep.proc.poll() is None:  # a copy of each moment Tune saved (they last seconds each)
        assert time.monotonic() < deadline, sweep.tail()
        states = sorted(sweep.sweep_dir.glob("experiment_state-*.json"))
        try:
            stamp = states[-1].stat().st_mtime_ns if states else None
        except OSError:  # replaced between the listing and the stat
            stamp = None
        if stamp is not None and stamp != last:
            to = tmp_path / f"moment{len(groups) + 1000}"
            statuses = _copy_state_group(sweep.sweep_dir, to)
            if statuses is not None:
                groups.setdefault(tuple(statuses), to)
                last = stamp
        time.sleep(0.05)
    assert sweep.proc.returncode == 0, sweep.tail()
    final = _copy_state_group(sweep.sweep_dir, tmp_path / "moment-final")
    if final is not None:
        groups.setdefault(tuple(final), tmp_path / "moment-final")

    # A kill while Tune copied its experiment state in place: the only session's state is truncated.
    (only,) = sweep.sweep_dir.glob("experiment_state-*.json")
    whole = only.read_bytes()
    only.write_bytes(whole[: len(whole) // 2])
    sweep.start(resume=True)
    assert sweep.wait(timeout=300) == 2, sweep.tail()
    assert "resume: no readable Tune experiment state" in sweep.output(), sweep.tail()
    assert not list(sweep.sweep_dir.glob("*.damaged"))  # nothing renamed when nothing is left
    only.write_bytes(whole)

    # Older: trial 1 done, trial 2 started (RUNNING, or still PENDING when Tune saved). Newer: trial 2
    # done and trial 3 started, else (trial 3 too quick to be seen unfinished) the final state.
    unfinished = ("RUNNING", "PENDING")
    older = next((g for st, g in groups.items() if len(st) == 2 and st[1] in unfinished), None)
    newer = next((g for st, g in groups.items() if len(st) == 3 and st[2] in unfinished), None)
    newer = newer or groups.get(("TERMINATED",) * 3)
    assert older is not None and newer is not None, sorted(groups)
    for f in sweep.sweep_dir.glob("*state-*"):  # the pair a kill between the uploads leaves
        f.unlink()
    for f in newer.glob("experiment_state-*.json"):
        f.replace(sweep.sweep_dir / f.name)
    for pattern in ("search_gen_state-*.json", "searcher-state-*.pkl"):
        for f in older.glob(pattern):
            f.replace(sweep.sweep_dir / f.name)

    sweep.start(resume=True)
    assert sweep.wait(timeout=600) == 0, sweep.tail()
    assert "saved at different moments" in sweep.output(), sweep.tail()
    trials = tune_trials(sweep.sweep_dir)
    assert len({t["trial_id"] for t in trials}) == len(trials) == num_samples, trials
    assert {t["status"] for t in trials} == {"TERMINATED"}, trials
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name("t4b")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("simlab.role") == "trial"]
    assert sorted(r.data.tags["mlflow.simlab.key"] for r in runs) == sorted(t["trial_id"] for t in trials)
    assert {r.info.status for r in runs} == {"FINISHED"}

    # The resume's own state (a second session) truncated by a kill: set aside, the session before
    # restored, and the sweep ends with num_samples trials again.
    newest = sorted(sweep.sweep_dir.glob("experiment_state-*.json"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    sweep.start(resume=True)
    assert sweep.wait(timeout=600) == 0, sweep.tail()
    assert f"set aside as *.damaged: {newest.name}" in sweep.output(), sweep.tail()
    assert (sweep.sweep_dir / (newest.name + ".damaged")).is_file()
    trials = tune_trials(sweep.sweep_dir)
    assert len(trials) == num_samples and {t["status"] for t in trials} == {"TERMINATED"}, trials
    record_faults("T4 kills during Tune's state writes + resume", injected=3, survived=3)
