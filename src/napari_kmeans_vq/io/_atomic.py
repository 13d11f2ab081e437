"""Writes that either complete or leave nothing: files and directory stores.

Where the temporary files live
------------------------------
Everything is written beside the destination ``DIR/NAME``, in the same folder (so the
final step is a rename, never a copy):

``DIR/.NAME.<12 hex digits>.tmp``
    The file or the store being written. Renamed to ``NAME`` once complete.
    A store written so that an interrupted run can be finished (``write_store`` with
    ``resumable``) is marked incomplete by the record file :data:`PARTIAL_RECORD` inside
    it for as long as blocks are missing: such a ``.tmp`` is kept when its writer fails or
    is killed (:func:`partial_stores` finds it), and renamed to ``NAME`` only once complete.
``DIR/.NAME.<12 hex digits>.old``
    Only while an existing store is replaced on a system without an atomic exchange of two
    paths (Linux has one, ``renameat2``; macOS ``renamex_np``): the old store, moved
    aside for the instant between two renames.

A writer holds an advisory lock (``flock``) on its temporary for as long as it lives; the
operating system drops the lock when the process ends, however it ends. So the next write
to the same destination knows the leftovers of a killed writer from the files of one still
running: it removes every unlocked ``.NAME.*.tmp`` and, if a swap was interrupted between
its two renames (no ``NAME``, an unlocked ``.NAME.*.old``), puts the old store back first,
as it was before the interrupted run. Without ``flock`` (Windows), leftovers older than a
day are removed.

Replacing, as ``cp`` and ``mv`` users expect: an existing path of any kind (a dangling
symbolic link too) is replaced only when asked (``overwrite``); a replaced regular file
keeps its permission bits (and owner, where the process may set it); a symbolic link is
replaced by the new file, never written through.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import stat
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
#: Without locks, leftovers older than this (seconds) count as abandoned.
_STALE_SECONDS = 24 * 3600

#: The file inside a temporary store that marks it incomplete (and resumable).
PARTIAL_RECORD = ".kvq-partial.json"

__all__ = [
    "PARTIAL_RECORD",
    "atomic_write",
    "clean_leftovers",
    "discard_partials",
    "leftovers",
    "partial_stores",
    "write_store",
]


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.(tmp|old)")


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def leftovers(path) -> list[Path]:
    """The temporary files and folders of writes to ``path`` found beside it (ended or
    still running), ``.NAME.<hex>.tmp`` and ``.NAME.<hex>.old``."""
    path = Path(path)
    pattern = _pattern(path.name)
    try:
        names = os.listdir(_parent(path))
    except OSError:
        return []
    return sorted(_parent(path) / n for n in names if pattern.fullmatch(n))


def _try_lock(fd: int) -> bool:
    """Take the advisory lock on ``fd`` without waiting; False when another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _open_nofollow(path: Path) -> int | None:
    """A read-only descriptor of a regular file or a directory at ``path`` (links and
    other kinds are not followed, nor opened), or None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_BINARY)
    except OSError:
        return None
    if os.fstat(fd).st_ino != info.st_ino:  # replaced in between
        os.close(fd)
        return None
    return fd


def _remove(path: Path) -> None:
    """Remove a file, a symbolic link or a folder tree (never following a link)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _abandoned(candidate: Path) -> int | None:
    """A locked descriptor of ``candidate`` when no living writer holds it, else None.
    Without locking, -1 when it is older than a day."""
    if fcntl is None:  # pragma: no cover - Windows
        try:
            age = time.time() - os.lstat(candidate).st_mtime
        except OSError:
            return None
        return -1 if age > _STALE_SECONDS else None
    fd = _open_nofollow(candidate)
    if fd is None:
        return None
    if _try_lock(fd):
        return fd
    os.close(fd)
    return None


def clean_leftovers(path) -> dict:
    """Tidy what interrupted writes to ``path`` left beside it.

    An old store whose swap was interrupted (``path`` missing) is renamed back to ``path``
    first; then every abandoned ``.NAME.<hex>.tmp`` and ``.old`` is removed, but for the
    incomplete stores marked by a :data:`PARTIAL_RECORD` (kept for a resume: see
    :func:`partial_stores`). Those of a writer still running (it holds their lock) are left
    alone.

    Returns
    -------
    dict
        ``removed`` (paths removed) and ``restored`` (the old store put back, or None).
    """
    path = Path(path)
    done: dict = {"removed": [], "restored": None}
    found = leftovers(path)
    olds = [p for p in found if p.suffix == ".old"]
    tmps = [p for p in found if p.suffix == ".tmp" and not _is_partial(p)]
    # Newest first: if several swaps were interrupted, the latest old store was the last
    # one at `path`.
    olds.sort(key=lambda p: _mtime(p), reverse=True)
    for candidate in [*olds, *tmps]:
        fd = _abandoned(candidate)
        if fd is None:
            continue
        try:
            if candidate.suffix == ".old" and not os.path.lexists(path):
                os.rename(candidate, path)
                done["restored"] = path
            else:
                _remove(candidate)
                done["removed"].append(candidate)
        finally:
            if fd >= 0:
                os.close(fd)
    return done


def _is_partial(path: Path) -> bool:
    return os.path.isfile(path / PARTIAL_RECORD) and not os.path.islink(path)


def partial_stores(path) -> list[Path]:
    """The incomplete stores that interrupted resumable writes to ``path`` left beside it
    (``.NAME.<hex>.tmp`` holding :data:`PARTIAL_RECORD`, no writer running), newest
    first."""
    found = []
    for candidate in leftovers(path):
        if candidate.suffix != ".tmp" or not _is_partial(candidate):
            continue
        fd = _abandoned(candidate)
        if fd is None:
            continue
        if fd >= 0:
            os.close(fd)
        found.append(candidate)
    return sorted(found, key=_mtime, reverse=True)


def discard_partials(path) -> list[Path]:
    """Remove the incomplete stores :func:`partial_stores` finds (to start again)."""
    removed = []
    for candidate in partial_stores(path):
        fd = _abandoned(candidate)
        if fd is None:
            continue
        try:
            _remove(candidate)
            removed.append(candidate)
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


def _mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _temporary_name(path: Path, kind: str) -> Path:
    return _parent(path) / f".{path.name}.{secrets.token_hex(6)}.{kind}"


def _new_file(path: Path) -> tuple[Path, int]:
    """Create ``.NAME.<hex>.tmp`` beside ``path`` (mode 0o666 less the umask), locked."""
    for _ in range(100):
        tmp = _temporary_name(path, "tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
        if fcntl is None or _hold(fd, tmp):
            return tmp, fd
        os.close(fd)  # pragma: no cover - removed by a cleaner before it was locked
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _new_folder(path: Path) -> tuple[Path, int | None]:
    """Create the folder ``.NAME.<hex>.tmp`` beside ``path``, locked."""
    for _ in range(100):
        tmp = _temporary_name(path, "tmp")
        try:
            os.mkdir(tmp)
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
        if fcntl is None:  # pragma: no cover - Windows
            return tmp, None
        fd = _open_nofollow(tmp)
        if fd is not None and _hold(fd, tmp):
            return tmp, fd
        if fd is not None:  # pragma: no cover - removed by a cleaner before it was locked
            os.close(fd)
    raise FileExistsError(
        f"could not create a temporary folder next to {path}"
    )  # pragma: no cover


def _hold(fd: int, tmp: Path) -> bool:
    """Lock ``fd`` and check that ``tmp`` still names it (a cleaner may have removed it
    between its creation and the lock)."""
    if not _try_lock(fd):  # pragma: no cover - a cleaner holds it to remove it
        return False
    try:
        return os.lstat(tmp).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:  # pragma: no cover
        return False


# ---------------------------------------------------------------------------------------------
# renames with options: Linux renameat2, macOS renamex_np

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # Linux
_RENAME_SWAP, _RENAME_EXCL = 2, 4  # macOS
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", -1), errno.EOPNOTSUPP}
_libc = None


def _rename_with(src: Path, dst: Path, how: str) -> bool:
    """Rename ``src`` to ``dst`` atomically ``how`` = "exchange" (swap the two) or
    "noreplace" (fail with FileExistsError if ``dst`` exists). False when this system or
    file system cannot, so the caller falls back to plain renames."""
    global _libc
    if sys.platform.startswith("linux"):
        name, flag = "renameat2", _RENAME_EXCHANGE if how == "exchange" else _RENAME_NOREPLACE
    elif sys.platform == "darwin":  # pragma: no cover - not tested here
        name, flag = "renamex_np", _RENAME_SWAP if how == "exchange" else _RENAME_EXCL
    else:  # pragma: no cover
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover
            _libc = False
    function = getattr(_libc, name, None) if _libc else None
    if function is None:  # pragma: no cover - glibc < 2.28
        return False
    if name == "renameat2":
        at_fdcwd = -100
        result = function(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flag)
    else:  # pragma: no cover
        result = function(os.fsencode(src), os.fsencode(dst), flag)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(dst))


#: Atomic swap of two paths, replaceable in tests to exercise the fallback.
def _exchange(src: Path, dst: Path) -> bool:
    return _rename_with(src, dst, "exchange")


def _rename_noreplace(src: Path, dst: Path) -> None:
    if _rename_with(src, dst, "noreplace"):
        return
    if os.path.lexists(dst):  # pragma: no cover - only without renameat2
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)  # pragma: no cover


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort; not possible everywhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# files


def atomic_write(path, data, *, overwrite: bool = True) -> Path:
    """Write bytes to ``path`` so that it either appears complete or not at all.

    The bytes go to a temporary file ``.NAME.<hex>.tmp`` in the same directory, are
    flushed to disk, and the temporary file is renamed over ``path`` (an atomic step on
    POSIX and Windows). On any error, including ``KeyboardInterrupt``, the temporary file
    is removed and ``path`` is left as it was; if the process is killed, the next write to
    ``path`` removes it (see the module's notes).

    A replaced regular file keeps its permission bits (and its owner and group where the
    process may set them), as ``cp`` does; a symbolic link at ``path`` is replaced by the
    file, as ``mv`` does, never written through.

    Parameters
    ----------
    path : str or Path
    data : bytes-like or iterable of bytes-like
        The file's content, in pieces if an iterable.
    overwrite : bool, default True
        When False, an existing ``path`` of any kind (a dangling symbolic link too) raises
        ``FileExistsError``, also if it appears while the file is being written.

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError
        ``overwrite=False`` and ``path`` exists.
    IsADirectoryError
        ``path`` is a directory.
    """
    path = Path(path)
    clean_leftovers(path)
    existing = _lstat(path)
    if existing is not None and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(f"{path} is a directory; refusing to replace it with a file")
    pieces = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    tmp, fd = _new_file(path)
    try:
        with os.fdopen(fd, "wb", closefd=False) as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            existing = _lstat(path)
            if existing is not None and stat.S_ISREG(existing.st_mode):
                _keep_mode_and_owner(fd, existing)
            os.fsync(handle.fileno())
        if fcntl is None:  # pragma: no cover - Windows cannot rename an open file
            os.close(fd)
            fd = None
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_noreplace(tmp, path)
        _fsync_directory(_parent(path))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return path


def _lstat(path: Path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _keep_mode_and_owner(fd: int, existing: os.stat_result) -> None:
    if not hasattr(os, "fchmod"):  # pragma: no cover - Windows: no permission bits to keep
        return
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
    if hasattr(os, "fchown") and (
        existing.st_uid != os.fstat(fd).st_uid or existing.st_gid != os.fstat(fd).st_gid
    ):
        with contextlib.suppress(OSError):  # only root (or the group's member) may
            os.fchown(fd, existing.st_uid, existing.st_gid)


def _link_noreplace(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path`` unless something is there, atomically."""
    try:
        _rename_noreplace(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; refusing to overwrite it") from None


# ---------------------------------------------------------------------------------------------
# directory stores


def write_store(
    path, write, *, overwrite: bool, replaceable=None, resumable: bool = False, resume=None
) -> None:
    """Write a directory store atomically: ``write(tmp)`` fills the empty temporary folder
    ``.NAME.<hex>.tmp`` beside ``path``, which is then renamed to ``path``.

    On any failure (or interruption) the temporary folder is removed and an existing
    ``path`` is left as it was; a killed writer's folder is removed by the next write to
    ``path``. With ``overwrite`` an existing ``path`` is replaced only after the new store is
    complete, by an atomic exchange of the two where the system has one (Linux, macOS);
    elsewhere the old store is moved aside to ``.NAME.<hex>.old`` and the new one renamed
    in, and a run killed between the two renames is undone by the next write (the old store
    is put back).

    Parameters
    ----------
    path : Path
    write : callable
        ``write(tmp)`` writes the store into the folder ``tmp`` (empty, or the incomplete
        store given as ``resume``).
    overwrite : bool
        Replace an existing ``path``. Without it, any existing path (a dangling symbolic
        link too) raises ``FileExistsError``.
    replaceable : callable, optional
        ``replaceable(path) -> bool``: whether an existing folder may be replaced (for
        example, only a store this package could have written). Checked before writing and
        again just before the swap; False raises ``FileExistsError``.
    resumable : bool, default False
        Keep the temporary folder when ``write`` fails or is interrupted after marking it
        incomplete (``write`` puts :data:`PARTIAL_RECORD` in it, and removes the record
        once the store is complete): a later call finishes it (``resume``).
    resume : Path, optional
        An incomplete store from :func:`partial_stores` to finish: locked, handed to
        ``write`` and renamed to ``path`` as a new one would be. (Implies ``resumable``.)
    """
    path = Path(path)
    parent = _parent(path)
    clean_leftovers(path)
    _check_replace(path, overwrite, replaceable)
    if resume is not None:
        tmp, fd = Path(resume), _abandoned(Path(resume))
        if fd is None or not _is_partial(tmp):
            if fd is not None and fd >= 0:
                os.close(fd)
            raise FileExistsError(
                f"{tmp} is not an incomplete store left by an interrupted write, or another "
                "run is writing it now"
            )
        fd = None if fd < 0 else fd
        resumable = True
    else:
        tmp, fd = _new_folder(path)
    old = old_fd = None
    try:
        write(tmp)
        if resumable and _is_partial(tmp):
            raise RuntimeError(f"the store {tmp} is still marked incomplete")  # pragma: no cover
        if os.path.lexists(path):
            _check_replace(path, overwrite, replaceable)
            if _exchange(tmp, path):
                # `tmp` now names the old store (or link): gone with it.
                _remove(tmp)
            else:
                old = _temporary_name(path, "old")
                old_fd = _lock_existing(path)
                os.rename(path, old)
                os.rename(tmp, path)
                _remove(old)
                old = None
        else:
            _rename_noreplace(tmp, path)
        _fsync_directory(parent)
    except BaseException:
        if old is not None and os.path.lexists(old):
            if os.path.lexists(path):
                _remove(old)  # the new store is in place: the old one goes as planned
            else:
                os.rename(old, path)  # between the two renames: put the old one back
        # The partial new store (or, after an exchange, the old one) goes, unless it is an
        # incomplete store marked so, kept to be finished.
        if not (resumable and _is_partial(tmp)):
            _remove(tmp)
        raise
    finally:
        for descriptor in (fd, old_fd):
            if descriptor is not None:
                os.close(descriptor)


def _lock_existing(path: Path) -> int | None:
    """Lock the store about to be moved aside, so that no other run takes it for the
    leftover of an interrupted swap while this one is between its two renames."""
    if fcntl is None:  # pragma: no cover
        return None
    fd = _open_nofollow(path)
    if fd is not None:
        _try_lock(fd)
    return fd


def _check_replace(path: Path, overwrite: bool, replaceable) -> None:
    info = _lstat(path)
    if info is None:
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    if stat.S_ISLNK(info.st_mode):
        return  # the link is replaced, never followed
    if not stat.S_ISDIR(info.st_mode):
        raise FileExistsError(f"{path} exists and is not a folder; refusing to replace it")
    if replaceable is not None and not replaceable(path):
        raise FileExistsError(
            f"{path} is a folder this tool did not write (not a store it recognises); "
            "refusing to replace it"
        )
