"""What a trial's MLflow run shows: a name saying what it is, and only the params its method uses."""

from __future__ import annotations

from sweeps.overrides import apply_overrides
from sweeps.presets import get_preset
from sweeps.trial_runs import readable_params, readable_tracker, trial_run_name
from sweeps.validation import build_spec


def _spec(*overrides: str):
    raw = apply_overrides(
        get_preset("quickstart"),
        ["label=onehot,uniform,similarity", "similarity=l1,l2", "alpha=0.01..0.3", "beta=0.5..6", *overrides],
    )
    return build_spec(raw, preset="quickstart", name="names", storage="/tmp/unused")


FLAT_CFG = {  # what fit logs: TrainConfig.to_dict() flattened
    "label": "similarity",
    "similarity": "l1",
    "similarity_args.energy": False,
    "alpha": 0.1,
    "beta": None,
    "lr": 0.05,
    "confidence_own": 0.6,
    "model_args.width": 16,
}


def test_trial_run_name_says_method_params_and_id():
    spec = _spec()
    name = trial_run_name(
        {"label": "similarity", "similarity": "l1", "alpha": 0.0991, "beta": 5.4}, spec, "ab12_00003"
    )
    assert name == "similarity:l1 \u03b1=0.099 \u03b2=5.40 [ab12_00003]"
    assert trial_run_name({"label": "onehot", "alpha": 0.2, "beta": 3.0}, spec, "t1") == "onehot [t1]"
    assert trial_run_name({"label": "uniform", "alpha": 0.2}, spec, "t2") == "uniform \u03b1=0.2 [t2]"


def test_readable_params_keep_only_what_the_method_uses():
    spec = _spec()
    onehot = readable_params({**FLAT_CFG, "label": "onehot"}, label="onehot", method="onehot", spec=spec)
    assert onehot["method"] == "onehot" and list(onehot)[0] == "method"
    for dropped in ("alpha", "beta", "similarity", "similarity_args.energy", "confidence_own"):
        assert dropped not in onehot
    assert onehot["lr"] == 0.05 and onehot["model_args.width"] == 16
    sim = readable_params(FLAT_CFG, label="similarity", method="similarity:l1", spec=spec)
    assert sim["alpha"] == 0.1 and sim["similarity"] == "l1" and "beta" not in sim  # None is not logged
    assert "None" not in map(str, sim.values())


def test_readable_tracker_filters_what_fit_logs():
    from sweeps.trial_context import TrialContext

    logged = []

    class Rec:
        run_id = "r"

        def log_params(self, params):
            logged.append(dict(params))

    spec = _spec()
    ctx = TrialContext(spec.to_json(), "sqlite://", "0", "p", "/tmp").to_dict()
    tracker = readable_tracker(Rec(), {"label": "uniform", "alpha": 0.2}, ctx)
    tracker.log_params(FLAT_CFG | {"label": "uniform"})
    assert logged[0]["method"] == "uniform" and "alpha" in logged[0] and "similarity" not in logged[0]
    assert tracker.run_id == "r"


def test_provenance_tags_name_commit_user_versions():
    import getpass
    import subprocess
    from importlib.metadata import version

    from sweeps.provenance import REPO_ROOT, provenance_tags

    tags = provenance_tags("sweeps/calibration.py")
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert tags["simlab.git.dirty"] in ("true", "false")
    assert tags["mlflow.user"] == getpass.getuser()
    assert tags["mlflow.source.name"] == "sweeps/calibration.py"
    for pkg in ("torch", "ray", "mlflow", "optuna"):
        assert tags[f"simlab.version.{pkg}"] == version(pkg)
    assert tags["simlab.version.python"].count(".") == 2


class _RecordingTracker:
    """Records what a trial's run was tagged and how it was closed."""

    run_id = "r"

    def __init__(self, *, fail: bool = False) -> None:
        self.tags: dict = {}
        self.closed: list = []
        self._fail = fail

    def set_tags(self, tags):
        if self._fail:
            raise ConnectionError("MLflow is down")
        self.tags.update(tags)

    def close(self, status, reason=None):
        if self._fail:
            raise ConnectionError("MLflow is down")
        self.closed.append((status, reason))


def test_a_trials_run_ends_by_the_cause_of_its_end(tmp_path):
    """Scheduler stop -> FINISHED + stopped tag; interrupt or unknown stop -> KILLED + interrupted tag
    (resumable); any other error -> FAILED with the reason (sweeps/stops.py, sweeps/trial_runs.py)."""
    from sweeps.stops import INTERRUPTED_TAG, mark_interrupted, mark_scheduler_stop
    from sweeps.trial_runs import STOPPED_TAG, end_run_for

    sweep = str(tmp_path / "sweep")
    (tmp_path / "sweep").mkdir()
    mark_scheduler_stop(sweep, "asha")

    def end(err, trial_id="t"):
        tracker = _RecordingTracker()
        end_run_for(err, tracker, sweep_dir=sweep, trial_id=trial_id, reason="ValueError: bad")
        return tracker

    stopped = end(SystemExit(0), "asha")
    assert stopped.closed == [("FINISHED", None)] and set(stopped.tags) == {STOPPED_TAG}
    unknown = end(SystemExit(0))
    assert unknown.closed == [("KILLED", None)] and set(unknown.tags) == {INTERRUPTED_TAG}
    assert "--resume" in unknown.tags[INTERRUPTED_TAG]
    ctrl_c = end(KeyboardInterrupt())
    assert ctrl_c.closed == [("KILLED", None)] and "SIGINT" in ctrl_c.tags[INTERRUPTED_TAG]
    failed = end(ValueError("bad"))
    assert failed.closed == [("FAILED", "ValueError: bad")] and failed.tags == {}
    mark_interrupted(sweep, reason="SIGINT")
    interrupted = end(SystemExit(0))
    assert interrupted.closed == [("KILLED", None)] and "SIGINT" in interrupted.tags[INTERRUPTED_TAG]
    # MLflow unreachable: ending the run never raises (the spool keeps the calls).
    end_run_for(KeyboardInterrupt(), _RecordingTracker(fail=True), sweep_dir=sweep, trial_id="t", reason="")
