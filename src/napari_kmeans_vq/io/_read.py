"""Reading a file only after its first bytes say what it is and how big it may be.

:func:`open_regular` refuses anything but a regular file at once (a FIFO would block
forever, ``/dev/zero`` never ends); :func:`read_checked` reads a bounded head, lets the
format check its magic bytes and declared sizes against the file's real size, and only
then reads the rest, into one buffer of exactly that size.
"""

from __future__ import annotations

import errno
import io
import os
import stat

from .data import fail

_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path):
    """Open ``path`` for binary reading if it is a regular file (symbolic links followed).

    Opening does not block: a FIFO is opened non-blocking, seen for what it is and refused
    with :class:`~napari_kmeans_vq.io.KVQError` before anything is read, as are devices
    and sockets. A directory raises ``IsADirectoryError``; a missing file
    ``FileNotFoundError``.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | _O_BINARY | _O_NONBLOCK | _O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise fail(f"is {file_kind(mode)}, not a regular file; only files are read", path)
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        size = os.fstat(fd).st_size
        raw = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    return _NamedReader(raw, path, size)


class _NamedReader(io.BufferedReader):
    """A buffered reader of a regular file whose ``name`` is the path it was opened from
    (not the number of its descriptor), as readers such as tifffile expect, and whose
    ``read(n)`` never asks for more than the file holds: Python allocates ``n`` bytes
    before reading, so a crafted length of 4 GiB in a 300-byte file (a PNG chunk, a TIFF
    strip) would otherwise request 4 GiB, in Pillow or tifffile as in this package."""

    def __init__(self, raw, name: str, size: int):
        super().__init__(raw)
        self._path = name
        self._size = size

    @property
    def name(self) -> str:
        return self._path

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            # A file that grew since it was opened is still read, a block at a time.
            size = min(size, max(self._size - self.tell(), 0) + io.DEFAULT_BUFFER_SIZE)
        return super().read(size)


def read_checked(path, peek: int, check) -> bytearray:
    """The bytes of a regular file, read only once ``check(head, size)`` has accepted them.

    ``head`` is the file's first ``peek`` bytes (fewer for a shorter file) and ``size`` its
    real size; ``check`` raises for a file it does not accept. The rest is then read into
    one buffer of ``size`` bytes; a file that changes size meanwhile is refused.
    """
    source = os.fspath(path)
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(peek)
        check(head, size)
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = len(head)
        if got > size:
            raise fail(f"changed while being read (now {got:,} bytes, was {size:,})", source)
        view[:got] = head
        while got < size:
            step = handle.readinto(view[got:])
            if not step:
                raise fail(f"truncated while being read ({got:,} of {size:,} bytes)", source)
            got += step
        if handle.read(1):
            raise fail(f"grew while being read (more than {size:,} bytes)", source)
    return buffer
