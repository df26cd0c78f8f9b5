"""Bad data and bad environment reported as one line naming the file / word / field (issue 15, items
4, 5, 6 and 8): library errors here, the CLIs' exit codes in tests/faults/test_t15_env_errors.py."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from simlab.similarity.word_vectors import word_vector_distances


# --- word vectors: a wrong header or a NaN names the file and the word --------------------------------
def test_word2vec_header_with_the_wrong_dimension_names_file_and_word(tmp_path: Path):
    path = tmp_path / "vectors.txt"
    path.write_text("2 4\ncat 1 2 3\ndog 1 2 3\n")
    with pytest.raises(ValueError) as err:
        word_vector_distances(["cat", "dog"], path)
    assert str(path) in str(err.value) and "'cat'" in str(err.value) and "4" in str(err.value)


def test_word2vec_header_with_the_wrong_count_names_the_file(tmp_path: Path):
    path = tmp_path / "vectors.txt"
    path.write_text("3 3\ncat 1 2 3\ndog 1 2 3\n")
    with pytest.raises(ValueError, match="vectors.*" + str(path).replace("/", ".")):
        word_vector_distances(["cat", "dog"], path)


def test_nan_in_a_used_vector_names_file_and_word(tmp_path: Path):
    path = tmp_path / "vectors.txt"
    path.write_text("3 3\ncat 1 2 3\ndog 1 nan 3\nemu 1 2 3\n")
    with pytest.raises(ValueError) as err:
        word_vector_distances(["cat", "dog"], path)
    assert "'dog'" in str(err.value) and str(path) in str(err.value)
    # an unused word's NaN does not matter: the distances are those of a hand computation
    got = word_vector_distances(["cat", "emu"], path)
    assert got.tolist() == [[0.0, 0.0], [0.0, 0.0]]


# --- model_args checked against the builder's signature (issue 15 item 4) ------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"widht": 8}, "did you mean 'width'"),  # unknown key, suggested
        ({"width": "abc"}, "model_args.small_cnn.width: expected an integer"),  # annotation: int
        ({"width": 0}, "width must be a positive integer"),  # the builder's own check
    ],
)
def test_model_args_rejected_in_the_spec(args, needle):
    from sweeps.overrides import apply_overrides
    from sweeps.presets import get_preset
    from sweeps.registry_checks import check_registries
    from sweeps.spec import SpecError
    from sweeps.validation import build_spec

    sets = [f"model_args.small_cnn.{k}={v}" for k, v in args.items()]
    spec = build_spec(apply_overrides(get_preset("quickstart"), sets), preset="quickstart", name="q")
    with pytest.raises(SpecError, match=needle):
        check_registries(spec)


def test_wrn_depth_not_6n_plus_4_is_rejected_before_training():
    from simlab.models import check_model_args

    with pytest.raises(ValueError, match="model_args.wrn: depth"):
        check_model_args("wrn", {"depth": 27})
    check_model_args("wrn", {"depth": 16, "widen_factor": 4})  # a valid one passes


# --- a bad image is named (issue 15 item 8) --------------------------------------------------------------
def _png(color: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (color, color, color)).save(buf, format="PNG")
    return buf.getvalue()


def _image_zip(path: Path, *, bad: str | None = None, classes=("a", "b")) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "test"):
            for c in classes:
                for i in range(3):
                    name = f"data/{split}/{c}/{i}.png"
                    zf.writestr(name, b"not an image" if name == bad else _png(40 * i))
    return path


def test_a_corrupt_image_is_named(tmp_path: Path):
    from simlab.data import load_dataset

    bad = "data/train/b/1.png"
    path = _image_zip(tmp_path / "imgs.zip", bad=bad)
    with pytest.raises(ValueError) as err:
        load_dataset("imagefolder", data_dir=path, cache_dir=tmp_path / "cache")
    assert bad in str(err.value) and str(path) in str(err.value)


# --- a post-hoc recalibrator that cannot fit is skipped, the run kept (issue 15 item 8) --------------------
def test_failing_recalibrator_is_skipped_with_a_warning(tmp_path: Path, caplog):
    from simlab.calibration import DirichletCalibration, TemperatureScaling
    from simlab.config import TrainConfig
    from simlab.data import load_dataset
    from simlab.train import fit

    data = load_dataset("digits", cache_dir=tmp_path, subset_per_class=4, seed=0)
    cfg = TrainConfig.from_dict(
        {"dataset": "digits", "epochs": 1, "batch_size": 16, "cache_dir": str(tmp_path), "augment": False}
    )
    # Dir-ODIR's cross-validation needs more validation rows than the tiny split has: it raises.
    recalibrators = {
        "ts": TemperatureScaling,
        "dir": lambda: DirichletCalibration(n_folds=len(data.val_y) + 1),
    }
    with caplog.at_level("WARNING", logger="simlab.train"):
        result = fit(cfg, data=data, recalibrators=recalibrators)
    assert "ts_nll" in result.metrics and "nll" in result.metrics  # the run and the other recalibrator kept
    assert not any(k.startswith("dir_") for k in result.metrics)
    assert any("recalibration dir failed" in r.getMessage() for r in caplog.records)


# --- scripts/train.py: data errors are one line, exit 2 (issue 15 item 8) -----------------------------------
@pytest.mark.parametrize("fault", ["not a zip", "corrupt image"])
def test_train_script_data_error_is_one_line_exit_2(tmp_path: Path, fault: str):
    import subprocess
    import sys

    path = tmp_path / "data.zip"
    bad = "data/test/a/2.png"
    if fault == "not a zip":
        path.write_bytes(b"PK\x03\x04 truncated")
    else:
        _image_zip(path, bad=bad)
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "scripts" / "train.py"),
            "--set",
            "dataset=imagefolder",
            f"data_dir={path}",
            f"cache_dir={tmp_path / 'cache'}",
            "epochs=1",
            "--log-level",
            "WARNING",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], done.stderr
    if fault == "corrupt image":
        assert bad in lines[0]


# --- read-only tools: scripts/report.py and sweeps.cleanup (issue 15 items 5, 6) ---------------------------
def _report_module():
    from sweeps import report  # what scripts/report.py runs

    return report


@pytest.fixture(scope="module")
def one_run_store(tmp_path_factory) -> str:
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("exp", artifact_location=str(tmp / "artifacts"))
    run = client.create_run(exp_id, tags={"simlab.role": "trial", "simlab.method": "onehot"})
    for key, value in {"val_nll": 1.0, "val_accuracy": 0.5, "nll": 1.1, "accuracy": 0.4}.items():
        client.log_metric(run.info.run_id, key, value, step=1)
    client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def test_report_select_of_a_metric_no_run_has_lists_the_available(one_run_store, tmp_path, capsys):
    report = _report_module()
    args = ["--tracking-uri", one_run_store, "--experiment", "exp", "--out", str(tmp_path / "out")]
    assert report.main([*args, "--select", "val_ece_hist_outptu"]) == 2
    err = capsys.readouterr().err
    assert "val_ece_hist_outptu" in err and "val_accuracy, val_nll" in err
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_report_out_that_cannot_be_written_is_one_line_exit_2(one_run_store, tmp_path, capsys, where):
    report = _report_module()
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if where == "a file" else blocker / "sub"
    assert report.main(["--tracking-uri", one_run_store, "--experiment", "exp", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --out") and str(blocker) in err[0]


def test_read_only_tools_never_create_a_sqlite_store(tmp_path, capsys):
    from sweeps import cleanup

    typo = tmp_path / "mlfow.db"
    uri = f"sqlite:///{typo}"
    with pytest.raises(SystemExit) as exit_:
        cleanup.main(["--tracking-uri", uri])
    assert exit_.value.code == 2 and str(typo) in capsys.readouterr().err
    assert _report_module().main(["--tracking-uri", uri, "--experiment", "exp", "--out", str(tmp_path)]) == 2
    assert str(typo) in capsys.readouterr().err
    assert not typo.exists()


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["source_args.ae.epochs=inf"], "source_args.ae.epochs: expected a finite number"),
        (["source_args.ae.epochs=2.5"], "source_args.ae.epochs: expected an integer"),
    ],
)
def test_similarity_source_numbers_checked_in_the_spec(sets, needle):
    """issue 15 item 3: a source argument that would fail inside the matrix computation (after Ray
    started) is refused in the spec."""
    from sweeps.overrides import apply_overrides
    from sweeps.presets import get_preset
    from sweeps.registry_checks import check_registries
    from sweeps.spec import SpecError
    from sweeps.validation import build_spec

    overrides = ["label=similarity", "similarity=ae", "beta=1", *sets]
    spec = build_spec(apply_overrides(get_preset("quickstart"), overrides), preset="quickstart", name="q")
    with pytest.raises(SpecError, match=needle):
        check_registries(spec)
