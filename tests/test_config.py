"""TrainConfig: the single dict -> config conversion and its validation."""

import pytest

from simlab.config import TrainConfig


def test_defaults_validate():
    TrainConfig().validate()


def test_from_dict_round_trip():
    cfg = TrainConfig.from_dict(
        {"label": "similarity", "similarity": "l2", "beta": 2.0, "alpha": 0.1}, validate=False
    )
    cfg.validate()
    assert TrainConfig.from_dict(cfg.to_dict(), validate=False) == cfg


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ValueError, match=r"unknown key.*'alpah'.*did you mean 'alpha'"):
        TrainConfig.from_dict({"alpah": 0.1})


def test_not_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        TrainConfig.from_dict([("alpha", 0.1)])


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"noise_kind": "symmetric", "noise_rate": 2.0}, "noise_rate"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -4}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"label": "similarity", "similarity": "l2", "beta": -1.0}, "beta"),
        ({"beta": 1.0}, "beta"),  # beta with one-hot labels
        ({"label": "similarity", "similarity": "l2"}, "beta"),  # beta missing
        ({"label": "similarity", "beta": 1.0}, "similarity"),
        ({"label": "confidence", "similarity": "l2"}, "similarity"),
        ({"relaxation": "l2"}, "relaxation"),
        ({"label": "bogus"}, "label"),
        ({"scheduler": "step"}, "scheduler"),
        ({"noise_rate": 0.2}, "noise_rate"),  # rate without a kind
        ({"confidence_own": 0.7}, "confidence_own"),  # own + other != 1
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"subset_per_class": 0}, "subset_per_class"),
        ({"warmup_epochs": 10, "epochs": 10}, "warmup_epochs"),
        (
            {"label": "similarity", "similarity": "l2", "beta": 1.0, "similarity_normalise": "rows"},
            "similarity_normalise",
        ),
        ({"precision": "fp16"}, "precision: unknown value 'fp16'"),
        ({"precision": "bf16", "amp": False}, "precision='bf16' needs amp=True"),
        ({"similarity_normalise": "off_diagonal"}, "similarity_normalise"),  # with one-hot labels
    ],
)
def test_invalid_settings_name_the_field(changes, field):
    cfg = TrainConfig.from_dict(changes, validate=False)
    with pytest.raises(ValueError, match=field):
        cfg.validate()


def test_cli_strings_are_coerced():
    cfg = TrainConfig.from_dict(
        {"alpha": "0.2", "epochs": "3", "amp": "false", "subset_per_class": "None", "beta": "none"},
        validate=False,
    )
    assert cfg.alpha == 0.2 and cfg.epochs == 3 and cfg.amp is False
    assert cfg.subset_per_class is None and cfg.beta is None


def test_uncoercible_value_names_the_field():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_dict({"epochs": "many"}, validate=False)


def test_frozen():
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.alpha = 0.3  # type: ignore[misc]


def test_config_is_a_torch_free_leaf():
    """config.py imports nothing of simlab but the argument checks, and no torch (fast CLI checks)."""
    import subprocess
    import sys

    code = (
        "import sys, simlab.config; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('simlab.', 'sweeps'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['simlab._validate', 'simlab.config']"


# Which label method owns which field (paper A eq. 17-18, paper B eq. 1-3, 9; the mixup baseline of
# paper A §6.1): written out here as the independent reference of the config's field metadata.
OWNED = {  # field -> (methods using it, a non-default value, exclusive: other labels must keep the default)
    "similarity": (("similarity",), "l2", True),
    "confidence_source": (("confidence",), "pairs", True),
    "beta": (("similarity",), 1.0, True),
    "similarity_normalise": (("similarity",), "off_diagonal", True),
    "relaxation": (("confidence",), "l2", True),
    "alpha": (("uniform", "similarity"), 0.2, False),
    "confidence_own": (("confidence",), 0.7, False),
    "confidence_other": (("confidence",), 0.3, False),
    "trusted_own": (("confidence",), 0.9, False),
    "trusted_other": (("confidence",), 0.1, False),
    "mixup": (("mixup",), 0.3, False),
}


def test_field_metadata_is_the_applicability_rule():
    from simlab.config import FIELD_METHODS, METHODS

    assert FIELD_METHODS == {name: methods for name, (methods, _, _) in OWNED.items()}
    assert METHODS == (
        "onehot",
        "uniform",
        "similarity",
        "confidence",
        "trusted_only",
        "onehot_trusted",
        "mixup",
    )


@pytest.mark.parametrize("name", [n for n, (_, _, exclusive) in OWNED.items() if exclusive])
def test_exclusive_fields_are_rejected_under_other_labels(name):
    methods, value, _ = OWNED[name]
    for label in ("onehot", "uniform", "similarity", "confidence", "trusted_only", "onehot_trusted"):
        if label in methods:
            continue
        cfg = TrainConfig.from_dict({"label": label, name: value}, validate=False)
        with pytest.raises(ValueError, match=rf"^{name} only applies to label="):
            cfg.validate()


def test_confidence_source_is_its_own_field_and_the_old_spelling_is_read():
    cfg = TrainConfig.from_dict({"label": "confidence", "confidence_source": "predictions"})
    assert (cfg.similarity, cfg.confidence_source, cfg.source) == (None, "predictions", "predictions")
    old = TrainConfig.from_dict({"label": "confidence", "similarity": "pairs"})  # before issue 11
    assert (old.similarity, old.confidence_source, old.source) == (None, "pairs", "pairs")
    assert TrainConfig.from_dict(old.to_dict()) == old
    sim = TrainConfig.from_dict({"label": "similarity", "similarity": "l1", "beta": 1.0})
    assert sim.source == "l1" and sim.confidence_source is None
    with pytest.raises(ValueError, match="confidence_source must be one of pairs, predictions"):
        TrainConfig.from_dict({"label": "confidence"})
    with pytest.raises(ValueError, match="similarity 'pairs' gives confidence scores"):
        TrainConfig.from_dict({"label": "similarity", "similarity": "pairs", "beta": 1.0})


def test_mixup_method_is_one_hot_labels_with_the_default_coefficient():
    from simlab.config import DEFAULT_MIXUP, method_values

    assert method_values("mixup") == {"label": "onehot", "mixup": DEFAULT_MIXUP} and DEFAULT_MIXUP > 0
    assert method_values("uniform") == {"label": "uniform"}
    TrainConfig.from_dict(method_values("mixup"))


def test_fit_names_an_unknown_registry_key_before_loading_data():
    from simlab.train import fit

    for key, value in (("dataset", "cifar11"), ("model", "resnet_nope"), ("loss", "hinge")):
        cfg = TrainConfig.from_dict({key: value, "device": "cpu"})  # the config itself is torch-free
        with pytest.raises(ValueError, match=rf"^{key}: unknown value {value!r}; valid values are: "):
            fit(cfg)
