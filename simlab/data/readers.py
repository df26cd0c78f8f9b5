"""Dataset sources: image-folder zips/folders, Tiny-ImageNet, torchvision CIFAR, digits, synthetic."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from simlab._io import write_bytes_atomic
from simlab.data.cache import cached_raw
from simlab.data.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES
from simlab.data.splits import RawImages, stratified_holdout
from simlab.progress import Progress

logger = logging.getLogger(__name__)

DIGITS_TEST_SEED = 0  # the digits test split is fixed, independent of the training seed
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------------
# Sources: a zip file or a folder, read by relative posix path
class _FileSource:
    """Read-only view of the files in a zip or a directory tree (listed and opened lazily)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._names: list[str] | None = None

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as err:
                raise ValueError(f"data_dir: {str(self.path)!r} is not a readable zip file ({err})") from err
        return self._zip

    @property
    def names(self) -> list[str]:
        """Relative posix paths of every file."""
        if self._names is None:
            if self.is_zip:
                self._names = [n for n in self._open().namelist() if not n.endswith("/")]
            else:
                names = []
                for root, _dirs, files in os.walk(self.path):
                    rel = Path(root).relative_to(self.path).as_posix()
                    names.extend(f if rel == "." else f"{rel}/{f}" for f in files)
                self._names = sorted(names)
        return self._names

    def read(self, name: str) -> bytes:
        if self.is_zip:
            return self._open().read(name)
        return (self.path / name).read_bytes()

    def identity(self, memo_dir: Path | None = None) -> str:
        """The zip's sha256, or a hash of the folder's (path, size, mtime) listing.

        A zip's sha256 is remembered in ``memo_dir`` under its (absolute path, size, mtime), so an
        unchanged zip is hashed once; any change to the file changes the memo key.
        """
        h = hashlib.sha256()
        if not self.is_zip:
            for n in self.names:
                st = (self.path / n).stat()
                h.update(f"{n}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            return f"folder-listing-sha256={h.hexdigest()}"
        st = self.path.stat()
        memo = None
        if memo_dir is not None:
            stamp = f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
            memo = memo_dir / f"{hashlib.sha256(stamp).hexdigest()[:32]}.sha256"
            if memo.is_file():
                digest = memo.read_text().strip()
                if len(digest) == 64:
                    return f"zip-sha256={digest}"
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if memo is not None:
            write_bytes_atomic(memo, h.hexdigest().encode())
        return f"zip-sha256={h.hexdigest()}"

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _decode_images(
    source: _FileSource, names: Sequence[str], *, channels: int, image_size: int | None
) -> torch.Tensor:
    """Decode ``names`` with PIL into one uint8 ``[N, C, H, W]`` tensor (all of one size, or resized)."""
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[channels]
    out: np.ndarray | None = None
    progress = Progress(len(names), f"decoding {source.path}", logger=logger, unit="images")
    for i, n in enumerate(names):
        progress.update()
        try:
            with Image.open(io.BytesIO(source.read(n))) as im:
                if im.mode != mode:
                    im = im.convert(mode)
                if image_size is not None and im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                a = np.asarray(im)
        except (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            # PIL's and zipfile's errors name no file
            raise ValueError(f"data_dir: cannot decode image {n!r} in {str(source.path)!r}: {err}") from err
        if out is None:
            out = np.empty((len(names), *a.shape), dtype=np.uint8)
        if a.shape != out.shape[1:]:
            raise ValueError(
                f"image {n!r} in {str(source.path)!r} has shape {a.shape}, expected {out.shape[1:]} "
                "like the first image; pass image_size=... to resize"
            )
        out[i] = a
    progress.close()
    if out is None:
        raise ValueError(f"no images to decode in {str(source.path)!r}")
    if out.ndim == 3:  # grayscale (N, H, W)
        out = out[..., None]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _check_channels(channels: Any) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def _check_image_size(image_size: Any) -> None:
    if image_size is not None and not (isinstance(image_size, int) and image_size > 0):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")


def _image_folder_raw(
    path: Path, cache_dir: Path, *, kind: str, channels: int = 3, image_size: int | None = None
) -> RawImages:
    """``{train,test}/<class>/<image>`` (under one prefix) in a zip or folder, decoded once, cached."""
    source = _FileSource(path)
    try:
        source_id = source.identity(cache_dir / "datasets" / "sources")
        key_source = f"{kind}|{source_id}|channels={channels}|image_size={image_size}"

        def build() -> RawImages:
            layout = _find_split_layout(source)
            classes = sorted({cls for _, cls, _ in layout["train"]})
            unknown = sorted({cls for _, cls, _ in layout["test"]} - set(classes))
            if unknown:
                raise ValueError(f"data_dir: test classes {unknown} of {str(path)!r} have no training folder")
            logger.info("decoding %s from %s (once; cached under %s)", kind, path, cache_dir)
            index = {c: k for k, c in enumerate(classes)}
            parts = {}
            for split in ("train", "test"):
                entries = layout[split]
                x = _decode_images(
                    source, [n for _, _, n in entries], channels=channels, image_size=image_size
                )
                y = torch.tensor([index[cls] for _, cls, _ in entries], dtype=torch.int64)
                parts[split] = (x, y)
            return RawImages(classes, *parts["train"], *parts["test"], source=key_source)

        return cached_raw(cache_dir, kind, key_source, build)
    finally:
        source.close()


def _find_split_layout(source: _FileSource) -> dict[str, list[tuple[str, str, str]]]:
    """Group image paths ``<root>/<split>/<class>/<file>`` by split: ``{split: [(root, class, path)]}``.

    ``test`` falls back to ``val`` when there is no ``test`` folder. Exactly one ``root`` may hold them.
    """
    found: dict[str, dict[str, list[tuple[str, str, str]]]] = {}
    for n in source.names:
        parts = n.split("/")
        if len(parts) >= 3 and parts[-3] in ("train", "test", "val") and _is_image(n):
            root = "/".join(parts[:-3])
            found.setdefault(root, {}).setdefault(parts[-3], []).append((root, parts[-2], n))
    roots = sorted(
        r for r, splits in found.items() if "train" in splits and ("test" in splits or "val" in splits)
    )
    where = str(source.path)
    if not roots:
        raise FileNotFoundError(
            f"data_dir: no '<root>/train/<class>/<image>' + '<root>/test/<class>/<image>' layout in {where!r}"
        )
    if len(roots) > 1:
        raise ValueError(
            f"data_dir: several train/test layouts in {where!r} (under {roots}); point to one of them"
        )
    splits = found[roots[0]]
    test = splits.get("test", splits.get("val"))
    return {"train": sorted(splits["train"]), "test": sorted(test)}


def probe_image_folder(path: str | os.PathLike) -> dict[str, int]:
    """A cheap check of an image-folder zip or folder (``<root>/{train,test}/<class>/<image>``), before
    any decoding: it opens, has the layout with at least 2 training classes, and the first training and
    test images decode (a bad one is named). Returns the number of training images per class.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data_dir: no such file or folder {str(path)!r}")
    source = _FileSource(path)
    try:
        layout = _find_split_layout(source)
        counts: dict[str, int] = {}
        for _, cls, _ in layout["train"]:
            counts[cls] = counts.get(cls, 0) + 1
        if len(counts) < 2:
            raise ValueError(
                f"data_dir: {str(path)!r} has {len(counts)} training class(es) {sorted(counts)}; "
                "classification needs at least 2"
            )
        for split in ("train", "test"):
            _decode_images(source, [layout[split][0][2]], channels=3, image_size=None)
        return dict(sorted(counts.items()))
    finally:
        source.close()


# ---------------------------------------------------------------------------------------------
# Datasets (each returns RawImages; simlab.data.DATASETS wraps them with the split)
def _torchvision_cifar(which: str, root: Path, download: bool) -> RawImages:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[which]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as err:
        action = "download it there" if download else "find it there (download=False)"
        raise FileNotFoundError(
            f"{which}: could not {action}: data_dir={str(root)!r} ({err}). Without internet access, pass "
            f"--data-dir / data_dir pointing to a torchvision root that holds the extracted CIFAR archive"
            f" ({_TORCHVISION_FOLDERS[which]}/) or to an image-folder zip/folder with "
            f"<root>/train/<class>/<image> and <root>/test/<class>/<image>"
            + (" such as ../shared/data/cifar10-jpeg.zip" if which == "cifar10" else "")
        ) from err

    def to_tensor(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    # torchvision verifies the archive's md5, so the content is fixed by the name.
    return RawImages(list(train.classes), *to_tensor(train), *to_tensor(test), source=f"torchvision-{which}")


# torchvision's extracted archive folder of each CIFAR (named in the not-found message).
_TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}


def _read_cifar(which: str, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool) -> RawImages:
    """CIFAR-10/100 from an image-folder zip or folder (``<root>/{train,test}/<class>/<image>``, class
    folders named as torchvision's labels, so sorted folder order = torchvision's label order), or else
    a torchvision root."""
    if data_dir is None:
        return _torchvision_cifar(which, cache_dir / "torchvision", download)
    path = Path(data_dir).expanduser()
    if path.suffix.lower() == ".zip" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"data_dir: no such file {str(path)!r}")
        raw = _image_folder_raw(path, cache_dir, kind=which)
    elif path.is_dir() and (_has_split_folders(path) or any(_has_split_folders(p) for p in _subdirs(path))):
        raw = _image_folder_raw(path, cache_dir, kind=which)
    else:
        return _torchvision_cifar(which, path, download)
    expected = _CIFAR_CLASSES[which]
    if tuple(raw.class_names) != expected:
        missing = sorted(set(expected) - set(raw.class_names))
        extra = sorted(set(raw.class_names) - set(expected))
        raise ValueError(
            f"data_dir: {str(path)!r} has {len(raw.class_names)} class folders, expected {which}'s "
            f"{len(expected)} (missing: {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
            f"unexpected: {extra[:10]}{' ...' if len(extra) > 10 else ''})"
        )
    return raw


def read_cifar10(*, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> RawImages:
    """CIFAR-10 from an image-folder zip or folder, or a torchvision root (see the module docstring)."""
    return _read_cifar("cifar10", data_dir, cache_dir, download)


def read_cifar100(*, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> RawImages:
    """CIFAR-100 from an image-folder zip or folder (the layout of ``cifar10``, 100 class folders named
    as torchvision's fine labels), or a torchvision root (default ``<cache_dir>/torchvision``)."""
    return _read_cifar("cifar100", data_dir, cache_dir, download)


def _has_split_folders(path: Path) -> bool:
    return (path / "train").is_dir() and ((path / "test").is_dir() or (path / "val").is_dir())


def _subdirs(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir()]


def read_imagefolder(
    *, data_dir: str | os.PathLike | None, cache_dir: Path, channels: int = 3, image_size: int | None = None
) -> RawImages:
    """Any ``train/<class>/*`` + ``test/<class>/*`` (or ``val/``) layout, as a folder or a zip."""
    _check_channels(channels)
    _check_image_size(image_size)
    if data_dir is None:
        raise ValueError(
            "data_dir: the 'imagefolder' dataset needs data_dir (a folder or zip with train/ and test/)"
        )
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data_dir: no such file or folder {str(path)!r}")
    return _image_folder_raw(path, cache_dir, kind="imagefolder", channels=channels, image_size=image_size)


def _tinyimagenet_files(
    source: _FileSource, path: Path
) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """``(root prefix, train, test)`` with ``(wnid, file name)`` pairs, for either layout of
    `read_tinyimagenet`: the standard one if any ``train/<wnid>/images/<image>`` file exists, else
    the image-folder one."""
    standard: list[tuple[str, str]] = []
    folders: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    roots: dict[str, set[str]] = {"standard": set(), "folders": set()}
    for n in source.names:
        if not _is_image(n):
            continue
        parts = n.split("/")
        if len(parts) >= 4 and parts[-4] == "train" and parts[-2] == "images":
            standard.append((parts[-3], n))
            roots["standard"].add("/".join(parts[:-4]))
        elif len(parts) >= 3 and parts[-3] in folders and parts[-2] != "images":
            folders[parts[-3]].append((parts[-2], n))
            roots["folders"].add("/".join(parts[:-3]))
    layout = "standard" if standard else "folders"
    if not (standard or folders["train"]):
        raise FileNotFoundError(
            f"data_dir: no 'train/<wnid>/images/<image>' (standard) or 'train/<wnid>/<image>' (image "
            f"folders) files in {str(path)!r}"
        )
    if len(roots[layout]) > 1:
        raise ValueError(f"data_dir: several Tiny-ImageNet roots in {str(path)!r}: {sorted(roots[layout])}")
    prefix = next(iter(roots[layout]))
    prefix = prefix + "/" if prefix else ""
    if layout == "folders":
        if not folders["val"]:
            raise FileNotFoundError(f"data_dir: no 'val/<wnid>/<image>' files in {str(path)!r}")
        return prefix, folders["train"], folders["val"]
    ann_name = f"{prefix}val/val_annotations.txt"
    if ann_name not in set(source.names):
        raise FileNotFoundError(f"data_dir: missing {ann_name!r} in {str(path)!r}")
    test: list[tuple[str, str]] = []
    for line in source.read(ann_name).decode().splitlines():
        if line.strip():
            fields = line.split("\t")
            test.append((fields[1], f"{prefix}val/images/{fields[0]}"))
    return prefix, standard, test


def read_tinyimagenet(
    *, data_dir: str | os.PathLike | None, cache_dir: Path, image_size: int | None = None
) -> RawImages:
    """Tiny-ImageNet-200 from a folder or zip; the labelled ``val`` set is the test split.

    Two layouts: the standard release (``train/<wnid>/images/<image>``, ``val/images/<image>`` labelled
    by ``val/val_annotations.txt``) and the same files regrouped as image folders (``train/<wnid>/
    <image>``, ``val/<wnid>/<image>``: ``../shared/data/tiny-imagenet-200-train200.zip``). Classes are
    the sorted wnids either way; ``words.txt`` gives their names (``info["words"]``).
    """
    _check_image_size(image_size)
    if data_dir is None:
        raise ValueError("data_dir: 'tinyimagenet' needs data_dir (the tiny-imagenet-200 folder or zip)")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data_dir: no such file or folder {str(path)!r}")
    source = _FileSource(path)
    try:
        prefix, train, test = _tinyimagenet_files(source, path)
        wnids = sorted({w for w, _ in train})
        unknown = sorted({w for w, _ in test} - set(wnids))
        if unknown:
            raise ValueError(f"data_dir: the val split names wnids with no training images: {unknown[:5]}")
        words_name = f"{prefix}words.txt"
        info: dict[str, Any] = {}
        if words_name in set(source.names):
            table = dict(
                line.split("\t", 1) for line in source.read(words_name).decode().splitlines() if "\t" in line
            )
            info["words"] = [table.get(w, w).strip() for w in wnids]
        train.sort(key=lambda t: t[1])
        test.sort(key=lambda t: t[1])
        key_source = (
            f"tinyimagenet|{source.identity(cache_dir / 'datasets' / 'sources')}|image_size={image_size}"
        )

        def build() -> RawImages:
            logger.info("decoding Tiny-ImageNet from %s (once; cached under %s)", path, cache_dir)
            index = {w: k for k, w in enumerate(wnids)}
            xs = [
                _decode_images(source, [n for _, n in s], channels=3, image_size=image_size)
                for s in (train, test)
            ]
            ys = [torch.tensor([index[w] for w, _ in s], dtype=torch.int64) for s in (train, test)]
            return RawImages(wnids, xs[0], ys[0], xs[1], ys[1], source=key_source, info=info)

        return cached_raw(cache_dir, "tinyimagenet", key_source, build)
    finally:
        source.close()


_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def read_digits(
    *, data_dir: str | os.PathLike | None, cache_dir: Path, test_fraction: float = 0.2, image_size: int = 32
) -> RawImages:
    """scikit-learn's 8x8 digits upsampled to ``image_size`` (1 channel); a fixed stratified test split.

    Decoded once into the dataset cache (keyed by the scikit-learn version): a later load, e.g. in a
    fresh sweep trial process, neither imports scikit-learn (seconds) nor re-parses its CSV.
    """
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    _check_image_size(image_size)
    if data_dir is not None:
        logger.warning("digits ships with scikit-learn; data_dir=%r is not used", str(data_dir))
    from importlib.metadata import version

    source = (
        f"digits|sklearn={version('scikit-learn')}|image_size={image_size}"
        f"|test_fraction={float(test_fraction)!r}"
    )

    def build() -> RawImages:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (
            torch.from_numpy(np.asarray(bunch.images, dtype=np.float32))[:, None] / 16.0
        )  # (N, 1, 8, 8), 0..16 -> [0, 1]
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
        y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
        keep, held = stratified_holdout(y, 10, float(test_fraction), DIGITS_TEST_SEED)
        return RawImages(list(_DIGIT_NAMES), x[keep], y[keep], x[held], y[held], source=source)

    return cached_raw(cache_dir, "digits", source, build)


def read_synthetic(
    *,
    data_dir: str | os.PathLike | None,
    cache_dir: Path,
    num_classes: int = 10,
    num_superclasses: int = 2,
    samples_per_class: int = 60,
    test_samples_per_class: int = 20,
    image_size: int = 32,
    channels: int = 3,
    class_scale: float = 0.5,
    noise: float = 0.5,
    data_seed: int = 0,
) -> RawImages:
    """Seeded images with a two-level hierarchy: class k belongs to superclass ``k * G // K``.

    Prototypes are smooth (a 4x4 Gaussian pattern upsampled bilinearly): superclass pattern with unit
    scale plus a class offset scaled by ``class_scale`` (< 1 keeps classes of one superclass closer to
    each other than to other superclasses); a sample adds i.i.d. Gaussian pixel noise of scale ``noise``.
    Intensities map to uint8 as ``128 + 32 * value``, clipped.
    """
    for arg, value in (
        ("num_classes", num_classes),
        ("num_superclasses", num_superclasses),
        ("samples_per_class", samples_per_class),
        ("test_samples_per_class", test_samples_per_class),
        ("image_size", image_size),
    ):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if num_superclasses > num_classes:
        raise ValueError(f"num_superclasses must be <= num_classes ({num_classes}), got {num_superclasses}")
    _check_channels(channels)
    for arg, value in (("class_scale", class_scale), ("noise", noise)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{arg} must be a number >= 0, got {value!r}")
    if not (isinstance(data_seed, int) and data_seed >= 0):
        raise ValueError(f"data_seed must be a non-negative integer, got {data_seed!r}")
    if data_dir is not None:
        logger.warning("synthetic data is generated; data_dir=%r is not used", str(data_dir))

    g = torch.Generator().manual_seed(data_seed)
    k, s, c = num_classes, num_superclasses, channels
    superclass = [i * s // k for i in range(k)]

    def smooth(n: int) -> torch.Tensor:  # (n, C, size, size) low-frequency patterns, unit variance at 4x4
        low = torch.randn(n, c, 4, 4, generator=g)
        return F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)

    super_protos = smooth(s)
    class_offsets = smooth(k)
    protos = super_protos[torch.tensor(superclass)] + class_scale * class_offsets  # (K, C, H, W)

    def sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(k).repeat_interleave(per_class)
        v = protos[y] + noise * torch.randn(len(y), c, image_size, image_size, generator=g)
        return (128.0 + 32.0 * v).round().clamp(0, 255).to(torch.uint8), y

    train_x, train_y = sample(samples_per_class)
    test_x, test_y = sample(test_samples_per_class)
    params = (
        f"K={k},G={s},n={samples_per_class},n_test={test_samples_per_class},size={image_size},C={c},"
        f"class_scale={float(class_scale)!r},noise={float(noise)!r},data_seed={data_seed}"
    )
    names = [f"s{superclass[i]}_c{i}" for i in range(k)]
    return RawImages(
        names, train_x, train_y, test_x, test_y, source=f"synthetic|{params}", info={"superclass": superclass}
    )
