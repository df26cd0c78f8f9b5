"""``TrainConfig.dataset_args``: the loader's own options, set from presets / ``--set``, checked cheaply
before a sweep starts, part of the data split's identity (issue 16 groundwork)."""

from __future__ import annotations

import pytest

from simlab.config import TrainConfig


def _spec(sets):
    from sweeps.overrides import apply_overrides
    from sweeps.presets import get_preset
    from sweeps.validation import build_spec

    return build_spec(apply_overrides(get_preset("quickstart"), sets), preset="quickstart", name="q")


def test_set_dotted_dataset_args_becomes_a_fixed_dict():
    from sweeps.overrides import apply_overrides
    from sweeps.presets import get_preset

    raw = apply_overrides(
        get_preset("quickstart"), ["dataset_args.image_size=16", "dataset_args.test_fraction=0.3"]
    )
    assert raw["fixed"]["dataset_args"] == {"image_size": 16, "test_fraction": 0.3}
    raw = apply_overrides(get_preset("quickstart"), ["ood_dataset_args.image_size=32"])
    assert raw["fixed"]["ood_dataset_args"] == {"image_size": 32}
    # a whole dict through the plain field works too
    raw = apply_overrides(get_preset("quickstart"), ['dataset_args={"image_size": 24}'])
    assert raw["fixed"]["dataset_args"] == {"image_size": 24}


def test_unknown_dataset_option_is_a_spec_error_before_the_sweep():
    from sweeps.registry_checks import check_registries
    from sweeps.spec import SpecError

    check_registries(_spec(["dataset_args.image_size=16"]))  # digits takes image_size
    with pytest.raises(SpecError, match=r"dataset_args.*unknown option\(s\) 'imgsize'.*image_size"):
        check_registries(_spec(["dataset_args.imgsize=16"]))
    with pytest.raises(SpecError, match=r"ood_dataset_args.*unknown option\(s\) 'download'"):
        check_registries(_spec(["ood_dataset=synthetic", "ood_dataset_args.download=true"]))


def test_load_split_passes_dataset_args_and_they_change_the_identity(tmp_path):
    from simlab.data import load_split

    cfg = TrainConfig(dataset="digits", cache_dir=str(tmp_path))
    small = load_split(cfg.replace(dataset_args={"image_size": 16}))
    default = load_split(cfg)
    assert tuple(small.image_shape) == (1, 16, 16) and tuple(default.image_shape) == (1, 32, 32)
    assert small.identity != default.identity
    with pytest.raises(ValueError, match=r"dataset_args: dataset 'digits': unknown option\(s\) 'size'"):
        load_split(cfg.replace(dataset_args={"size": 16}))


def test_dataset_args_are_part_of_the_matrix_key():
    from sweeps.trial_context import DATA_FIELDS, matrix_key

    assert "dataset_args" in DATA_FIELDS
    cfg = TrainConfig(label="similarity", similarity="l2", beta=1.0)
    assert matrix_key(cfg) != matrix_key(cfg.replace(dataset_args={"image_size": 16}))


def test_config_rejects_non_dict_dataset_args_and_ood_args_without_ood_dataset():
    with pytest.raises(ValueError, match="dataset_args must be a dict"):
        TrainConfig.from_dict({"dataset_args": [1]})
    with pytest.raises(ValueError, match="need ood_dataset"):
        TrainConfig.from_dict({"ood_data_dir": "x.zip"})
