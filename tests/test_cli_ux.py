"""CLI conventions of `sweeps/calibration.py` (in-process `main`, no Ray): several ``--set`` values per
flag, ``--trial-scheduler`` (``--scheduler`` deprecated), ``--config FILE``, examples in ``--help``,
``--dry-run`` warnings."""

from __future__ import annotations

import json
import logging

import pytest

from sweeps.calibration import main


def _dry(capsys, *args: str) -> tuple[dict, str]:
    assert main(["--dry-run", *args]) == 0
    out, err = capsys.readouterr()
    return json.loads(out[: out.index("\n# storage")]), err


def test_set_takes_several_values_after_one_flag(capsys, tmp_path):
    spec, _ = _dry(
        capsys, "--storage", str(tmp_path), "--set", "label=uniform,similarity", "alpha=0.1", "beta=2"
    )
    assert spec["fixed"]["alpha"] == 0.1 and spec["fixed"]["beta"] == 2
    assert spec["space"]["label"] == {"choice": ["uniform", "similarity"]}


def test_trial_scheduler_flag_set_key_and_deprecated_alias(capsys, tmp_path, caplog):
    spec, _ = _dry(capsys, "--storage", str(tmp_path), "--trial-scheduler", "asha")
    assert spec["scheduler"] == "asha"
    spec, _ = _dry(capsys, "--storage", str(tmp_path), "--set", "trial_scheduler=asha", "scheduler=plateau")
    assert spec["scheduler"] == "asha" and spec["fixed"]["scheduler"] == "plateau"  # Tune vs LR schedule
    with caplog.at_level(logging.WARNING):
        spec, _ = _dry(capsys, "--storage", str(tmp_path), "--scheduler", "asha")
    assert spec["scheduler"] == "asha" and "deprecated" in caplog.text


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--trial-scheduler" in out and "--resume-errored" in out


def test_config_reruns_a_saved_sweep_spec(capsys, tmp_path):
    first, _ = _dry(
        capsys, "--storage", str(tmp_path), "--name", "a", "--set", "alpha=0.2", "lr=0.01..0.1:log"
    )
    saved = tmp_path / "sweep_spec.json"
    saved.write_text(json.dumps(first))
    again, _ = _dry(capsys, "--config", str(saved), "--name", "b")
    assert again["name"] == "b" and again["preset"] == first["preset"]
    for key in ("fixed", "space", "objectives", "num_samples", "warm_start", "storage"):
        assert again[key] == first[key], key
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text(
        "fixed:\n  label: uniform\n  alpha: 0.3\nspace:\n  lr: {loguniform: [0.01, 0.1]}\nname: y\n"
    )
    from_yaml, _ = _dry(capsys, "--config", str(yaml_file), "--storage", str(tmp_path))
    assert from_yaml["fixed"]["alpha"] == 0.3 and from_yaml["name"] == "y"


def test_config_errors_name_the_flag(capsys, tmp_path):
    assert main(["--dry-run", "--config", str(tmp_path / "missing.json")]) == 2
    assert "--config" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["--dry-run", "--config", str(bad)]) == 2
    assert "--config" in capsys.readouterr().err


def test_dry_run_warns_about_gpus_and_an_existing_sweep(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import torch

    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart" / "sweep_spec.json").write_text("{}")
    _, err = _dry(capsys, "--storage", str(tmp_path), "--gpus-per-trial", "1")
    assert "already exists" in err
    if torch.cuda.device_count() == 0:
        assert "no CUDA GPU" in err
    _, err = _dry(capsys, "--storage", str(tmp_path / "fresh"))
    assert "warning" not in err


def test_sigusr2_dumps_every_threads_stack(tmp_path):
    """A stuck sweep can be asked where it is: after `main` starts, SIGUSR2 writes each thread's Python
    stack to stderr (faulthandler) and the process goes on (the default action would kill it)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import os, signal, threading, time\n"
        "from sweeps.calibration import main\n"
        "assert main(['--list-presets']) == 0\n"
        "threading.Thread(target=time.sleep, args=(30,), name='sleeper', daemon=True).start()\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "print('still alive', flush=True)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "still alive" in proc.stdout
    assert "Current thread 0x" in proc.stderr, proc.stderr  # the main thread, sending the signal
    assert "Thread 0x" in proc.stderr and "in _bootstrap_inner" in proc.stderr, proc.stderr  # the sleeper
