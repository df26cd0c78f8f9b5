"""Tests of simlab.data: splits, caches, image sources, batches and augmentation.

References are independent of the code under test: scikit-learn's digits, PIL decoding of the same
files, torchvision's per-sample transforms, brute-force enumeration of every crop/flip, torch.cdist.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats

import simlab.data.readers as readers
from simlab.class_names import CIFAR100_CLASSES
from simlab.data import (
    CIFAR10_CLASSES,
    DATASETS,
    ImageData,
    channel_stats,
    epoch_batches,
    load_dataset,
    prepare_images,
    uniform_noise_images,
)

CIFAR_ZIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.zip"
SMALL_SYNTH = dict(
    num_classes=6, num_superclasses=2, samples_per_class=20, test_samples_per_class=5, image_size=8
)


def _row_keys(x: torch.Tensor) -> list[bytes]:
    return [bytes(r) for r in x.reshape(x.shape[0], -1).numpy()]


def _synthetic(tmp_path, **kw) -> ImageData:
    args = {**SMALL_SYNTH, **kw}
    return load_dataset("synthetic", cache_dir=tmp_path, **args)


# ---------------------------------------------------------------------------------------------
# registry and splits
def test_registry_names():
    assert set(DATASETS) == {"cifar10", "cifar100", "tinyimagenet", "imagefolder", "digits", "synthetic"}


def test_digits_matches_sklearn_and_has_fixed_stratified_test_split(tmp_path):
    from sklearn.datasets import load_digits

    target = torch.from_numpy(load_digits().target)
    d0 = load_dataset("digits", cache_dir=tmp_path, seed=0)
    d1 = load_dataset("digits", cache_dir=tmp_path, seed=1)
    assert d0.image_shape == (1, 32, 32) and d0.train_x.dtype == torch.uint8
    assert d0.class_names[0] == "zero" and d0.num_classes == 10
    n = len(d0.train_y) + len(d0.val_y) + len(d0.test_y)
    assert n == len(target) == 1797
    counts = torch.bincount(target, minlength=10)
    expected_test = torch.tensor([math.floor(c * 0.2 + 0.5) for c in counts.tolist()])
    assert torch.equal(torch.bincount(d0.test_y, minlength=10), expected_test)
    # The test split does not move with the training seed; the validation split does.
    assert torch.equal(d0.test_x, d1.test_x) and torch.equal(d0.test_y, d1.test_y)
    assert not torch.equal(d0.val_x, d1.val_x)
    assert d0.identity != d1.identity
    # Independent reference for the upsampling: PIL's bilinear resize of each float 8x8 image.
    ref = [
        np.asarray(Image.fromarray(a.astype(np.float32) / 16, mode="F").resize((32, 32), Image.BILINEAR))
        for a in load_digits().images
    ]
    ref_x = torch.from_numpy(np.clip(np.round(np.stack(ref) * 255), 0, 255).astype(np.uint8))[:, None]
    assert sorted(_row_keys(torch.cat([d0.train_x, d0.val_x, d0.test_x]))) == sorted(_row_keys(ref_x))


def test_split_is_disjoint_stratified_and_separate_from_test(tmp_path):
    full = _synthetic(tmp_path, val_fraction=0.0)
    d = _synthetic(tmp_path, val_fraction=0.25, seed=3)
    train_keys, val_keys, test_keys = _row_keys(d.train_x), _row_keys(d.val_x), _row_keys(d.test_x)
    assert len(set(_row_keys(full.train_x))) == len(full.train_y)  # synthetic images are all distinct
    assert set(train_keys).isdisjoint(val_keys)
    assert sorted(train_keys + val_keys) == sorted(_row_keys(full.train_x))
    assert set(test_keys).isdisjoint(train_keys + val_keys)
    assert torch.equal(d.test_x, full.test_x)
    # Labels travel with their images.
    label_of = dict(zip(_row_keys(full.train_x), full.train_y.tolist(), strict=True))
    assert [label_of[k] for k in val_keys] == d.val_y.tolist()
    # Stratified: round(0.25 * 20) = 5 of every class.
    assert torch.bincount(d.val_y, minlength=6).tolist() == [5] * 6
    assert torch.bincount(d.train_y, minlength=6).tolist() == [15] * 6


def test_split_is_deterministic_in_the_seed(tmp_path):
    a = _synthetic(tmp_path, seed=5, val_fraction=0.3)
    b = _synthetic(tmp_path, seed=5, val_fraction=0.3)
    c = _synthetic(tmp_path, seed=6, val_fraction=0.3)
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.identity == b.identity and a.mean == b.mean
    assert not torch.equal(a.val_x, c.val_x)
    assert a.identity != c.identity


def test_subset_is_class_balanced_and_taken_after_the_validation_split(tmp_path):
    full = _synthetic(tmp_path, seed=2, val_fraction=0.2)
    sub = _synthetic(tmp_path, seed=2, val_fraction=0.2, subset_per_class=7)
    assert torch.bincount(sub.train_y, minlength=6).tolist() == [7] * 6
    assert torch.equal(sub.val_x, full.val_x)  # the validation split ignores the subset
    assert set(_row_keys(sub.train_x)) <= set(_row_keys(full.train_x))
    assert sub.identity != full.identity
    with pytest.raises(ValueError, match="subset_per_class=17 but class 0 .* has only 16"):
        _synthetic(tmp_path, val_fraction=0.2, subset_per_class=17)


def test_identity_names_everything_that_defines_the_splits(tmp_path):
    base = _synthetic(tmp_path).identity
    assert _synthetic(tmp_path, val_fraction=0.2).identity != base
    assert _synthetic(tmp_path, subset_per_class=3).identity != base
    assert _synthetic(tmp_path, data_seed=1).identity != base
    assert _synthetic(tmp_path, noise=0.4).identity != base
    assert _synthetic(tmp_path).identity == base


def test_channel_stats_match_float_reference(tmp_path):
    d = _synthetic(tmp_path)
    x = d.train_x.double() / 255
    assert np.allclose(d.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(d.std, x.std(dim=(0, 2, 3), correction=0).numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="x must be a uint8"):
        channel_stats(x)


def test_synthetic_class_distances_reflect_the_hierarchy(tmp_path):
    d = load_dataset(
        "synthetic",
        cache_dir=tmp_path,
        num_classes=8,
        num_superclasses=2,
        samples_per_class=30,
        image_size=16,
    )
    assert d.info["superclass"] == [0, 0, 0, 0, 1, 1, 1, 1]
    x = torch.cat([d.train_x, d.val_x]).reshape(-1, 3 * 16 * 16).double()
    y = torch.cat([d.train_y, d.val_y])
    # Brute-force paper A eq. 13-15 style class distances: mean over all pairs of L2 distances.
    dist = torch.empty(8, 8, dtype=torch.float64)
    for k in range(8):
        for j in range(8):
            dist[k, j] = torch.cdist(x[y == k], x[y == j]).mean()
    sup = torch.tensor(d.info["superclass"])
    for k in range(8):
        same = (sup == sup[k]) & (torch.arange(8) != k)
        other = sup != sup[k]
        assert dist[k, same].max() < dist[k, other].min(), k


def test_uneven_superclasses_and_bad_synthetic_args(tmp_path):
    d = load_dataset("synthetic", cache_dir=tmp_path, num_classes=5, num_superclasses=2, samples_per_class=4)
    assert d.info["superclass"] == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="num_superclasses must be <= num_classes"):
        load_dataset("synthetic", cache_dir=tmp_path, num_classes=2, num_superclasses=3)
    with pytest.raises(ValueError, match="samples_per_class must be a positive integer, got 0"):
        load_dataset("synthetic", cache_dir=tmp_path, samples_per_class=0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"name": "cifar11"},
            ValueError,
            "unknown name 'cifar11'.*did you mean 'cifar10'.*digits, synthetic",
        ),
        (
            {"name": "digits", "val_fraction": 1.0},
            ValueError,
            "val_fraction must be a number in \\[0, 1\\), got 1.0",
        ),
        ({"name": "digits", "val_fraction": -0.1}, ValueError, "val_fraction"),
        (
            {"name": "digits", "subset_per_class": 0},
            ValueError,
            "subset_per_class must be a positive integer",
        ),
        ({"name": "digits", "seed": -1}, ValueError, "seed must be a non-negative integer"),
        (
            {"name": "digits", "colour": True},
            ValueError,
            "unknown option\\(s\\) 'colour'; valid options are: ",
        ),
        ({"name": "digits", "test_fraction": 0}, ValueError, "test_fraction must be in \\(0, 1\\)"),
        ({"name": "imagefolder"}, ValueError, "data_dir: the 'imagefolder' dataset needs data_dir"),
        ({"name": "tinyimagenet"}, ValueError, "data_dir: 'tinyimagenet' needs data_dir"),
        ({"name": "digits", "data_dir": 3}, TypeError, "data_dir must be a path"),
    ],
)
def test_bad_input_is_named(tmp_path, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_dataset(cache_dir=tmp_path, **kwargs)


def test_missing_files_name_the_path(tmp_path):
    missing = tmp_path / "nope.zip"
    with pytest.raises(FileNotFoundError, match="nope.zip"):
        load_dataset("cifar10", data_dir=missing, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file or folder.*absent"):
        load_dataset("imagefolder", data_dir=tmp_path / "absent", cache_dir=tmp_path)
    (tmp_path / "broken.zip").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="data_dir: .*broken.zip' is not a readable zip file"):
        load_dataset("cifar10", data_dir=tmp_path / "broken.zip", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no '<root>/train/<class>/<image>'.*empty"):
        load_dataset("imagefolder", data_dir=tmp_path / "empty", cache_dir=tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_torchvision_source_without_download_names_data_dir(tmp_path, name):
    root = tmp_path / "tv"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match="--data-dir / data_dir") as info:
        load_dataset(name, data_dir=root, cache_dir=tmp_path, download=False)
    assert str(root) in str(info.value)
    # Both options are named: a torchvision root and an image-folder zip/folder layout.
    assert "torchvision root" in str(info.value)
    assert "image-folder zip/folder" in str(info.value) and "<root>/train/<class>/<image>" in str(info.value)


# ---------------------------------------------------------------------------------------------
# image-folder sources (zip and folder) and the decoded-image cache
def _make_images(classes, per_split, size, seed, channels=3):
    """{relative path: uint8 array (H, W, C)} for a train/test image-folder tree."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in per_split.items():
        for cls in classes:
            for i in range(n):
                files[f"{split}/{cls}/{i:04d}.png"] = rng.integers(
                    0, 256, (size, size, channels), dtype=np.uint8
                )
    return files


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


def _write_zip(path: Path, files: dict, prefix: str = "cifar10-jpeg/") -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, a in files.items():
            z.writestr(prefix + name, _png(a))
    return path


def _zip_tree(root: Path, path: Path) -> Path:
    """A zip of the folder ``root`` with ``root``'s own name as its top folder (as releases ship)."""
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root.parent).as_posix())
    return path


def _write_folder(root: Path, files: dict) -> Path:
    for name, a in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(a))
    return root


def _expected(files, classes, split):
    names = sorted(n for n in files if n.startswith(split + "/"))
    x = torch.from_numpy(np.stack([files[n] for n in names])).permute(0, 3, 1, 2)
    y = torch.tensor([classes.index(n.split("/")[1]) for n in names])
    return x, y


class _DecodeCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = readers.decode_images

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(readers, "decode_images", counted)


def test_cifar10_zip_pixels_labels_and_cache_reuse(tmp_path, monkeypatch):
    files = _make_images(CIFAR10_CLASSES, {"train": 4, "test": 2}, 32, seed=0)
    zpath = _write_zip(tmp_path / "c10.zip", files)
    cache = tmp_path / "cache"
    counter = _DecodeCounter(monkeypatch)
    d = load_dataset("cifar10", data_dir=zpath, cache_dir=cache, val_fraction=0.25)
    assert counter.calls == 2  # train + test, decoded once
    assert d.class_names == list(CIFAR10_CLASSES)
    test_x, test_y = _expected(files, list(CIFAR10_CLASSES), "test")
    assert torch.equal(d.test_x, test_x) and torch.equal(d.test_y, test_y)
    train_x, _ = _expected(files, list(CIFAR10_CLASSES), "train")
    assert sorted(_row_keys(torch.cat([d.train_x, d.val_x]))) == sorted(_row_keys(train_x))
    assert len(list((cache / "datasets").glob("*.npz"))) == 1
    assert not list(cache.rglob("*.tmp"))  # atomic writes leave no temp files behind

    again = load_dataset("cifar10", data_dir=zpath, cache_dir=cache, val_fraction=0.25)
    assert counter.calls == 2  # the second load reads the cache and decodes nothing
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_x, d.test_x)
    assert again.identity == d.identity and "zip-sha256=" in d.identity


def test_changed_source_is_decoded_again(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    zpath = _write_zip(
        tmp_path / "c10.zip", _make_images(CIFAR10_CLASSES, {"train": 2, "test": 1}, 8, seed=0)
    )
    first = load_dataset("cifar10", data_dir=zpath, cache_dir=cache, val_fraction=0.0)
    _write_zip(zpath, _make_images(CIFAR10_CLASSES, {"train": 2, "test": 1}, 8, seed=1))
    counter = _DecodeCounter(monkeypatch)
    second = load_dataset("cifar10", data_dir=zpath, cache_dir=cache, val_fraction=0.0)
    assert counter.calls == 2
    assert not torch.equal(first.train_x, second.train_x)
    assert first.identity != second.identity


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "garbage"])
def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, damage, caplog):
    cache = tmp_path / "cache"
    files = _make_images(CIFAR10_CLASSES, {"train": 2, "test": 1}, 8, seed=0)
    zpath = _write_zip(tmp_path / "c10.zip", files)
    good = load_dataset("cifar10", data_dir=zpath, cache_dir=cache, val_fraction=0.0)
    (path,) = (cache / "datasets").glob("*.npz")
    blob = bytearray(path.read_bytes())
    if damage == "flip_bytes":  # inside the stored train_x array data
        blob[blob.index(b"train_x.npy") + 400] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray(b"not a cache file")
    path.write_bytes(bytes(blob))
    counter = _DecodeCounter(monkeypatch)
    with caplog.at_level("WARNING", logger="simlab.data"):
        rebuilt = load_dataset("cifar10", data_dir=zpath, cache_dir=cache, val_fraction=0.0)
    assert counter.calls == 2
    assert "corrupt" in caplog.text
    assert torch.equal(rebuilt.train_x, good.train_x) and torch.equal(rebuilt.test_x, good.test_x)
    # The rebuilt cache is whole again: a third load decodes nothing.
    load_dataset("cifar10", data_dir=zpath, cache_dir=cache, val_fraction=0.0)
    assert counter.calls == 2


def test_concurrent_loaders_decode_once(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    zpath = _write_zip(
        tmp_path / "c10.zip", _make_images(CIFAR10_CLASSES, {"train": 3, "test": 1}, 8, seed=0)
    )
    counter = _DecodeCounter(monkeypatch)

    def load(_):
        return load_dataset("cifar10", data_dir=zpath, cache_dir=tmp_path / "cache", val_fraction=0.0)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(load, range(3)))
    assert counter.calls == 2  # one decode of train + test; the others waited for its cache file
    assert all(torch.equal(r.train_x, results[0].train_x) for r in results)


def test_imagefolder_from_a_folder_with_val_as_test_and_grayscale(tmp_path):
    classes = ["b_cls", "a_cls", "c_cls"]
    files = _make_images(classes, {"train": 3, "val": 2}, 12, seed=4, channels=1)
    root = _write_folder(tmp_path / "imgs", files)
    d = load_dataset("imagefolder", data_dir=root, cache_dir=tmp_path / "cache", val_fraction=0.0, channels=1)
    assert d.class_names == ["a_cls", "b_cls", "c_cls"]  # sorted, as torchvision's ImageFolder
    x, y = _expected(files, d.class_names, "val")
    assert torch.equal(d.test_x, x) and torch.equal(d.test_y, y)
    assert d.image_shape == (1, 12, 12)
    rgb = load_dataset("imagefolder", data_dir=root, cache_dir=tmp_path / "cache", val_fraction=0.0)
    assert rgb.image_shape == (3, 12, 12)
    assert torch.equal(rgb.test_x, x.expand(-1, 3, -1, -1))  # L -> RGB copies the channel


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    files = _make_images(["a", "b"], {"train": 2, "test": 1}, 8, seed=0)
    files["train/a/0009.png"] = np.zeros((10, 10, 3), dtype=np.uint8)
    root = _write_folder(tmp_path / "imgs", files)
    with pytest.raises(ValueError, match="0009.png.*pass image_size"):
        load_dataset("imagefolder", data_dir=root, cache_dir=tmp_path / "c")
    d = load_dataset("imagefolder", data_dir=root, cache_dir=tmp_path / "c", image_size=8, val_fraction=0.0)
    assert d.image_shape == (3, 8, 8)


def test_cifar10_from_an_extracted_folder(tmp_path):
    files = _make_images(CIFAR10_CLASSES, {"train": 2, "test": 1}, 8, seed=2)
    root = _write_folder(tmp_path / "extracted" / "cifar10-jpeg", files)
    d = load_dataset("cifar10", data_dir=root.parent, cache_dir=tmp_path / "cache", val_fraction=0.0)
    x, y = _expected(files, list(CIFAR10_CLASSES), "test")
    assert torch.equal(d.test_x, x) and torch.equal(d.test_y, y)
    assert "folder-listing-sha256=" in d.identity


@pytest.mark.parametrize("as_zip", [False, True])
def test_cifar100_from_an_image_folder(tmp_path, as_zip):
    """A synthetic 100-class tree (the cifar10 layouts): PNG files in a folder, JPEG files in a zip."""
    files = _make_images(CIFAR100_CLASSES, {"train": 2, "test": 1}, 4, seed=5)
    if as_zip:
        data_dir = tmp_path / "c100.zip"
        encoded = {}
        with zipfile.ZipFile(data_dir, "w") as z:
            for name, a in files.items():
                buf = io.BytesIO()
                Image.fromarray(a).save(buf, format="JPEG", quality=90)
                encoded[name] = buf.getvalue()
                z.writestr("cifar100-jpeg/" + name.replace(".png", ".jpg"), encoded[name])
        # JPEG is lossy: the reference is PIL's own decoding of the stored bytes.
        files = {n: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for n, b in encoded.items()}
    else:
        data_dir = _write_folder(tmp_path / "c100", files)
    d = load_dataset("cifar100", data_dir=data_dir, cache_dir=tmp_path / "cache", val_fraction=0.0)
    assert d.class_names == list(CIFAR100_CLASSES) and d.num_classes == 100
    x, y = _expected(files, list(CIFAR100_CLASSES), "test")
    assert torch.equal(d.test_x, x) and torch.equal(d.test_y, y)
    train_x, train_y = _expected(files, list(CIFAR100_CLASSES), "train")
    assert sorted(_row_keys(d.train_x)) == sorted(_row_keys(train_x))
    assert torch.equal(torch.bincount(d.train_y, minlength=100), torch.full((100,), 2))


def test_cifar100_image_folder_with_wrong_classes_is_named(tmp_path):
    files = _make_images(CIFAR100_CLASSES[:99], {"train": 1, "test": 1}, 4, seed=6)
    root = _write_folder(tmp_path / "c99", files)
    with pytest.raises(ValueError, match="99 class folders, expected cifar100's 100.*worm"):
        load_dataset("cifar100", data_dir=root, cache_dir=tmp_path / "cache", val_fraction=0.0)


@pytest.mark.parametrize("as_zip", [False, True])
def test_tinyimagenet_layout(tmp_path, as_zip):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]
    rng = np.random.default_rng(0)
    images = {}
    for w in wnids:
        for i in range(3):
            a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            path = root / "train" / w / "images" / f"{w}_{i}.JPEG"
            images[path] = a
    lines = []
    for i, w in enumerate(["n03", "n01", "n02", "n01"]):
        path = root / "val" / "images" / f"val_{i}.JPEG"
        images[path] = rng.integers(0, 256, (64, 64), dtype=np.uint8)  # one grayscale, as in the real set
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    for path, a in images.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(path, format="JPEG")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn03\tbullfrog\n")
    data_dir = tmp_path
    if as_zip:  # the archive as distributed: tiny-imagenet-200.zip with that top folder
        data_dir = _zip_tree(root, tmp_path / "tiny-imagenet-200.zip")
    d = load_dataset("tinyimagenet", data_dir=data_dir, cache_dir=tmp_path / "cache", val_fraction=0.0)
    assert d.class_names == ["n01", "n02", "n03"]
    assert d.info["words"] == ["goldfish, Carassius auratus", "salamander", "bullfrog"]
    assert torch.bincount(d.train_y).tolist() == [3, 3, 3]
    assert d.test_y.tolist() == [2, 0, 1, 0]  # val_0..val_3 in file-name order
    ref = np.array(Image.open(root / "val" / "images" / "val_1.JPEG").convert("RGB"))
    assert torch.equal(d.test_x[1], torch.from_numpy(ref).permute(2, 0, 1))
    assert d.image_shape == (3, 64, 64)


@pytest.mark.parametrize("as_zip", [False, True])
def test_tinyimagenet_image_folder_layout(tmp_path, as_zip):
    """The layout of ../shared/data/tiny-imagenet-200-train200.zip: train/<wnid>/<image>,
    val/<wnid>/<image> (the official validation split regrouped by class), wnids.txt, words.txt."""
    root = tmp_path / "tiny-imagenet-200-train200"
    rng = np.random.default_rng(1)
    images = {}
    for w, n_train, n_val in (("n02", 2, 1), ("n01", 3, 2), ("n03", 1, 1)):
        for i in range(n_train):
            images[root / "train" / w / f"{w}_{i}.jpg"] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        for i in range(n_val):
            images[root / "val" / w / f"val_{w}{i}.jpg"] = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    for path, a in images.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(path, format="JPEG")
    (root / "wnids.txt").write_text("n02\nn01\nn03\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn03\tbullfrog\n")
    data_dir = _zip_tree(root, tmp_path / "tiny.zip") if as_zip else root
    d = load_dataset("tinyimagenet", data_dir=data_dir, cache_dir=tmp_path / "cache", val_fraction=0.0)
    assert d.class_names == ["n01", "n02", "n03"]
    assert d.info["words"] == ["goldfish, Carassius auratus", "salamander", "bullfrog"]
    assert torch.bincount(d.train_y).tolist() == [3, 2, 1]
    assert torch.bincount(d.test_y).tolist() == [2, 1, 1]
    # Files in name order: val/n01/val_n010, val_n011, val/n02/val_n020, val/n03/val_n030.
    assert d.test_y.tolist() == [0, 0, 1, 2]
    ref = np.array(Image.open(root / "val" / "n01" / "val_n011.jpg").convert("RGB"))  # a grey one
    assert torch.equal(d.test_x[1], torch.from_numpy(ref).permute(2, 0, 1))


@pytest.mark.slow
def test_real_tinyimagenet_subset_zip(tmp_path):
    """The real 200-class subset in ../shared/data: 200 train + 50 val images per class, 64x64 RGB."""
    zip_path = (
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tiny-imagenet-200-train200.zip"
    )
    if not zip_path.exists():
        pytest.skip(reason=f"{zip_path} is not on this machine")
    d = load_dataset("tinyimagenet", data_dir=zip_path, cache_dir=tmp_path / "cache", val_fraction=0.0)
    with zipfile.ZipFile(zip_path) as z:
        wnids = [w for w in z.read("tiny-imagenet-200-train200/wnids.txt").decode().split() if w]
        val_files = sorted(n for n in z.namelist() if n.startswith("tiny-imagenet-200-train200/val/"))
        val_files = [n for n in val_files if n.lower().endswith((".jpg", ".jpeg"))]
        first = np.array(Image.open(io.BytesIO(z.read(val_files[0]))).convert("RGB"))
    assert d.class_names == sorted(wnids) and len(wnids) == 200
    assert d.image_shape == (3, 64, 64)
    assert torch.bincount(d.train_y, minlength=200).tolist() == [200] * 200
    assert torch.bincount(d.test_y, minlength=200).tolist() == [50] * 200
    assert d.test_y[0].item() == d.class_names.index(val_files[0].split("/")[-2])
    assert torch.equal(d.test_x[0], torch.from_numpy(first).permute(2, 0, 1))
    assert len(d.info["words"]) == 200 and all(d.info["words"])


# ---------------------------------------------------------------------------------------------
# batches
def test_epoch_batches_cover_a_seeded_permutation():
    batches = list(epoch_batches(10, 4, generator=torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert all(b.dtype == torch.int64 for b in batches)
    same = list(epoch_batches(10, 4, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, same, strict=True))
    other = torch.cat(list(epoch_batches(10, 4, generator=torch.Generator().manual_seed(1))))
    assert not torch.equal(torch.cat(batches), other)
    assert [len(b) for b in epoch_batches(10, 4, generator=torch.Generator(), drop_last=True)] == [4, 4]
    assert torch.cat(list(epoch_batches(5, 2, generator=None))).tolist() == [0, 1, 2, 3, 4]
    assert list(epoch_batches(0, 2, generator=None)) == []


def test_epoch_batches_bad_input():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        next(epoch_batches(10, 0, generator=None))
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        next(epoch_batches(10, 2, generator=1))


def test_prepare_images_without_augmentation_matches_torchvision_normalize(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 6, 7), generator=g, dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = prepare_images(x.to(device), mean=mean, std=std, augment=False, generator=None)
    ref = torch.stack([TF.normalize(TF.to_tensor(TF.to_pil_image(img)), mean, std) for img in x])
    assert out.dtype == torch.float32 and out.device.type == device.type
    torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=1e-5)
    assert out.is_contiguous()
    cl = prepare_images(x.to(device), mean=mean, std=std, augment=False, generator=None, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl.cpu(), ref, atol=1e-5, rtol=1e-5)


def _candidates(img: torch.Tensor, mean, std, padding: int):
    """Every crop/flip of one image that torchvision can produce, normalised, keyed by (top, left, flip)."""
    c, h, w = img.shape
    padded = TF.pad(TF.to_pil_image(img), padding, fill=0)
    out = {}
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = TF.crop(padded, top, left, h, w)
            for flipped in (False, True):
                pil = TF.hflip(crop) if flipped else crop
                out[(top, left, flipped)] = TF.normalize(TF.to_tensor(pil), mean, std)
    return out


def _match(sample: torch.Tensor, candidates: dict) -> list:
    return [key for key, ref in candidates.items() if torch.allclose(sample, ref, atol=1e-5)]


def test_augmentation_produces_only_valid_crops_and_flips(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 256, (12, 3, 8, 8), generator=g, dtype=torch.uint8)  # no zeros: padding is visible
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    gen = torch.Generator(device=device).manual_seed(7)
    out = prepare_images(x.to(device), mean=mean, std=std, augment=True, generator=gen, channels_last=True)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    seen = set()
    for i in range(len(x)):
        keys = _match(out[i].cpu(), _candidates(x[i], mean, std, padding=4))
        assert len(keys) == 1, (i, keys)  # exactly one crop/flip of this very image
        seen.add(keys[0])
    assert len(seen) > 1  # not the same transform for every image


def test_augmentation_is_deterministic_given_the_generator():
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    kw = dict(mean=(0.5,) * 3, std=(0.25,) * 3, augment=True)
    a = prepare_images(x, generator=torch.Generator().manual_seed(3), **kw)
    b = prepare_images(x, generator=torch.Generator().manual_seed(3), **kw)
    c = prepare_images(x, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augmentation_offsets_and_flips_are_uniform():
    # Recover (top, left, flip) of each sample by brute force over naive slices of the padded batch,
    # then test that all (2p+1)^2 * 2 outcomes are equally likely (chi-square).
    n, p, size = 3000, 2, 5
    g = torch.Generator().manual_seed(11)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    out = prepare_images(x, mean=(0.0,), std=(1.0,), augment=True, generator=g, padding=p)
    padded = torch.zeros(n, 1, size + 2 * p, size + 2 * p)
    padded[:, :, p : p + size, p : p + size] = x.float() / 255
    hits = []
    for top in range(2 * p + 1):
        for left in range(2 * p + 1):
            crop = padded[:, :, top : top + size, left : left + size]
            for ref in (crop, crop.flip(-1)):
                hits.append((out - ref).abs().amax(dim=(1, 2, 3)) < 1e-6)
    hits = torch.stack(hits, dim=1)  # (n, outcomes)
    assert (hits.sum(dim=1) == 1).all()  # random pixels: exactly one outcome explains each sample
    counts = hits.sum(dim=0)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


def test_augmentation_switches():
    x = torch.randint(1, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    kw = dict(mean=(0.0,) * 3, std=(1.0,) * 3, augment=True)
    same = prepare_images(x, generator=torch.Generator().manual_seed(0), padding=0, flip=False, **kw)
    torch.testing.assert_close(same, x.float() / 255)
    no_flip = prepare_images(x, generator=torch.Generator().manual_seed(0), flip=False, **kw)
    for i in range(len(x)):
        (key,) = _match(no_flip[i], _candidates(x[i], (0.0,) * 3, (1.0,) * 3, padding=4))
        assert key[2] is False


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (torch.zeros(2, 3, 4, 4), {}, "x must be a uint8 tensor \\[B, C, H, W\\], got torch.float32"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), {}, "got torch.uint8 of shape \\(3, 4, 4\\)"),
        (
            torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
            {"mean": (0.5,)},
            "mean must have one value per channel \\(3\\)",
        ),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"std": (1.0, 0.0, 1.0)}, "std must be > 0"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"generator": None}, "generator: augment=True needs"),
    ],
)
def test_prepare_images_bad_input(x, kwargs, match):
    args = dict(mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, generator=torch.Generator())
    with pytest.raises(ValueError, match=match):
        prepare_images(x, **{**args, **kwargs})


def test_uniform_noise_images():
    a = uniform_noise_images(200, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    b = uniform_noise_images(200, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    assert a.shape == (200, 3, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    counts = torch.bincount(a.reshape(-1).long(), minlength=256)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3  # uniform over 0..255
    with pytest.raises(ValueError, match="image_shape must be \\(C, H, W\\)"):
        uniform_noise_images(2, (8, 8), generator=torch.Generator())


def test_image_data_to_device_keeps_uint8(tmp_path):
    d = _synthetic(tmp_path).to("cpu")
    assert d.train_x.dtype == torch.uint8 and d.name == "synthetic"


# ---------------------------------------------------------------------------------------------
# the real CIFAR-10 zip (decoding 60,000 JPEGs takes ~15 s on one core; the cache is shared)
@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    return os.environ.get("SIMLAB_CACHE") or str(tmp_path_factory.mktemp("simlab-cache"))


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason="../shared/data/cifar10-jpeg.zip is not on this machine")
def test_real_cifar10_zip(shared_cache, monkeypatch):
    d = load_dataset("cifar10", data_dir=CIFAR_ZIP, cache_dir=shared_cache, val_fraction=0.1, seed=0)
    assert d.class_names == list(CIFAR10_CLASSES)
    assert d.train_x.shape == (45_000, 3, 32, 32) and d.val_x.shape == (5_000, 3, 32, 32)
    assert d.test_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(d.train_y).tolist() == [4500] * 10
    assert torch.bincount(d.val_y).tolist() == [500] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    # Test images are in sorted path order: compare with PIL decoding the zip entries directly.
    with zipfile.ZipFile(CIFAR_ZIP) as z:
        for k, idx in ((3, 3000 + 17), (9, 9999)):
            name = f"cifar10-jpeg/test/{CIFAR10_CLASSES[k]}/{idx - 1000 * k:04d}.jpg"
            ref = np.array(Image.open(io.BytesIO(z.read(name))).convert("RGB"))
            assert torch.equal(d.test_x[idx], torch.from_numpy(ref).permute(2, 0, 1))
            assert d.test_y[idx].item() == k
    # The CIFAR-10 training set's well-known channel means (0.4914, 0.4822, 0.4465), within JPEG error.
    assert np.allclose(d.mean, (0.4914, 0.4822, 0.4465), atol=0.01)
    monkeypatch.setattr(readers, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
    again = load_dataset("cifar10", data_dir=CIFAR_ZIP, cache_dir=shared_cache, val_fraction=0.1, seed=0)
    assert torch.equal(again.val_x, d.val_x)
