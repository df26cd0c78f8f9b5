"""Dataset sources read from files: image-folder zips/folders, Tiny-ImageNet, torchvision CIFAR."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simlab.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES
from simlab.data.cache import cached_raw
from simlab.data.files import FileSource, check_channels, check_image_size, decode_images, is_image
from simlab.data.splits import RawImages

logger = logging.getLogger(__name__)


def _image_folder_raw(
    path: Path, cache_dir: Path, *, kind: str, channels: int = 3, image_size: int | None = None
) -> RawImages:
    """``{train,test}/<class>/<image>`` (under one prefix) in a zip or folder, decoded once, cached."""
    source = FileSource(path)
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
                x = decode_images(
                    source, [n for _, _, n in entries], channels=channels, image_size=image_size
                )
                y = torch.tensor([index[cls] for _, cls, _ in entries], dtype=torch.int64)
                parts[split] = (x, y)
            return RawImages(classes, *parts["train"], *parts["test"], source=key_source)

        return cached_raw(cache_dir, kind, key_source, build)
    finally:
        source.close()


def _find_split_layout(source: FileSource) -> dict[str, list[tuple[str, str, str]]]:
    """Group image paths ``<root>/<split>/<class>/<file>`` by split: ``{split: [(root, class, path)]}``.

    ``test`` falls back to ``val`` when there is no ``test`` folder. Exactly one ``root`` may hold them.
    """
    found: dict[str, dict[str, list[tuple[str, str, str]]]] = {}
    for n in source.names:
        parts = n.split("/")
        if len(parts) >= 3 and parts[-3] in ("train", "test", "val") and is_image(n):
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
    source = FileSource(path)
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
            decode_images(source, [layout[split][0][2]], channels=3, image_size=None)
        return dict(sorted(counts.items()))
    finally:
        source.close()


# ---------------------------------------------------------------------------------------------
# Datasets (each returns RawImages; simlab.data.DATASETS wraps them with the split)
def _torchvision_cifar(which: str, root: Path, download: bool) -> RawImages:
    from torchvision import datasets  # heavy; only the torchvision CIFAR layout needs it

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
    check_channels(channels)
    check_image_size(image_size)
    if data_dir is None:
        raise ValueError(
            "data_dir: the 'imagefolder' dataset needs data_dir (a folder or zip with train/ and test/)"
        )
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data_dir: no such file or folder {str(path)!r}")
    return _image_folder_raw(path, cache_dir, kind="imagefolder", channels=channels, image_size=image_size)


def _tinyimagenet_files(
    source: FileSource, path: Path
) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """``(root prefix, train, test)`` with ``(wnid, file name)`` pairs, for either layout of
    `read_tinyimagenet`: the standard one if any ``train/<wnid>/images/<image>`` file exists, else
    the image-folder one."""
    standard: list[tuple[str, str]] = []
    folders: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    roots: dict[str, set[str]] = {"standard": set(), "folders": set()}
    for n in source.names:
        if not is_image(n):
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
    check_image_size(image_size)
    if data_dir is None:
        raise ValueError("data_dir: 'tinyimagenet' needs data_dir (the tiny-imagenet-200 folder or zip)")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data_dir: no such file or folder {str(path)!r}")
    source = FileSource(path)
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
                decode_images(source, [n for _, n in s], channels=3, image_size=image_size)
                for s in (train, test)
            ]
            ys = [torch.tensor([index[w] for w, _ in s], dtype=torch.int64) for s in (train, test)]
            return RawImages(wnids, xs[0], ys[0], xs[1], ys[1], source=key_source, info=info)

        return cached_raw(cache_dir, "tinyimagenet", key_source, build)
    finally:
        source.close()
