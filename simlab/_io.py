"""The one atomic file write of the project: readers see the old file or the new one, never a part.

Every writer of a result, a cache, a checkpoint side file, a report or a benchmark figure goes through
:func:`atomic_path` (a temp path to hand to a library's ``save(path)``) or one of the small wrappers
:func:`atomic_write` (a callback writing to a binary file object), :func:`write_text_atomic` and
:func:`write_bytes_atomic`. The temp file lives in the target's folder (so ``os.replace`` is a rename
on one file system), is fsync'ed before the rename, gets the mode ``open()`` would have given (mkstemp
makes 0600; results and caches are for sharing), and is removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_bytes_atomic", "write_text_atomic"]


def _open_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[str]:
    """Yield a temp path next to ``path``; when the block ends without error the temp file is fsync'ed,
    given the default file mode and renamed onto ``path`` (``os.replace``); on any error it is deleted.

    Parent folders are created. Use it for libraries that write to a path (``torch.save``, ``np.save``,
    ``fig.savefig``); the file the block writes must exist when it ends.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.chmod(tmp, _open_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *, fsync: bool = True
) -> None:
    """Atomically write ``path`` with ``write(binary_file)``."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        write(fh)


def write_bytes_atomic(path: str | os.PathLike[str], payload: bytes, *, fsync: bool = True) -> None:
    atomic_write(path, lambda fh: fh.write(payload), fsync=fsync)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)
