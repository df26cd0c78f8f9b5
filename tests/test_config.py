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
