"""Paper A §6.4 on a real unseen dataset (``TrainConfig.ood_dataset``): the OOD test split resized to
the training images and scored with the final model, against an independent computation (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from simlab.checkpoint import checkpoint_paths, load_checkpoint
from simlab.config import TrainConfig
from simlab.data import load_dataset
from simlab.models import build_model
from simlab.train import fit
from simlab.train.evaluation import ood_dataset_images
from tests.support import TINY_SYNTHETIC, TINY_SYNTHETIC_DATA, RecordingTracker

OOD_SIZE = 24  # the OOD images' side; the training images are TINY_SYNTHETIC_DATA's 16


def _png_folder(root: Path, *, size: int, classes=("a", "b"), per_class: int = 3) -> list[Path]:
    """An ImageFolder (train/ and test/) of seeded random RGB PNGs; returns the test files."""
    rng = np.random.default_rng(0)
    test_files = []
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                path = root / split / c / f"{i}.png"
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
                if split == "test":
                    test_files.append(path)
    return test_files


def _cfg(cache_dir, **kw) -> TrainConfig:
    values = {
        **TINY_SYNTHETIC,
        "epochs": 1,
        "recalibrate": False,
        "precision": "fp32",
        "cache_dir": cache_dir,
    }
    values["dataset_args"] = dict(TINY_SYNTHETIC_DATA)
    values["model_args"] = {"width": 8}
    return TrainConfig.from_dict({**values, **kw})


def test_fit_scores_a_real_ood_dataset_resized_to_the_training_images(tmp_path):
    test_files = _png_folder(tmp_path / "ood", size=OOD_SIZE)
    cache = str(tmp_path / "cache")
    # image_size given explicitly at 24: the loader keeps 24x24, fit resizes to 16x16 with torch.
    cfg = _cfg(
        cache,
        ood_samples=8,
        ood_dataset="imagefolder",
        ood_data_dir=str(tmp_path / "ood"),
        ood_dataset_args={"image_size": OOD_SIZE},
    )
    tracker = RecordingTracker()
    result = fit(cfg, tracker=tracker, artifact_dir=tmp_path / "art", checkpoint_dir=tmp_path / "ck")

    # the independent reference: PIL pixels, F.interpolate, the training normalisation, the saved model
    pixels = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in test_files]))
    x = pixels.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).round().clamp(0, 255)
    train = load_dataset("synthetic", cache_dir=cache, val_fraction=cfg.val_fraction, **TINY_SYNTHETIC_DATA)
    mean = torch.tensor(train.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(train.std, dtype=torch.float64).view(1, 3, 1, 1)
    model = build_model("small_cnn", 4, in_channels=3, generator=torch.Generator().manual_seed(0), width=8)
    model.load_state_dict(load_checkpoint(checkpoint_paths(tmp_path / "ck")[0])["model"])
    model.eval()
    with torch.no_grad():
        logits = model(((x.double() / 255 - mean) / std).float())
    expected = torch.softmax(logits.double(), 1).max(1).values

    with np.load(result.artifacts["ood_noise_confidences"]) as npz:
        assert set(npz.files) == {"confidences", "ood_imagefolder"}
        noise, real = npz["confidences"], torch.from_numpy(npz["ood_imagefolder"]).double()
    assert noise.shape == (8,) and real.shape == (len(test_files),)
    # the folder's order is the loader's (class folders, then files): compare as sorted values
    torch.testing.assert_close(real.sort().values, expected.sort().values, atol=1e-5, rtol=0)
    m = result.metrics
    assert m["ood_imagefolder_confidence_mean"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert m["ood_imagefolder_confidence_median"] == pytest.approx(float(expected.median()), abs=1e-5)
    assert "ood_noise_confidence_mean" in m
    logged = {k for _, metrics in tracker.metrics for k in metrics}
    assert {"ood_imagefolder_confidence_mean", "ood_imagefolder_confidence_median"} <= logged


def test_ood_images_use_the_loaders_image_size_when_it_has_one(tmp_path):
    _png_folder(tmp_path / "ood", size=OOD_SIZE)
    cache = str(tmp_path / "cache")
    cfg = _cfg(cache, ood_dataset="imagefolder", ood_data_dir=str(tmp_path / "ood"))
    got = ood_dataset_images(cfg, (3, 16, 16))
    direct = load_dataset(
        "imagefolder", data_dir=tmp_path / "ood", cache_dir=cache, val_fraction=0.0, image_size=16
    )
    assert got.shape == (6, 3, 16, 16) and torch.equal(got, direct.test_x)


def test_only_the_real_ood_dataset_writes_the_artifact_without_noise(tmp_path):
    _png_folder(tmp_path / "ood", size=16)
    cfg = _cfg(str(tmp_path / "cache"), ood_dataset="imagefolder", ood_data_dir=str(tmp_path / "ood"))
    result = fit(cfg, artifact_dir=tmp_path / "art")
    with np.load(result.artifacts["ood_noise_confidences"]) as npz:
        assert npz.files == ["ood_imagefolder"]
    assert "ood_noise_confidence_mean" not in result.metrics


@pytest.mark.parametrize(
    "ood",
    [{"ood_dataset": "digits"}, {"ood_dataset": "synthetic", "ood_dataset_args": {"channels": 1}}],
)
def test_channel_mismatch_is_a_clear_error_before_training(tmp_path, ood):
    tracker = RecordingTracker()
    cfg = _cfg(str(tmp_path / "cache"), **ood)
    with pytest.raises(ValueError, match=r"ood_dataset: .* 1-channel images .* 3-channel"):
        fit(cfg, tracker=tracker)
    assert tracker.metrics == [] and tracker.params == []  # nothing trained


def test_sweep_checks_reject_a_channel_mismatch_and_bad_ood_options():
    from sweeps.overrides import apply_overrides
    from sweeps.presets import get_preset
    from sweeps.registry_checks import check_registries
    from sweeps.spec import SpecError
    from sweeps.validation import build_spec

    def spec(sets):
        return build_spec(apply_overrides(get_preset("quickstart"), sets), preset="quickstart", name="q")

    check_registries(spec(["ood_dataset=digits"]))  # quickstart trains on 1-channel digits
    with pytest.raises(SpecError, match=r"ood_dataset.*'synthetic' gives 3-channel"):
        check_registries(spec(["ood_dataset=synthetic"]))
    with pytest.raises(SpecError, match=r"ood_dataset_args.*unknown option"):
        check_registries(spec(["ood_dataset=digits", "ood_dataset_args.colour=1"]))
