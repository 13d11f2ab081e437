"""The command line's inputs and outputs as the user names them: several paths, globs and
folders expanded into one list of images, ``-`` for standard input and output, and the output
name of each input in a batch."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path

#: ``-``: standard input (as an input) or standard output (as an output).
STDIO = "-"
#: The files a folder given as an input contributes (its zarr stores count as images too).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy", ".gif")
_GLOB_CHARS = frozenset("*?[")
# First bytes -> the suffix a reader needs to recognise what came on standard input.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\x89KVQ\r\n\x1a\n", ".kvq"),
    (b"\x93NUMPY", ".npy"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),
    (b"MM\x00+", ".tif"),
    (b"\xff\xd8\xff", ".jpg"),
)


class InputError(Exception):
    """An input list that names nothing to read (a usage error)."""


def _is_store(path: Path) -> bool:
    """A zarr store (array or OME-Zarr group): an image, not a folder of images."""
    if path.name.lower().endswith(".zarr"):
        return True
    return any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


def _folder_images(folder: Path) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if _is_store(entry):
                found.append(entry)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            found.append(entry)
    return found


def expand(names: list[str]) -> list[Path | str]:
    """The images named by ``names``, in order, each once: a file (or zarr store) as it is,
    a folder as the images in it (sorted, not recursive), a glob as its matches (sorted);
    ``-`` is standard input and must come alone. A missing file stays in the list (it fails
    when read, as one failing input); a glob or folder that names nothing is an error."""
    if STDIO in names:
        if len(names) > 1:
            raise InputError("- (standard input) must be the only input")
        return [STDIO]
    out: list[Path | str] = []
    for name in names:
        path = Path(name)
        if path.is_dir() and not _is_store(path):
            found = _folder_images(path)
            if not found:
                raise InputError(
                    f"the folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)} or zarr)"
                )
        elif not os.path.lexists(path) and _GLOB_CHARS & set(name):
            found = [Path(p) for p in sorted(glob.glob(name))]
            if not found:
                raise InputError(f"{name} matches no file")
        else:
            found = [path]
        out.extend(found)
    unique: dict[str, Path] = {}
    for path in out:
        unique.setdefault(os.path.normpath(os.path.abspath(path)), path)
    return list(unique.values())


def stem(path: Path | str) -> str:
    """An input's name without its suffix (``slide.ome.tif`` -> ``slide``)."""
    if path == STDIO:
        return "stdin"
    name = Path(path).name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_name(template: str, source: Path | str, k) -> str:
    """The output name ``template`` gives for ``source``."""
    name = "stdin" if source == STDIO else Path(source).name
    return template.format(stem=stem(source), name=name, k="" if k is None else k)


@contextlib.contextmanager
def local_file(path):
    """``path`` as a file a reader can open: standard input (``-``) is copied to a temporary
    file first, named with the suffix its first bytes call for, and removed afterwards."""
    if str(path) != STDIO:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="napari-kmeans-vq-") as folder:
        stream = sys.stdin.buffer
        head = stream.read(16)
        suffix = next((s for magic, s in _MAGIC if head.startswith(magic)), "")
        target = Path(folder) / f"stdin{suffix}"
        with open(target, "wb") as handle:
            handle.write(head)
            shutil.copyfileobj(stream, handle)
        yield target


def write_stdout(content: bytes) -> int:
    """Write a file's bytes to standard output; their number."""
    sys.stdout.buffer.write(content)
    sys.stdout.buffer.flush()
    return len(content)
