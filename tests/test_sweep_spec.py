"""Sweep spec validation: the CLI rejects bad sweeps before Ray starts, naming the field, exit code 2.

(The < 2 s budget of RELIABILITY T11 is measured by the fault suite, not asserted here.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.overrides import apply_overrides, parse_value
from sweeps.presets import PRESETS, get_preset
from sweeps.spec import Dimension, SpecError, parse_objectives
from sweeps.validation import build_spec

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "sweeps" / "calibration.py"


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def spec_of(preset: str = "quickstart", *overrides: str, **top):
    return build_spec(apply_overrides(get_preset(preset), list(overrides)), preset=preset, name=preset, **top)


# ---------------------------------------------------------------------------------------------
# the CLI, as a user runs it (from the repo root, as a script)
@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--set", "lable=onehot"], "lable"),  # unknown key, with a suggestion
        (["--set", "alpha=1.5"], "alpha"),  # out of range (paper A eq. 18: 0 <= alpha <= 1)
        (["--set", "alpha=-0.1..0.2"], "alpha"),  # a range reaching out of bounds
        (["--set", "label=onehot", "--set", "beta=2"], "beta"),  # beta only with similarity labels
        (["--set", "label=uniform", "--set", "relaxation=l2"], "relaxation"),  # relaxation: confidence only
        (["--data-dir", "/nonexistent/cifar10-jpeg.zip"], "data_dir"),  # missing data file
        (
            ["--preset", "cifar10-calibration", "--set", "source_args.we.vectors=/nonexistent/words.txt"],
            "source_args.we.vectors",
        ),  # missing word-vector file
        (["--objective", "accuracy:max"], "objective"),  # a test metric is never optimised
        (["--preset", "cifar10-calibrashun"], "preset"),
        (["--num-samples", "0"], "num_samples"),
        (["--objective", "val_accuracy:max,val_nll:min", "--trial-scheduler", "asha"], "scheduler"),
    ],
)
def test_cli_rejects_bad_spec_naming_the_field(args, field):
    proc = run_cli("--dry-run", *args)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr, proc.stderr
    assert proc.stdout == ""  # nothing resolved, nothing started


def test_cli_suggests_the_close_key():
    proc = run_cli("--dry-run", "--set", "lable=onehot")
    assert "did you mean 'label'" in proc.stderr


def test_cli_dry_run_prints_the_resolved_sweep(tmp_path):
    proc = run_cli(
        "--dry-run",
        "--storage",
        str(tmp_path),
        "--name",
        "s1",
        "--set",
        "alpha=0.1",
        "--num-samples",
        "5",
        "--objective",
        "val_accuracy:max,val_ece_hist_output:min",
        "--trial-scheduler",
        "none",
    )
    assert proc.returncode == 0, proc.stderr
    body = proc.stdout[: proc.stdout.index("\n# storage")]
    spec = json.loads(body)
    assert spec["fixed"]["alpha"] == 0.1 and "alpha" not in spec["space"]
    assert spec["num_samples"] == 5
    assert spec["objectives"] == ["val_accuracy:max", "val_ece_hist_output:min"]
    assert f"sqlite:///{tmp_path}/s1/mlflow.db" in proc.stdout
    assert not (tmp_path / "s1").exists()  # a dry run writes nothing


def test_cli_rejects_class_words_missing_from_the_vectors(tmp_path):
    vectors = tmp_path / "few.txt"  # word2vec text format without 'cat' (and most CIFAR-10 words)
    vectors.write_text("3 4\ncar 1 0 0 0\ndog 0 1 0 0\nship 0 0 1 0\n")
    proc = run_cli(
        "--dry-run",
        "--preset",
        "cifar10-calibration",
        "--set",
        "label=similarity",
        "--set",
        "similarity=we",
        "--set",
        f"source_args.we.vectors={vectors}",
    )
    assert proc.returncode == 2, proc.stderr
    assert "source_args.we.vectors" in proc.stderr and "'cat'" in proc.stderr


def test_cli_registry_key_checked_before_ray():
    proc = run_cli("--dry-run", "--set", "loss=projecton")
    assert proc.returncode == 2
    assert "loss" in proc.stderr and "projection" in proc.stderr


# ---------------------------------------------------------------------------------------------
# the library behind it
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_validates(preset):
    spec = spec_of(preset)
    assert spec.num_samples >= 1
    assert all(o.metric.startswith("val_") for o in spec.objectives)


def test_paper_a_presets_follow_table_1():
    spec = spec_of("cifar100-calibration")
    assert spec.fixed["alpha"] == 0.1  # paper A §6.2
    assert spec.space["beta"] == Dimension("uniform", (0.5, 6.0))
    assert set(spec.space["similarity"].values) == {"l1", "l2", "ae", "we"}
    assert {"onehot", "uniform", "mixup", "similarity"} == set(spec.space["label"].values)
    assert spec.source_args["ae"]["latent_dim"] == 256  # paper A §6.1 (1024 for Tiny-ImageNet)
    assert spec_of("tinyimagenet-calibration").source_args["ae"]["latent_dim"] == 1024


def test_noisy_preset_follows_paper_b():
    spec = spec_of("cifar10-noisy")
    assert spec.fixed["relaxation"] == "l2" and spec.fixed["confidence_source"] == "pairs"
    assert (spec.fixed["confidence_own"], spec.fixed["confidence_other"]) == (0.6, 0.4)  # paper B §4.1
    assert (spec.fixed["trusted_own"], spec.fixed["trusted_other"]) == (0.95, 0.05)
    assert set(spec.space["trusted_size"].values) == {100, 1000, 10000}
    assert spec.objectives[0].metric == "val_accuracy" and spec.objectives[0].mode == "max"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1", 0.1),
        ("3", 3),
        ("true", True),
        ("l2", "l2"),
        ("onehot,uniform", {"choice": ["onehot", "uniform"]}),
        ("0.5..6", {"uniform": [0.5, 6]}),
        ("1e-3..1e-1:log", {"loguniform": [0.001, 0.1]}),
        ("1..5:int", {"int": [1, 5]}),
        ('{"depth": 28}', {"depth": 28}),
        ("../shared/data/x.zip", "../shared/data/x.zip"),
    ],
)
def test_parse_value(text, expected):
    assert parse_value(text) == expected


def test_set_fixes_or_searches_a_field():
    raw = apply_overrides(get_preset("quickstart"), ["alpha=0.05", "lr=0.01..0.1:log", "num_samples=4"])
    assert raw["fixed"]["alpha"] == 0.05 and "alpha" not in raw["space"]
    assert raw["space"]["lr"] == {"loguniform": [0.01, 0.1]} and "lr" not in raw["fixed"]
    assert raw["num_samples"] == 4


def test_narrowing_labels_drops_the_presets_settings_they_do_not_use():
    spec = spec_of("quickstart", "label=onehot")
    assert "beta" not in spec.space and "similarity" not in spec.space and "alpha" not in spec.space
    assert spec.labels == ("onehot",)
    assert all(w.get("label", "onehot") == "onehot" for w in spec.warm_start)


def test_the_sweep_reads_field_applicability_from_the_config():
    """One rule: the config's field metadata says where a field applies; a preset's only_for narrows it."""
    from simlab.config import FIELD_METHODS, METHODS

    spec = spec_of("cifar10-noisy")  # only_for: loss and trusted_size for confidence labels only
    for name in {*FIELD_METHODS, "loss", "trusted_size", "lr"}:
        for method in METHODS:
            expected = method in spec.only_for.get(name, FIELD_METHODS.get(name, METHODS))
            assert spec.applies(name, method) == expected, (name, method)
    # the --set pruning reads the same rule: label=mixup keeps mixup, drops the confidence settings
    raw = apply_overrides(get_preset("cifar10-noisy"), ["label=onehot,mixup", "mixup=0.1..0.4"])
    assert raw["space"]["mixup"] == {"uniform": [0.1, 0.4]}
    assert not {"confidence_source", "relaxation", "confidence_own", "loss", "trusted_size"} & {
        *raw["fixed"],
        *raw["space"],
    }


def test_confidence_source_under_a_similarity_only_sweep_names_the_field():
    with pytest.raises(SpecError) as err:
        spec_of("quickstart", "confidence_source=pairs")
    assert err.value.field == "confidence_source" and "only applies to label 'confidence'" in str(err.value)
    with pytest.raises(SpecError) as err:  # a confidence source searched as a distance source
        spec_of("quickstart", "similarity=l1,pairs")
    assert err.value.field == "similarity" and "gives confidence scores" in str(err.value)
    with pytest.raises(SpecError) as err:  # confidence labels without a source
        spec_of("cifar10-noisy", "label=confidence", "confidence_source=None")
    assert err.value.field == "confidence_source"


def test_narrowing_a_choice_keeps_only_warm_start_points_that_fit():
    spec = spec_of("cifar10-calibration", "similarity=l2,we", "label=onehot,similarity")
    assert list(spec.warm_start) == [
        {"label": "onehot"},
        {"label": "similarity", "similarity": "l2"},
        {"label": "similarity", "similarity": "we"},
    ]


def test_objectives_infer_directions_and_reject_unknown():
    assert [(o.metric, o.mode) for o in parse_objectives("val_accuracy,val_nll")] == [
        ("val_accuracy", "max"),
        ("val_nll", "min"),
    ]
    with pytest.raises(SpecError) as err:
        parse_objectives("val_accuracy:up")
    assert err.value.field == "objective"


@pytest.mark.parametrize("text", ["val_confidence_gap", "val_confidence_gap:min", "val_nll,confidence_gap"])
def test_the_signed_confidence_gap_is_never_an_objective(text):
    # minimising mean confidence - accuracy would reward under-confidence: refused, with the reason
    with pytest.raises(SpecError, match="signed .* rewards under-confidence") as err:
        parse_objectives(text)
    assert err.value.field == "objective"


def test_in_process_needs_one_worker():
    with pytest.raises(SpecError) as err:
        spec_of("quickstart", workers_per_trial=2, in_process=True)
    assert err.value.field == "workers_per_trial"


def test_spec_round_trips_through_json():
    spec = spec_of("cifar10-noisy")
    again = type(spec).from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec


# ---------------------------------------------------------------------------------------------
# paper tables: grid sweeps, the seeds stage, the table presets (issue 12)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_dry_run_prints_the_resolved_sweep(preset, capsys, tmp_path):
    from sweeps.calibration import main

    assert main(["--dry-run", "--preset", preset, "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    resolved = json.loads(out[: out.index("\n# storage")])
    assert resolved["preset"] == preset and resolved["num_samples"] >= 1
    assert resolved["search"] in ("optuna", "grid")
    plan = out.strip().splitlines()[-1]
    assert plan.startswith("# ") and f"{resolved['num_samples']} trials" in plan
    if resolved["seeds"]:
        assert "stage 2 seeds" in plan
    assert not (tmp_path / preset).exists()  # a dry run writes nothing


def _cells(points, keys):
    from collections import Counter

    return Counter(tuple(p.get(k) for k in keys) for p in points)


def test_paper_b_tables_preset_is_the_full_grid_on_three_seeds():
    from simlab.config import TrainConfig
    from sweeps.space import grid_points, train_config_dict

    spec = spec_of("paper-b-tables")
    assert spec.search == "grid" and spec.scheduler == "none" and spec.seeds == 0  # no ASHA, no search
    points = grid_points(spec)
    assert spec.num_samples == len(points)
    # Independent enumeration of paper B's cells: clean + asymmetric/symmetric 0.2/0.4/0.8; CE on one-hot
    # (no trusted set) and the five losses on confidence labels at M = 0.1k/1k/10k.
    settings = [("asymmetric", 0.0)] + [(k, r) for k in ("asymmetric", "symmetric") for r in (0.2, 0.4, 0.8)]
    losses = ("ce", "projection", "log_projection", "l1", "mse")
    expected = {("onehot", None, None, k, r) for k, r in settings} | {
        ("confidence", loss, m, k, r) for k, r in settings for loss in losses for m in (100, 1000, 10000)
    }
    cells = _cells(points, ("label", "loss", "trusted_size", "noise_kind", "noise_rate"))
    assert set(cells) == expected and set(cells.values()) == {3}
    assert {p["seed"] for p in points} == {0, 1, 2}
    # The one-hot baseline is CE without a trusted set; the losses run on 0.6/0.4 pair labels, L2-relaxed.
    onehot = TrainConfig.from_dict(train_config_dict(spec, points[0]))
    assert (onehot.label, onehot.loss, onehot.trusted_size, onehot.relaxation) == ("onehot", "ce", 0, "none")
    lp = next(p for p in points if p.get("loss") == "log_projection" and p["trusted_size"] == 1000)
    cfg = TrainConfig.from_dict(train_config_dict(spec, lp))
    assert (cfg.confidence_source, cfg.relaxation, cfg.confidence_own, cfg.trusted_own) == (
        "pairs",
        "l2",
        0.6,
        0.95,
    )
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.scheduler) == (200, 256, 0.2, "plateau")  # paper B §4.1.1
    assert cfg.test_accuracy_every == 1  # the best-epoch protocol needs every epoch
    # --set narrows the grid.
    narrowed = spec_of("paper-b-tables", "noise_rate=0.4,0.8")
    assert narrowed.num_samples == 4 * 16 * 3


def test_paper_b_controls_preset():
    from sweeps.space import grid_points

    points = grid_points(spec_of("paper-b-controls"))
    cells = _cells(points, ("label", "trusted_size", "noise_kind", "noise_rate"))
    assert set(cells.values()) == {3}
    assert {c for c in cells if c[0] == "trusted_only"} == {
        ("trusted_only", m, "asymmetric", 0.0) for m in (100, 1000, 10000)
    }
    assert len([c for c in cells if c[0] == "onehot_trusted"]) == 7 * 3


def test_paper_a_table_presets_search_beta_then_run_three_seeds():
    from sweeps.space import grid_points

    for preset, models in (
        ("paper-a-table1", {"densenet_bc", "resnet18", "wrn"}),
        ("paper-a-table2", {"densenet_bc", "resnet34", "wrn"}),
    ):
        spec = spec_of(preset)
        assert spec.seeds == 3 and spec.seed_values == (0, 1, 2) and spec.seeds_group_by == ("model",)
        assert spec.fixed["alpha"] == 0.1 and spec.scheduler == "none"
        betas = spec.space["beta"].values
        assert min(betas) == 0.5 and max(betas) == 6.0  # paper A §6.2: beta in [0.5, 6]
        points = grid_points(spec)
        sources = spec.space["similarity"].values
        assert len(points) == spec.num_samples == len(models) * (3 + len(sources) * len(betas))
        assert {p["model"] for p in points} == models


def test_paper_a_ablation_presets():
    from sweeps.space import grid_points

    alpha = spec_of("paper-a-alpha")
    assert alpha.fixed["beta"] == 2.0 and alpha.fixed["similarity"] == "we"  # paper A §6.3
    cells = _cells(grid_points(alpha), ("label", "alpha"))
    assert set(cells.values()) == {3}
    for label in ("uniform", "similarity"):
        assert {a for lab, a in cells if lab == label} == set(alpha.space["alpha"].values)
    beta = spec_of("paper-a-beta")
    assert beta.fixed["alpha"] == 0.1 and "beta" in beta.space
    assert {b for lab, b in _cells(grid_points(beta), ("label", "beta")) if lab == "similarity"} == set(
        beta.space["beta"].values
    )


def test_seeds_stage_spec_runs_exactly_the_points_on_every_seed():
    from sweeps.space import grid_points
    from sweeps.stages import seeds_points
    from sweeps.validation import seeds_stage_spec

    spec = spec_of("quickstart", seeds=3)
    chosen = [
        {"params": {"label": "onehot", "lr": 0.07}},
        {"params": {"label": "similarity", "similarity": "l2", "alpha": 0.1, "beta": 2.5, "lr": 0.1}},
    ]
    points = seeds_points(spec, chosen)
    assert len(points) == 6 and {p["seed"] for p in points} == {0, 1, 2}
    staged = seeds_stage_spec(spec, points)
    assert staged.stage == "seeds" and staged.search == "grid" and staged.scheduler == "none"
    assert staged.num_samples == 6 and grid_points(staged) == points
    assert staged.space["seed"] == Dimension("choice", (0, 1, 2)) and "seed" not in staged.fixed
    assert staged.name == spec.name and staged.resolved_tracking_uri == spec.resolved_tracking_uri


@pytest.mark.parametrize(
    ("overrides", "top", "field"),
    [
        ((), {"search": "random"}, "search"),
        (("seed=0,1",), {"seeds": 2}, "seeds"),
        ((), {"seeds": -1}, "seeds"),
        ((), {"seeds_group_by": ["modle"]}, "seeds_group_by"),
        ((), {"points": [{"label": "onehot"}]}, "points"),  # explicit points need search grid
        (("search=grid",), {}, "space.lr"),  # a grid needs choices, not ranges
        (
            ("search=grid", "alpha=0.1", "beta=1,2", "lr=0.1"),
            {"points": [{"label": "mixup"}]},
            "points.0.label",
        ),
    ],
)
def test_bad_stage_settings_name_the_field(overrides, top, field):
    with pytest.raises(SpecError) as err:
        spec_of("quickstart", *overrides, **top)
    assert err.value.field == field, str(err.value)


# issue 15 item 3: non-finite and out-of-range numbers, rejected in the spec naming the field
SIM = ("label=similarity", "similarity=l2")


@pytest.mark.parametrize(
    ("overrides", "top", "field"),
    [
        (("lr=inf",), {}, "lr"),
        (("lr=nan",), {}, "lr"),
        (("momentum=inf",), {}, "momentum"),
        (("weight_decay=-inf",), {}, "weight_decay"),
        ((*SIM, "beta=inf"), {}, "beta"),
        ((*SIM, "beta=1e300"), {}, "beta"),  # finite, but beta * |z| overflows the softmax
        (("lr=1e-3..1e400:log",), {}, "space.lr"),  # a range whose end overflows to inf
        (("alpha=nan..0.5",), {}, "space.alpha"),
        (("seed=18446744073709551616",), {}, "seed"),  # torch.Generator.manual_seed: < 2**64
        (("seed=0..18446744073709551616:int",), {}, "seed"),
        (("epochs=inf",), {}, "epochs"),
        (("trusted_size=1e400",), {}, "trusted_size"),
        (("sampler_seed=4294967296",), {}, "sampler_seed"),  # Optuna/numpy RandomState: < 2**32
        ((), {"cpus_per_trial": float("inf")}, "cpus_per_trial"),  # was an int(inf) traceback
        ((), {"gpus_per_trial": float("inf")}, "gpus_per_trial"),
        ((), {"gpus_per_trial": float("nan")}, "gpus_per_trial"),
        ((), {"num_samples": float("inf")}, "num_samples"),
    ],
)
def test_non_finite_and_out_of_range_numbers_name_the_field(overrides, top, field):
    with pytest.raises(SpecError) as err:
        spec_of("quickstart", *overrides, **top)
    assert err.value.field == field or str(err.value).startswith(f"{field} "), str(err.value)
    assert field in str(err.value)


def test_numeric_bounds_cover_every_numeric_train_config_field():
    """One table holds every numeric TrainConfig field's range: a new numeric field must join it."""
    import dataclasses

    from simlab.config import NUMERIC_BOUNDS, TrainConfig

    fields = dataclasses.fields(TrainConfig)
    numeric = {f.name for f in fields if str(f.type).replace(" | None", "") in ("int", "float")}
    assert numeric == set(NUMERIC_BOUNDS)
    for name, bound in NUMERIC_BOUNDS.items():
        assert not bound.contains(float("nan")) and not bound.contains(float("inf")), name


def test_largest_accepted_seeds_are_accepted_by_their_consumers():
    """The bounds are the consumers' own: torch takes SEED_MAX, Optuna's TPE takes 2**32 - 1."""
    import optuna
    import torch

    from simlab.config import NUMERIC_BOUNDS

    torch.Generator().manual_seed(NUMERIC_BOUNDS["seed"].high)
    with pytest.raises((RuntimeError, ValueError, OverflowError)):
        torch.Generator().manual_seed(NUMERIC_BOUNDS["seed"].high + 1)
    from sweeps.spec import SWEEP_BOUNDS

    optuna.samplers.TPESampler(seed=SWEEP_BOUNDS["sampler_seed"].high)
    with pytest.raises(ValueError):
        optuna.samplers.TPESampler(seed=SWEEP_BOUNDS["sampler_seed"].high + 1)
