"""simlab.precision: how TrainConfig.precision resolves per device, the CPU bf16 probe, and bf16 training.

The CPU decision is tested with injected probe measurements (no mock of torch); the real probe is run
once for its contract (finite timings, global RNG untouched, cached per process).
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from scipy import stats

from simlab.checkpoint import load_checkpoint, save_checkpoint
from simlab.config import TrainConfig
from simlab.data import load_dataset
from simlab.precision import (
    MIN_SPEEDUP,
    BF16Probe,
    ResolvedPrecision,
    cpu_bf16_probe,
    probe_cpu_bf16,
    resolve_precision,
)
from simlab.train import fit
from tests.support import TINY, RecordingTracker

FASTER = BF16Probe(fp32_seconds=0.30, bf16_seconds=0.10, supported=True, capability="AVX512")
SLOWER = BF16Probe(fp32_seconds=0.10, bf16_seconds=0.25, supported=True, capability="AVX512")
TIE = BF16Probe(
    fp32_seconds=0.10, bf16_seconds=0.10 / (MIN_SPEEDUP - 0.05), supported=True, capability="AVX2"
)
UNSUPPORTED = BF16Probe(math.nan, math.nan, supported=False, capability="DEFAULT")


@pytest.mark.parametrize(
    ("precision", "device", "kw", "label"),
    [
        ("auto", "cpu", {"probe": FASTER}, "bf16+channels_last"),
        ("auto", "cpu", {"probe": SLOWER}, "fp32"),  # bf16 not faster on this CPU: fall back
        ("auto", "cpu", {"probe": TIE}, "fp32"),  # faster, but under the margin
        ("auto", "cpu", {"probe": UNSUPPORTED}, "fp32"),
        ("auto", "cpu", {"probe": FASTER, "amp": False}, "fp32"),  # amp=False: fp32 as before
        ("auto", "cpu", {"probe": FASTER, "channels_last": False}, "bf16"),
        ("auto", "cuda", {"probe": SLOWER}, "bf16+channels_last"),  # CUDA ignores the CPU probe
        ("auto", "cuda", {"amp": False}, "fp32+channels_last"),
        ("fp32", "cpu", {"probe": FASTER}, "fp32"),
        ("fp32", "cuda", {}, "fp32+channels_last"),
        ("bf16", "cpu", {"probe": SLOWER}, "bf16+channels_last"),  # asked for: no probe
        ("bf16", "cpu", {"channels_last": False}, "bf16"),
    ],
)
def test_resolve_precision(precision, device, kw, label):
    resolved = resolve_precision(precision, device, **kw)
    assert resolved.label == label
    assert resolved.autocast == label.startswith("bf16")
    assert resolved.reason  # says why, for the log


def test_auto_decides_at_the_margin():
    at = BF16Probe(1.0, 1.0 / MIN_SPEEDUP, True, "AVX512")
    assert resolve_precision("auto", "cpu", probe=at).label == "bf16+channels_last"
    assert resolve_precision("auto", "cpu", probe=at, min_speedup=MIN_SPEEDUP * 1.01).label == "fp32"


def test_resolve_precision_bad_input():
    with pytest.raises(ValueError, match="precision: unknown value 'fp16'.*auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision='bf16' needs amp=True"):
        resolve_precision("bf16", "cpu", amp=False)
    with pytest.raises(TypeError, match="probe: expected a BF16Probe"):
        resolve_precision("auto", "cpu", probe=2.0)
    with pytest.raises(ValueError, match="precision label"):
        ResolvedPrecision.from_label("fp16")


def test_label_round_trip():
    for label in ("fp32", "bf16", "fp32+channels_last", "bf16+channels_last"):
        assert ResolvedPrecision.from_label(label).label == label


def test_probe_measures_both_modes_without_touching_the_global_rng():
    before = torch.get_rng_state()
    probe = probe_cpu_bf16(batch=8, size=8, reps=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert probe.capability
    if probe.supported:
        assert probe.fp32_seconds > 0 and probe.bf16_seconds > 0
        assert probe.speedup == pytest.approx(probe.fp32_seconds / probe.bf16_seconds)
    else:
        assert math.isnan(probe.speedup)
    with pytest.raises(ValueError, match="reps must be a positive integer"):
        probe_cpu_bf16(reps=0)


def test_probe_is_cached_per_process():
    assert cpu_bf16_probe() is cpu_bf16_probe()


def test_probe_is_stored_per_machine_and_decides_from_the_store(tmp_path, monkeypatch):
    import dataclasses
    import json

    from simlab import precision

    first = cpu_bf16_probe(cache_dir=tmp_path)
    stored = json.loads((tmp_path / precision.PROBE_FILE).read_text())
    assert stored == {precision._machine_key(): dataclasses.asdict(first)}
    # A fresh process (empty in-process cache) takes the stored measurement instead of probing again:
    # a store that says bf16 is slower here makes auto fp32, one that says faster makes it bf16.
    for probe, label in ((SLOWER, "fp32"), (FASTER, "bf16+channels_last")):
        monkeypatch.setattr(precision, "_PROBES", {})
        d = tmp_path / label
        d.mkdir()
        (d / precision.PROBE_FILE).write_text(
            json.dumps({precision._machine_key(): dataclasses.asdict(probe)})
        )
        assert resolve_precision("auto", "cpu", cache_dir=d).label == label
    monkeypatch.setattr(precision, "_PROBES", {})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / precision.PROBE_FILE).write_text("{not json")
    assert cpu_bf16_probe(cache_dir=tmp_path / "bad").capability  # unreadable store: probes again


# ---------------------------------------------------------------------------------------------
# training in each precision
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("simlab-cache"))


def test_fit_reports_and_tags_the_precision_it_used(cache_dir, tmp_path):
    data = load_dataset("digits", cache_dir=cache_dir, subset_per_class=8, seed=0)
    tracker = RecordingTracker()
    cfg = TrainConfig.from_dict({**TINY, "cache_dir": cache_dir, "epochs": 1, "precision": "bf16"})
    result = fit(cfg, data=data, tracker=tracker, checkpoint_dir=tmp_path)
    assert result.precision == "bf16+channels_last"
    # What it used, where it ran and in how many processes (what `--reuse` compares, sweeps/reuse.py).
    assert {
        "simlab.precision_resolved": "bf16+channels_last",
        "simlab.device": "cpu",
        "simlab.world_size": "1",
    } in tracker.tags
    assert tracker.params[0]["precision"] == "bf16"  # the config field, logged as a param
    assert load_checkpoint(tmp_path / "checkpoint.pt")["precision"] == "bf16+channels_last"
    # Metrics come from float32 logits: probabilities are float32 and sum to 1.
    assert result.test_probs.dtype == torch.float32
    ones = torch.ones(len(data.test_y), dtype=torch.float64)
    torch.testing.assert_close(result.test_probs.double().sum(1), ones)


def test_resume_keeps_the_precision_auto_resolved_first(cache_dir, tmp_path):
    """An interrupted ``auto`` run resumes in the precision it started with, whatever the probe says now."""
    data = load_dataset("digits", cache_dir=cache_dir, subset_per_class=8, seed=0)
    cfg = TrainConfig.from_dict({**TINY, "cache_dir": cache_dir, "epochs": 2, "precision": "auto"})
    here = resolve_precision("auto", "cpu")  # what auto resolves to in this process (cached probe)
    other = "fp32" if here.autocast else "bf16+channels_last"

    def stop(report):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data=data, checkpoint_dir=tmp_path, on_epoch_end=stop)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["precision"] == here.label
    # As if epoch 1 had run where the probe decided the other way (another CPU, another load).
    state["precision"] = other
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    resumed = fit(cfg, data=data, checkpoint_dir=tmp_path)
    assert resumed.precision == other
    assert load_checkpoint(tmp_path / "checkpoint.pt")["precision"] == other


@pytest.mark.slow
def test_fp32_and_bf16_agree_within_seed_noise(cache_dir):
    """Accuracy and ECE of bf16 runs match fp32 runs on digits to within the spread over seeds.

    Five seeds per precision; Welch's t statistic of the difference of the means must stay under the
    two-sided 1 % critical value (the tolerance is the seed spread, not a fixed number). The bf16 runs
    must really differ from the fp32 ones (else bf16 was not used) and learn (accuracy well above 10 %).
    """
    seeds = range(5)
    data = {s: load_dataset("digits", cache_dir=cache_dir, subset_per_class=50, seed=s) for s in seeds}
    base = dict(
        TINY, cache_dir=cache_dir, subset_per_class=50, epochs=6, eval_every=6, batch_size=32, augment=False
    )
    runs: dict[str, list[dict[str, float]]] = {"fp32": [], "bf16": []}
    for precision in runs:
        for s in seeds:
            result = fit(TrainConfig.from_dict({**base, "seed": s, "precision": precision}), data=data[s])
            assert result.precision.split("+")[0] == precision
            runs[precision].append(result.metrics)
    for key in ("accuracy", "ece_hist_prediction", "ece_kde_prediction", "nll"):
        a = [m[key] for m in runs["fp32"]]
        b = [m[key] for m in runs["bf16"]]
        assert a != b, key  # bf16 changed the numbers: it was really used
        va, vb, n = statistics.variance(a), statistics.variance(b), len(a)
        se = math.sqrt(va / n + vb / n)
        df = (va / n + vb / n) ** 2 / ((va / n) ** 2 / (n - 1) + (vb / n) ** 2 / (n - 1))
        t_crit = stats.t.ppf(0.995, df)
        diff = statistics.fmean(b) - statistics.fmean(a)
        assert abs(diff) <= t_crit * se, (key, diff, se, a, b)
    assert min(m["accuracy"] for m in runs["fp32"] + runs["bf16"]) > 0.5
