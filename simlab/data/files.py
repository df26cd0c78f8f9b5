"""A dataset's files: a zip or a folder read by relative posix path (`FileSource`, with a content
identity for the decoded-image cache), PIL decoding into uint8 tensors (`decode_images`), and the
checks of the image options (``channels``, ``image_size``)."""

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

from simlab._io import write_bytes_atomic
from simlab.progress import Progress

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "FileSource",
    "check_channels",
    "check_image_size",
    "decode_images",
    "is_image",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class FileSource:
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


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def decode_images(
    source: FileSource, names: Sequence[str], *, channels: int, image_size: int | None
) -> torch.Tensor:
    """Decode ``names`` with PIL into one uint8 ``[N, C, H, W]`` tensor (all of one size, or resized)."""
    from PIL import Image  # only the image-folder datasets decode

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


def check_channels(channels: Any) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def check_image_size(image_size: Any) -> None:
    if image_size is not None and not (isinstance(image_size, int) and image_size > 0):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
