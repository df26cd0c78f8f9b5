"""Every preset's `--dry-run` output is pinned byte for byte (issue 11: a refactor must not change a sweep).

The pinned files live in tests/pins/dry_runs/<preset>.txt with two machine-dependent strings replaced:
the storage root the test passes (``<STORAGE>``) and the absolute path of the shared data folder
(``<SHARED>``). A deliberate change to a preset is re-pinned with

    SIMLAB_UPDATE_PINS=1 python -m pytest tests/test_preset_pins.py

and the diff of the pin files reviewed in the commit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sweeps import calibration
from sweeps.presets import DATA, PRESETS

PINS = Path(__file__).parent / "pins" / "dry_runs"


def _dry_run(preset: str, storage: Path, capsys: pytest.CaptureFixture[str]) -> str:
    rc = calibration.main(["--preset", preset, "--dry-run", "--storage", str(storage)])
    out = capsys.readouterr().out
    assert rc == 0, f"--dry-run of {preset!r} exited {rc}"
    shared = os.path.abspath(DATA)  # DATA is relative to the repo root, resolved by the spec
    return out.replace(str(storage), "<STORAGE>").replace(shared, "<SHARED>")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_dry_run_matches_pin(
    preset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).parents[1])  # the CLI is run from the repo root, as the README says
    got = _dry_run(preset, tmp_path / "sweeps", capsys)
    pin = PINS / f"{preset}.txt"
    if os.environ.get("SIMLAB_UPDATE_PINS") == "1":
        PINS.mkdir(parents=True, exist_ok=True)
        pin.write_text(got, encoding="utf-8")
    assert pin.exists(), f"no pin for preset {preset!r}: run with SIMLAB_UPDATE_PINS=1 and review the file"
    assert got == pin.read_text(encoding="utf-8"), f"--preset {preset} --dry-run changed (see {pin})"


def test_every_pin_is_a_preset() -> None:
    """A removed or renamed preset takes its pin with it (a stale pin would hide the rename)."""
    assert {p.stem for p in PINS.glob("*.txt")} == set(PRESETS)
