"""The Optuna define-by-run space: conditional dimensions, the params -> TrainConfig mapping, and the
searcher that never leaves an Optuna trial RUNNING."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from simlab.config import DEFAULT_MIXUP, TrainConfig
from sweeps.overrides import apply_overrides
from sweeps.presets import get_preset
from sweeps.search import make_searcher, optuna_trial
from sweeps.space import define_by_run, method_name, train_config_dict
from sweeps.validation import build_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec_of(preset: str, *overrides: str, **top):
    return build_spec(apply_overrides(get_preset(preset), list(overrides)), preset=preset, name=preset, **top)


def test_fixed_trial_onehot_never_asks_for_beta():
    spec = spec_of("quickstart")
    # FixedTrial raises if asked for a parameter it does not hold: a one-hot trial must ask for the
    # label and lr only (alpha/beta/similarity are conditional on smoothed labels).
    trial = FixedTrial({"label": "onehot", "lr": 0.1})
    define_by_run(trial, spec)
    assert trial.params == {"label": "onehot", "lr": 0.1}
    cfg = TrainConfig.from_dict(train_config_dict(spec, trial.params), validate=False)
    cfg.validate()
    assert cfg.label == "onehot" and cfg.beta is None and cfg.similarity is None


def test_fixed_trial_similarity_asks_for_source_alpha_beta():
    spec = spec_of("quickstart")
    trial = FixedTrial({"label": "similarity", "similarity": "l1", "alpha": 0.1, "beta": 2.0, "lr": 0.1})
    define_by_run(trial, spec)
    assert set(trial.params) == {"label", "similarity", "alpha", "beta", "lr"}
    values = train_config_dict(spec, trial.params)
    assert (values["label"], values["similarity"], values["beta"], values["alpha"]) == (
        "similarity",
        "l1",
        2.0,
        0.1,
    )


@pytest.mark.parametrize("preset", ["quickstart", "cifar10-calibration", "cifar10-noisy"])
def test_real_study_samples_conditional_dimensions_only_where_they_apply(preset):
    spec = spec_of(preset)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    labels_seen = set()
    for _ in range(80):
        trial = study.ask()
        define_by_run(trial, spec)
        params = trial.params
        label = params.get("label", spec.fixed.get("label"))
        labels_seen.add(label)
        assert ("beta" in params) == (label == "similarity" and "beta" in spec.space)
        assert ("similarity" in params) == (label == "similarity" and "similarity" in spec.space)
        assert ("relaxation" in params) == (label == "confidence" and "relaxation" in spec.space)
        if "alpha" in spec.space:
            assert ("alpha" in params) == (label in ("uniform", "similarity"))
        if preset == "cifar10-noisy":  # paper B: CE one-hot baseline has no trusted set, loss ce
            assert ("loss" in params) == (label == "confidence")
            assert ("trusted_size" in params) == (label == "confidence")
        values = train_config_dict(spec, params)
        cfg = TrainConfig.from_dict(values, validate=False)
        cfg.validate()  # every sampled point is a valid config
        if label == "mixup":
            assert cfg.label == "onehot" and cfg.mixup == DEFAULT_MIXUP
        else:
            assert cfg.mixup == 0.0
        study.tell(trial, 0.0)
    assert labels_seen == set(spec.labels)


def test_per_source_and_per_model_arguments_attached():
    spec = spec_of("cifar10-calibration")
    values = train_config_dict(spec, {"label": "similarity", "similarity": "we", "beta": 1.0, "model": "wrn"})
    assert values["similarity_args"]["vectors"].endswith("cifar10-words-300d.txt")
    assert values["similarity_args"]["mapping"] == {"automobile": "car"}
    assert values["model_args"] == {"depth": 28, "widen_factor": 1}
    values = train_config_dict(
        spec, {"label": "similarity", "similarity": "l2", "beta": 1.0, "model": "resnet18"}
    )
    assert "similarity_args" not in values and "model_args" not in values


def test_confidence_source_is_the_config_field():
    spec = spec_of("cifar10-noisy")
    values = train_config_dict(
        spec,
        {
            "label": "confidence",
            "loss": "log_projection",
            "noise_kind": "asymmetric",
            "noise_rate": 0.4,
            "trusted_size": 1000,
        },
    )
    assert values["confidence_source"] == "pairs" and "similarity" not in values
    cfg = TrainConfig.from_dict(values, validate=False)
    assert (cfg.confidence_source, cfg.similarity, cfg.source) == ("pairs", None, "pairs")
    assert values["relaxation"] == "l2"
    onehot = train_config_dict(spec, {"label": "onehot", "noise_kind": "symmetric", "noise_rate": 0.2})
    assert "relaxation" not in onehot and "similarity" not in onehot and "trusted_size" not in onehot
    assert method_name({"label": "confidence"}, spec) == "confidence:pairs"


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("result", "error", "state"),
    [
        ({"val_nll": float("nan")}, False, TrialState.FAIL),  # NaN objective (RELIABILITY T10)
        ({"val_nll": float("inf")}, False, TrialState.FAIL),
        ({"val_nll": 0.7}, True, TrialState.FAIL),  # an errored trial's last result is not its value
        (None, False, TrialState.PRUNED),
        ({"val_nll": 0.7}, False, TrialState.COMPLETE),
    ],
)
def test_searcher_never_leaves_a_trial_running(result, error, state):
    spec = spec_of("quickstart")
    searcher = make_searcher(spec)
    config = searcher.suggest("t1")
    assert "label" in config
    searcher.on_trial_complete("t1", result=result, error=error)
    only = optuna_trial(searcher, "t1")
    assert only.state == state
    if state == TrialState.COMPLETE:
        assert math.isclose(only.value, 0.7)


def test_searcher_multi_objective_tells_both_values():
    spec = spec_of("quickstart", objective="val_accuracy:max,val_ece_hist_output:min", scheduler="none")
    searcher = make_searcher(spec)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", result={"val_accuracy": 0.9, "val_ece_hist_output": 0.01})
    searcher.on_trial_complete("b", result={"val_accuracy": float("nan"), "val_ece_hist_output": 0.01})
    a, b = (optuna_trial(searcher, t) for t in "ab")
    assert a.state == TrialState.COMPLETE and a.values == [0.9, 0.01]
    assert b.state == TrialState.FAIL


def test_searcher_warm_start_covers_every_label_first():
    spec = spec_of("quickstart")
    searcher = make_searcher(spec)
    first = [searcher.suggest(f"t{i}") for i in range(len(spec.warm_start))]
    assert [c["label"] for c in first] == [w["label"] for w in spec.warm_start]


def test_grid_points_are_every_combination_of_the_dimensions_each_label_uses():
    """Reference: the product of ALL choices, each combination projected onto the dimensions its label
    uses, deduplicated."""
    import itertools

    from sweeps.space import grid_points

    spec = spec_of("quickstart", "alpha=0.05,0.1", "beta=1,3", "lr=0.05,0.1", search="grid")
    names = list(spec.space)
    reference = set()
    for combo in itertools.product(*(spec.space[n].values for n in names)):
        point = dict(zip(names, combo, strict=True))
        used = {k: v for k, v in point.items() if k == "label" or spec.applies(k, point["label"])}
        reference.add(tuple(sorted(used.items())))
    got = grid_points(spec)
    assert len(got) == len(reference) == spec.num_samples == 2 + 2 * 2 + 2 * 2 * 2 * 2
    assert {tuple(sorted(p.items())) for p in got} == reference


def test_choose_configurations_is_the_best_finished_trial_per_method_and_group():
    from sweeps.stages import choose_configurations

    spec = spec_of("quickstart", "model=small_cnn,resnet18", seeds_group_by=["model"])
    rows = []
    for i, (method, model, value, status) in enumerate(
        [
            ("onehot", "small_cnn", 0.5, "finished"),
            ("onehot", "small_cnn", 0.4, "finished"),
            ("onehot", "small_cnn", 0.1, "error"),  # not finished: never chosen
            ("onehot", "resnet18", 0.7, "finished"),
            ("similarity:l2", "small_cnn", float("nan"), "finished"),  # non-finite: never chosen
            ("similarity:l2", "small_cnn", 0.6, "finished"),
        ]
    ):
        label, _, src = method.partition(":")
        params = {"label": label, "model": model, "lr": 0.1 + i} | ({"similarity": src} if src else {})
        rows.append(
            {"trial_id": f"t{i}", "status": status, "method": method, "params": params, "val_nll": value}
        )
    chosen = {(c["method"], c["group"]["model"]): c["trial_id"] for c in choose_configurations(spec, rows)}
    # Brute force: min val_nll over finished finite rows of each (method, model).
    expected = {}
    for r in rows:
        if r["status"] == "finished" and math.isfinite(r["val_nll"]):
            key = (r["method"], r["params"]["model"])
            if key not in expected or r["val_nll"] < rows[int(expected[key][1:])]["val_nll"]:
                expected[key] = r["trial_id"]
    assert (
        chosen
        == expected
        == {
            ("onehot", "small_cnn"): "t1",
            ("onehot", "resnet18"): "t3",
            ("similarity:l2", "small_cnn"): "t5",
        }
    )
