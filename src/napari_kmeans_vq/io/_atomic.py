"""Writes that either complete or leave nothing: files and directory stores."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def atomic_write(path, data, *, overwrite: bool = True) -> Path:
    """Write bytes to ``path`` so that it either appears complete or not at all.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary file is renamed over ``path`` (an atomic step on POSIX and Windows). On any
    error, including ``KeyboardInterrupt``, the temporary file is removed and ``path`` is
    left as it was.

    Parameters
    ----------
    path : str or Path
    data : bytes-like or iterable of bytes-like
        The file's content, in pieces if an iterable.
    overwrite : bool, default True
        When False, an existing ``path`` raises ``FileExistsError``.

    Returns
    -------
    Path
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    pieces = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    # O_EXCL with a random name, mode 0o666 so the process umask applies as for open().
    for _ in range(100):
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_store(path: Path, write, *, overwrite: bool) -> None:
    """Write a directory store atomically: ``write(tmp)`` fills a temporary directory
    beside ``path``, which is then renamed to ``path``.

    On any failure (or interruption) the temporary directory is removed and an existing
    ``path`` is left as it was; with ``overwrite`` an existing ``path`` is replaced only
    after the new store is complete.
    """
    parent = path.parent if str(path.parent) else Path(".")
    tmp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    old = None
    try:
        write(tmp)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} exists; refusing to overwrite it")
            # A directory cannot be renamed over a non-empty one: move the old store aside
            # first, then drop it once the new one is in place.
            old = parent / f".{path.name}.{secrets.token_hex(6)}.old"
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
