"""Inputs larger than memory: dask, zarr and multiscale arrays, opened lazily and blocked.

dask and zarr are imported only when a function here needs them (``pip install
napari-kmeans-vq[large]``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import stat
import struct
from collections.abc import Sequence

import numpy as np

from ..core._threads import available_cores
from ..core.validation import MAX_CHANNELS, check_int, is_chunked

# Pixels per dask block: big enough that per-block overhead is small, small enough that
# a block's keys and sort buffers (about 20 bytes a pixel) stay well under 100 MiB.
BLOCK_PIXELS = 1 << 22


def is_lazy_input(image) -> bool:
    """Whether ``image`` is processed block by block rather than in memory.

    True for dask and zarr arrays, TIFF and OME-Zarr levels opened by :func:`open_image`
    (:class:`TiffLevel`, :class:`LevelView`), paths (opened with :func:`open_image`)
    and multiscale images: a list or tuple (or napari's ``MultiScaleData``) of arrays,
    full resolution first. Never imports dask.
    """
    if is_chunked(image) or isinstance(image, TiffLevel | LevelView | str | os.PathLike):
        return True
    return _is_multiscale(image)


def _is_multiscale(image) -> bool:
    if isinstance(image, str | bytes | memoryview | np.ndarray) or not isinstance(image, Sequence):
        return False
    return len(image) > 0 and all(hasattr(level, "shape") for level in image)


#: Metadata files a zarr store is opened through, at its root and in each array.
_ZARR_METADATA = ("zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata")
#: The largest zarr metadata file (bytes) opened; the palette of K = 65,536 colours as
#: properties is about 10 MB.
MAX_METADATA_BYTES = 64 * 2**20
#: The most chunks an array opened here may have (each read costs zarr a few KB of work
#: and bookkeeping): a slide of 100,000 x 100,000 pixels in 64 x 64 tiles has 2.4 million.
MAX_CHUNKS = 2**22
#: The most chunks one read of :func:`read_whole` asks zarr for at once.
READ_CHUNKS = 1024
#: The most bytes one TIFF tile or strip may decode to (tifffile allocates it whole).
MAX_CHUNK_BYTES = 2**30
#: The most dask blocks an input is cut into (each is a task in every pass over the image).
MAX_BLOCKS = 2**20
_TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi")


def open_image(path):
    """Open a zarr array, an OME-Zarr image or a (pyramidal) TIFF without reading pixels.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.zarr`` directory (a plain array, or an OME-Zarr image whose ``multiscales``
        lists its levels) or a ``.tif``/``.tiff`` file, read through tifffile's zarr view
        (JPEG-tiled slides need ``imagecodecs``, part of ``napari-kmeans-vq[large]``).

    Returns
    -------
    zarr array, or list of zarr arrays (full resolution first) for a multiscale image; a
    TIFF's levels as :class:`TiffLevel` (or :class:`LevelView` of tifffile's zarr view for
    layouts that reads), and an OME-Zarr image's as :class:`LevelView` when its NGFF
    ``axes`` put the channel axis before the last (the first series of a bioformats2raw
    conversion is its image)

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        Anything else that stops the input from being read, with one line saying what:
        not a zarr store or TIFF, damaged or oversized metadata, a FIFO or device, a
        compression that cannot be decoded here or damaged data (checked on one chunk of
        the smallest level; damage elsewhere shows when that block is read). The readers
        of :mod:`napari_kmeans_vq.io` give it as their ``KVQError``.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot read {path}: no such file or directory") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise ValueError(f"cannot read {path}: not a regular file or directory")
    try:
        image = _open(path)
    except Exception as exc:  # zarr, tifffile, codecs and OS errors alike: one message
        message = " ".join(str(exc).split()) or type(exc).__name__
        if "imagecodecs" in message:
            message += " (pip install imagecodecs, or napari-kmeans-vq[large])"
        if len(message) > 300:
            message = message[:297] + "..."
        raise ValueError(f"cannot read {path} as a zarr array or TIFF: {message}") from None
    return image


#: The most images (IFDs) a TIFF may chain, SubIFDs included.
MAX_TIFF_PAGES = 2**20


def check_tiff_structure(handle, size: int) -> None:
    """Walk a TIFF's chain of images (IFDs, and the SubIFDs of pyramids) from an open file
    before any TIFF library does: every offset must lie in the file, no chain may loop back
    on itself (a loop makes tifffile iterate forever), and there may be at most
    :data:`MAX_TIFF_PAGES` steps in all. Reads only the IFDs' own bytes. Raises
    ``ValueError``.
    """
    handle.seek(0)
    head = handle.read(16)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        raise ValueError("not a TIFF file (no II or MM byte order mark)")
    order = "<" if head[:2] == b"II" else ">"
    (magic,) = struct.unpack_from(order + "H", head, 2)
    if magic == 42:
        count_f, entry_size, offset_f = "H", 12, "I"
        (first,) = struct.unpack_from(order + "I", head, 4)
    elif magic == 43 and len(head) >= 16:
        count_f, entry_size, offset_f = "Q", 20, "Q"
        (first,) = struct.unpack_from(order + "Q", head, 8)
    else:
        raise ValueError(f"not a TIFF file (version {magic})")
    count_size, offset_size = struct.calcsize(count_f), struct.calcsize(offset_f)
    # Each chain (the main one, and each list of SubIFDs) is walked on its own: a chain may
    # meet IFDs another one reached (pyramid writers link SubIFDs both ways), but must not
    # loop on itself.
    chains, walked, done = [first], 0, set()
    while chains:
        offset = chains.pop()
        if offset in done:
            continue
        done.add(offset)
        seen: set[int] = set()
        while offset:
            if offset in seen:
                raise ValueError(f"its chain of images loops back to offset {offset}")
            seen.add(offset)
            walked += 1
            if walked > MAX_TIFF_PAGES:
                raise ValueError(f"more than {MAX_TIFF_PAGES:,} images")
            if offset + count_size > size:
                raise ValueError(f"an image directory at offset {offset} is beyond the file")
            handle.seek(offset)
            (entries,) = struct.unpack(order + count_f, handle.read(count_size))
            table = offset + count_size
            if table + entries * entry_size + offset_size > size:
                raise ValueError(f"the image directory at offset {offset} runs past the file")
            block = handle.read(entries * entry_size + offset_size)
            for i in range(entries):
                tag, kind = struct.unpack_from(order + "HH", block, i * entry_size)
                if tag == 330:  # SubIFDs: the levels of a pyramid
                    chains.extend(_subifd_offsets(handle, order, block, i, entry_size, kind, size))
            (offset,) = struct.unpack_from(order + offset_f, block, entries * entry_size)


def _subifd_offsets(handle, order, block, i, entry_size, kind, size) -> list[int]:
    """The offsets a SubIFDs entry lists (stored in the entry, or where it points)."""
    classic = entry_size == 12
    number_f, value_at = ("I", 4) if classic else ("Q", 4)
    (number,) = struct.unpack_from(order + number_f, block, i * entry_size + value_at)
    width = {4: 4, 13: 4, 16: 8, 18: 8}.get(kind)
    if width is None or number > MAX_TIFF_PAGES:
        raise ValueError("a SubIFDs entry of an unknown type or length")
    inline = 4 if classic else 8
    where = i * entry_size + (8 if classic else 12)
    if number * width <= inline:
        data = block[where : where + number * width]
    else:
        (pointer,) = struct.unpack_from(order + ("I" if classic else "Q"), block, where)
        if pointer + number * width > size:
            raise ValueError("a SubIFDs list runs past the file")
        handle.seek(pointer)
        data = handle.read(number * width)
    return list(struct.unpack(order + ("I" if width == 4 else "Q") * number, data))


#: The most one stored byte can decode to, per TIFF compression (by its tag value): deflate
#: about 1,032, LZW 4,096 (a 12-bit code), PackBits 64, baseline JPEG about 512 (two bits
#: a block); others are bounded by the pixel limit only.
_TIFF_RATIOS = {1: 1, 5: 4096, 7: 1024, 8: 1100, 32946: 1100, 32773: 65}


def check_tiff(tif, size: int) -> None:
    """Check what a TIFF's first series declares against the file, from its tags alone.

    Every tile or strip of every level must lie within the file's ``size`` bytes (a
    crafted byte count would otherwise make a reader allocate it); one decoded tile or
    strip may take at most :data:`MAX_CHUNK_BYTES`; and for the usual compressions the
    stored bytes must be able to decode to what the tags declare (uncompressed data must
    all be there). Raises ``ValueError``.
    """
    import tifffile

    series = tif.series[0]
    end = np.uint64(size)
    for level in series.levels:
        for page in level.pages:
            if page is None:
                continue
            counts = np.asarray(page.databytecounts, dtype=np.uint64)
            offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
            if counts.shape != offsets.shape:
                raise ValueError("its tile or strip offsets and byte counts do not match")
            if counts.size and (counts.max() > end or (offsets > end - counts).any()):
                raise ValueError(
                    f"a tile or strip lies beyond the end of the file ({size:,} bytes)"
                )
            keyframe = getattr(page, "keyframe", page)
            if keyframe.compression not in tifffile.TIFF.DECOMPRESSORS:
                raise ValueError(
                    f"its compression {keyframe.compression!r} cannot be decoded here (some "
                    "need imagecodecs: pip install imagecodecs, or napari-kmeans-vq[large])"
                )
            if keyframe.dtype is None:
                raise ValueError("its sample format and bits per sample make no number type")
            itemsize = np.dtype(keyframe.dtype).itemsize
            chunk = math.prod(int(c) for c in keyframe.chunks) * itemsize
            if chunk > MAX_CHUNK_BYTES:
                raise ValueError(
                    f"one tile or strip would decode to {chunk:,} bytes, more than the "
                    f"{MAX_CHUNK_BYTES:,} accepted"
                )
            expected = math.prod(int(c) for c in keyframe.chunked)
            if counts.size != expected:
                raise ValueError(
                    f"it lists {counts.size:,} tiles or strips where its size needs {expected:,}"
                )
            ratio = _TIFF_RATIOS.get(int(keyframe.compression))
            stored = counts[counts > 0].astype(np.float64)
            if ratio == 1 and stored.size == counts.size:
                needed = math.prod(int(c) for c in keyframe.shape) * itemsize
                if int(counts.sum()) < needed:
                    raise ValueError(
                        f"its uncompressed data is {int(counts.sum()):,} bytes, the image "
                        f"needs {needed:,}"
                    )
            elif ratio and stored.size and (chunk > ratio * stored + 1024).any():
                raise ValueError(
                    f"a tile or strip of {int(stored.min()):,} bytes cannot decode to "
                    f"{chunk:,} bytes"
                )


def _check_metadata(directory: str) -> None:
    for name in _ZARR_METADATA:
        meta = os.path.join(directory, name)
        try:
            info = os.stat(meta)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{meta} is not a regular file")
        if info.st_size > MAX_METADATA_BYTES:
            raise ValueError(
                f"{meta} is {info.st_size:,} bytes, over the {MAX_METADATA_BYTES:,} accepted"
            )


class TiffLevel:
    """One level of a tiled (or stripped) TIFF as a lazy array: indexing it reads and decodes
    only the tiles the request touches, each once.

    What :func:`open_image` gives for scanner slides (tiled, pyramidal TIFF, OME-TIFF, SVS
    with JPEG, deflate, LZW... tiles). Its ``chunks`` are the tiles, so the blocks
    :func:`as_dask` cuts are whole tiles; each block's tiles are read with ``os.pread`` and
    decoded by tifffile's own decoder (imagecodecs releases the GIL), so dask's threads
    decode in parallel. It pickles by path (the file is reopened, and must be unchanged),
    for dask's process and distributed schedulers.

    Attributes
    ----------
    shape, dtype, chunks, ndim
        As for an array: ``(rows, columns[, samples])``; ``chunks`` the tile shape.
    path : str
    level : int
        The pyramid level in the file's first series (0 = full resolution).
    tiles_read : int
        Tiles decoded so far through this object (in this process): a read-once check.
    """

    def __init__(self, path: str, level: int, _page=None, _stamp=None):
        self.path = os.fspath(path)
        self.level = int(level)
        self.tiles_read = 0
        self._fd = None
        self._pid = None
        stamp = _file_stamp(self.path)
        if _stamp is not None and stamp != _stamp:
            raise ValueError(f"{self.path} changed since it was opened")
        self._stamp = stamp
        if _page is not None:
            self._take(_page)
            return
        import tifffile

        # The page's decoder is made while the file is open (it looks at the first tile).
        with tifffile.TiffFile(self.path) as tif:
            page = tiff_level_page(tif, self.level)
            if page is None:
                raise ValueError(f"level {level} is not a plain tiled or stripped image")
            self._take(page)

    def _take(self, page) -> None:
        self.shape = tuple(int(v) for v in page.shape)
        self.dtype = np.dtype(page.dtype).newbyteorder("=")
        self.ndim = len(self.shape)
        self._segment = (int(page.chunks[0]), int(page.chunks[1]))
        self.chunks = (*self._segment, *self.shape[2:])
        self._grid = (int(page.chunked[0]), int(page.chunked[1]))
        self._offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        self._counts = np.asarray(page.databytecounts, dtype=np.int64)
        self._decode = page.decode
        self._args = {"_fullsize": True}
        if page.jpegtables is not None:
            self._args["jpegtables"] = page.jpegtables
        if page.jpegheader is not None:
            self._args["jpegheader"] = page.jpegheader

    def __repr__(self) -> str:
        return (
            f"TiffLevel({self.path!r}, level={self.level}, shape={self.shape}, "
            f"dtype={self.dtype}, tiles={self._segment})"
        )

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {"path": self.path, "level": self.level, "stamp": self._stamp}

    def __setstate__(self, state):
        self.__init__(state["path"], state["level"], _stamp=state["stamp"])

    def __dask_tokenize__(self):
        return ("TiffLevel", self.path, self.level, self._stamp)

    @property
    def size(self) -> int:
        # napari's layer data protocol asks for it, as numpy's.
        return math.prod(self.shape)

    def __array__(self, dtype=None, copy=None):
        out = self[tuple(slice(None) for _ in self.shape)]
        return out if dtype is None else out.astype(dtype, copy=False)

    def _read(self, index: int) -> bytes:
        # A descriptor per process: os.pread has no shared file position, so threads share it.
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        count = int(self._counts[index])
        data = os.pread(self._fd, count, int(self._offsets[index]))
        if len(data) != count:
            raise ValueError(f"{self.path}: tile {index} is cut short (the file is truncated)")
        return data

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key, self.shape)
        rows, cols = (_span(k, n) for k, n in zip(key[:2], self.shape[:2], strict=True))
        (r0, r1), (c0, c1) = rows, cols
        th, tw = self._segment
        # Every pixel is written below (the tiles cover the request): no need to clear it.
        out = np.empty((r1 - r0, c1 - c0, *self.shape[2:]), dtype=self.dtype)
        for ty in range(r0 // th, -(-r1 // th)):
            for tx in range(c0 // tw, -(-c1 // tw)):
                index = ty * self._grid[1] + tx
                y0, x0 = ty * th, tx * tw
                ys, ye = max(r0, y0), min(r1, y0 + th)
                xs, xe = max(c0, x0), min(c1, x0 + tw)
                if self._counts[index] == 0 or self._offsets[index] == 0:
                    out[ys - r0 : ye - r0, xs - c0 : xe - c0] = 0  # never written: fill value
                    continue
                data = self._decode(self._read(index), index, **self._args)[0]
                self.tiles_read += 1
                tile = data.reshape(th, tw, *self.shape[2:])
                out[ys - r0 : ye - r0, xs - c0 : xe - c0] = tile[
                    ys - y0 : ye - y0, xs - x0 : xe - x0
                ]
        # Integers and steps along rows and columns, and anything along samples, by numpy.
        rest = tuple(
            (k - s) if isinstance(k, int | np.integer) else slice(None, None, k.step)
            for k, (s, _) in zip(key[:2], (rows, cols), strict=True)
        )
        return out[rest + tuple(key[2:])]


class LevelView:
    """A level of a stored image (a zarr array) as the package reads it: its axes in the
    view's order and those of length 1 left out, and an identity for dask's names.

    :func:`open_image` gives an OME-Zarr image's levels so, their colour axis last: NGFF
    puts the channel axis before the spatial ones (``(t, c, z, y, x)``, ``(c, y, x)``), and
    any other axis of length 1 at full resolution but rows and columns is left out (a slide
    converted by bioformats2raw, ``(1, 3, 1, y, x)``, reads as ``(y, x, 3)``). And it gives
    the levels of a TIFF read through tifffile's zarr view (stacks, planes stored apart,
    NDPI) so, as stored but named by the file (path, size, modification time) and level,
    as a :class:`TiffLevel` is: that view's zarr store has no identity of its own that
    holds in another process, which a resumed write checks. Indexing with slices reads
    only the chunks touched.

    Attributes
    ----------
    array : zarr array
        The level as stored.
    axes : tuple of int
        The stored axes in the view's order; the others have length 1.
    shape, dtype, chunks, ndim
        As for an array, in the view's order.
    """

    def __init__(self, array, axes=None, token=None):
        self.array = array
        self.axes = tuple(range(array.ndim)) if axes is None else tuple(int(a) for a in axes)
        dropped = [a for a in range(array.ndim) if a not in self.axes]
        if len(set(self.axes)) != len(self.axes) or any(array.shape[a] != 1 for a in dropped):
            raise ValueError(f"axes {self.axes} do not view an array of shape {array.shape}")
        self.shape = tuple(int(array.shape[a]) for a in self.axes)
        self.chunks = tuple(int(array.chunks[a]) for a in self.axes)
        self.dtype = array.dtype
        self.ndim = len(self.axes)
        self._token = token

    def __repr__(self) -> str:
        return f"LevelView({self.array!r}, axes={self.axes})"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __dask_tokenize__(self):
        from dask.base import tokenize

        if self._token is not None:
            return ("LevelView", self._token, self.axes)
        return ("LevelView", tokenize(self.array), self.axes)

    def __array__(self, dtype=None, copy=None):
        out = self[tuple(slice(None) for _ in self.shape)]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key, self.shape)
        if not all(isinstance(k, slice) for k in key):
            raise IndexError(f"a level view is indexed with slices, not {key!r}")
        stored = [0] * self.array.ndim  # the dropped axes have one entry
        for axis, k in zip(self.axes, key, strict=True):
            stored[axis] = k
        out = np.asarray(self.array[tuple(stored)])
        # The axes left by the read, in stored order, put in the view's order.
        left = sorted(self.axes)
        return np.transpose(out, [left.index(a) for a in self.axes])


def _ngff_channels_last(image: list, multiscale: dict) -> list:
    """The levels of an NGFF image, through :class:`LevelView` when its ``axes`` put
    a channel axis before the last or have other axes of length 1; else as they are."""
    axes = multiscale.get("axes")
    if not isinstance(axes, list) or len(axes) != image[0].ndim:
        return image
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    kinds = [a.get("type") if isinstance(a, dict) else None for a in axes]
    channel = [i for i, (n, t) in enumerate(zip(names, kinds, strict=True)) if t == "channel"]
    channel = channel or [i for i, n in enumerate(names) if n == "c"]
    if len(channel) != 1:
        return image
    c, first = channel[0], image[0]
    # Axes of length 1 at full resolution (other than rows and columns) are dropped from
    # every level alike.
    rows_cols = [a for a in range(first.ndim) if a != c][-2:]
    kept = [a for a in range(first.ndim) if a != c and (first.shape[a] > 1 or a in rows_cols)]
    axes = (*kept, c)
    if axes == tuple(range(first.ndim)):
        return image
    return [LevelView(level, axes) for level in image]


def _full_key(key, shape) -> tuple:
    """An index as one entry per axis: ``...`` expanded, missing axes taken whole."""
    ndim = len(shape)
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = key.index(Ellipsis)
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1 :]
    key = key + (slice(None),) * (ndim - len(key))
    if len(key) != ndim:
        raise IndexError(f"too many indices for an array of shape {tuple(shape)}")
    return key


def _span(key, size: int) -> tuple[int, int]:
    """The rows (or columns) an index along one axis touches, as (start, stop)."""
    if isinstance(key, int | np.integer):
        i = int(key) + (size if key < 0 else 0)
        if not 0 <= i < size:
            raise IndexError(f"index {int(key)} is out of bounds for an axis of size {size}")
        return i, i + 1
    if isinstance(key, slice):
        start, stop, step = key.indices(size)
        if step < 1:
            raise IndexError("a TIFF level is indexed with positive steps only")
        return start, max(start, stop)
    raise IndexError(f"a TIFF level is indexed with integers and slices, not {key!r}")


def _file_stamp(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def tiff_level_page(tif, level: int):
    """The page holding ``level`` of a TIFF's first series, when :class:`TiffLevel` can read
    it (a 2D image, with samples interleaved, in tiles or strips); else None."""
    series = tif.series[0]
    if not 0 <= level < len(series.levels):
        return None
    pages = series.levels[level].pages
    page = pages[0] if len(pages) == 1 else None
    if page is None or not hasattr(page, "chunked") or getattr(page, "is_ndpi", False):
        return None
    shape = tuple(page.shape)
    if tuple(series.levels[level].shape) != shape or len(shape) not in (2, 3):
        return None
    contiguous = len(shape) == 2 or (page.planarconfig == 1 and page.chunks[2:] == shape[2:])
    segments = math.prod(int(c) for c in page.chunked)
    if not contiguous or segments != len(page.dataoffsets) or len(page.chunks) != len(shape):
        return None
    return page


def _open_tiff(path: str):
    """A TIFF's levels as :class:`TiffLevel` (a list for a pyramid), or tifffile's zarr
    view for layouts it does not read (stacks, planes stored apart, NDPI)."""
    import tifffile

    with open(path, "rb") as handle:
        check_tiff_structure(handle, os.fstat(handle.fileno()).st_size)
    with tifffile.TiffFile(path) as tif:
        check_tiff(tif, os.path.getsize(path))
        pages = [tiff_level_page(tif, i) for i in range(len(tif.series[0].levels))]
        if all(page is not None for page in pages):
            levels = [TiffLevel(path, i, _page=page) for i, page in enumerate(pages)]
            return levels if len(levels) > 1 else levels[0]
        # Decoding in tifffile's threads: on the zarr event loop it would be one thread.
        return tif.aszarr(maxworkers=available_cores())


def _open(path: str):
    import zarr

    tiff = path.lower().endswith(_TIFF_SUFFIXES)
    if tiff:
        opened = _open_tiff(path)
        if isinstance(opened, TiffLevel | list):
            _check_levels(opened)
            return opened
        node = zarr.open(opened, mode="r")
    else:
        _check_metadata(path)
        node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Array):
        image = node
    else:
        multiscales = _multiscales(node)
        if not multiscales and not tiff and "0" in node and isinstance(node["0"], zarr.Group):
            # bioformats2raw's layout: the first series is the group "0".
            path = os.path.join(path, "0")
            _check_metadata(path)
            node = node["0"]
            multiscales = _multiscales(node)
        if multiscales:
            paths = [d["path"] for d in multiscales[0]["datasets"]]
            if not tiff:
                for level in paths:
                    _check_metadata(os.path.join(path, str(level)))
            image = [node[level] for level in paths]
            if not all(isinstance(level, zarr.Array) for level in image):
                raise ValueError("a multiscales dataset is not an array")
            image = _ngff_channels_last(image, multiscales[0])
        else:
            arrays = sorted(node.array_keys())
            if not arrays:
                raise ValueError("a zarr group with no arrays and no multiscales")
            levels = sorted((node[k] for k in arrays), key=lambda a: -math.prod(a.shape))
            image = levels if len(levels) > 1 else levels[0]
    if tiff:  # named by the file and level (see LevelView)
        stamp = _file_stamp(path)
        views = [
            lv if isinstance(lv, LevelView) else LevelView(lv, token=("tiff", path, stamp, i))
            for i, lv in enumerate(image if isinstance(image, list) else [image])
        ]
        image = views if isinstance(image, list) else views[0]
    _check_levels(image)
    return image


def _multiscales(group) -> list | None:
    """A zarr group's NGFF ``multiscales`` (0.4 at the top of its attributes, 0.5 under
    ``"ome"``), or None."""
    attrs = group.attrs
    return attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")


def _check_levels(image) -> None:
    """Refuse arrays of too many chunks; decode one chunk of the smallest level."""
    for level in image if isinstance(image, list) else [image]:
        chunks = n_chunks(level)
        if chunks > MAX_CHUNKS:
            raise ValueError(
                f"an array of shape {tuple(level.shape)} in chunks of {tuple(level.chunks)} "
                f"is {chunks:,} chunks, more than the {MAX_CHUNKS:,} accepted: store it with "
                "larger chunks"
            )
    # Decode one chunk (tile) of the smallest level now: a codec that is missing or data
    # that is damaged shows here, in one line, rather than deep inside a fit.
    smallest = image[-1] if isinstance(image, list) else image
    if all(smallest.shape):
        smallest[tuple(slice(0, 1) for _ in smallest.shape)]


def n_chunks(array) -> int:
    """How many chunks an array with a ``chunks`` tuple (zarr) is stored in."""
    return math.prod(
        -(-int(s) // max(int(c), 1)) for s, c in zip(array.shape, array.chunks, strict=True)
    )


def read_whole(array) -> np.ndarray:
    """A zarr array (or tifffile zarr view) read into one numpy array, a few chunks at a
    time: zarr reads every chunk of one request at once, with bookkeeping for each, so a
    request for millions of small chunks would cost far more than the pixels."""
    chunks = tuple(max(int(c), 1) for c in array.chunks)
    shape = tuple(int(s) for s in array.shape)
    # A read block: whole chunks, grown along the last axes first, at most READ_CHUNKS.
    step = list(chunks)
    budget = READ_CHUNKS
    for axis in reversed(range(len(shape))):
        span = -(-shape[axis] // chunks[axis])
        take = max(1, min(span, budget))
        step[axis] = chunks[axis] * take
        budget = max(1, budget // take)
    out = np.empty(shape, dtype=array.dtype)
    grid = [range(0, s, t) for s, t in zip(shape, step, strict=True)]
    for corner in itertools.product(*grid):
        where = tuple(slice(c, min(c + t, s)) for c, t, s in zip(corner, step, shape, strict=True))
        out[where] = array[where]
    return out


def _spatial_chunks(shape, native, block_pixels):
    """Chunks for the spatial axes: multiples of the native ones, about block_pixels each."""
    chunks = [max(1, min(c, s)) for c, s in zip(native, shape, strict=True)]
    # Grow the last two axes (rows and columns) alternately, keeping native multiples.
    axes = list(range(len(shape)))[-2:]
    grown = True
    while math.prod(chunks) * 2 <= block_pixels and grown:
        grown = False
        for ax in reversed(axes):
            if chunks[ax] < shape[ax] and math.prod(chunks) * 2 <= block_pixels:
                chunks[ax] = min(chunks[ax] * 2, shape[ax])
                grown = True
    return tuple(chunks)


def as_dask(image, *, channel_axis: int | None = -1, block_pixels: int = BLOCK_PIXELS):
    """A dask array with the colour axis last in one chunk, and about block_pixels a block.

    numpy (including memory-mapped) arrays, zarr arrays, tifffile zarr views and dask arrays
    are accepted; nothing is read. Blocks of a zarr array are whole multiples of its chunks
    (a chunk larger than block_pixels is one block: splitting it would decompress it once
    per piece). A dask array keeps its chunks unless its colour axis is split. Working
    memory is about 20 bytes per pixel of a block, per thread.
    """
    import dask.array as da

    block_pixels = check_int(block_pixels, "block_pixels")
    if block_pixels < 1:
        raise ValueError(f"block_pixels must be a positive integer, got {block_pixels}.")
    if isinstance(image, str | os.PathLike):
        image = open_image(image)
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise TypeError(
            "image must be an array (numpy, dask, zarr) or a list of arrays (multiscale), "
            f"got {type(image).__name__}."
        )
    ndim = len(image.shape)
    if channel_axis is not None:
        channel_axis = check_int(channel_axis, "channel_axis")
        if ndim < 2:
            raise ValueError(
                f"image has no colour axis: shape {tuple(image.shape)}. Pass an array of shape "
                "(..., C) with the colour axis last, or channel_axis=None for a scalar image."
            )
        if not -ndim <= channel_axis < ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image with {ndim} axes."
            )
        channel_axis %= ndim
    if isinstance(image, da.Array):
        x = image
    else:
        native = getattr(image, "chunks", None)
        if not (isinstance(native, tuple) and all(isinstance(c, int) for c in native)):
            # In memory (or memory-mapped): square blocks of about block_pixels.
            spatial = [i for i in range(ndim) if i != channel_axis]
            side = max(1, math.isqrt(block_pixels))
            native = tuple(side if i in spatial[-2:] else 1 for i in range(ndim))
        shape = tuple(image.shape)
        if channel_axis is not None:
            spatial = [i for i in range(ndim) if i != channel_axis]
            sp = _spatial_chunks(
                [shape[i] for i in spatial], [native[i] for i in spatial], block_pixels
            )
            chunks = [0] * ndim
            for i, c in zip(spatial, sp, strict=True):
                chunks[i] = c
            chunks[channel_axis] = shape[channel_axis]
        else:
            chunks = _spatial_chunks(shape, native, block_pixels)
        blocks = math.prod(-(-s // max(c, 1)) for s, c in zip(shape, chunks, strict=True))
        if blocks > MAX_BLOCKS:
            raise ValueError(
                f"image of shape {shape} would be cut into {blocks:,} blocks of its chunks "
                f"{tuple(chunks)}, more than the {MAX_BLOCKS:,} accepted: store it with "
                "larger chunks"
            )
        x = da.from_array(image, chunks=tuple(chunks), asarray=True)
    if x.dtype == bool:
        x = x.astype(np.uint8)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(
            "image must have an integer or floating-point dtype (uint8, uint16, float32, "
            f"float64, ...), got dtype {x.dtype}."
        )
    if channel_axis is None:
        x = x[..., np.newaxis]
    else:
        x = da.moveaxis(x, channel_axis, -1)
        if x.shape[-1] > MAX_CHANNELS:
            raise ValueError(
                f"image has no colour axis: its colour axis (axis {channel_axis}) has "
                f"{x.shape[-1]} entries, more than the {MAX_CHANNELS} accepted. For a "
                "grayscale or scalar image pass channel_axis=None; for RGB use shape (..., 3)."
            )
        if len(x.chunks[-1]) > 1:
            x = x.rechunk({x.ndim - 1: -1})
    if x.size == 0:
        raise ValueError(f"image is empty (shape {x.shape}); it needs at least one pixel.")
    return x


def levels(image, channel_axis, block_pixels):
    """The image as a list of dask levels (one for a single image) and whether multiscale."""
    if isinstance(image, str | os.PathLike):
        image = open_image(image)
    if _is_multiscale(image):
        levels = [
            as_dask(lv, channel_axis=channel_axis, block_pixels=block_pixels) for lv in image
        ]
        first = levels[0]
        for i, lv in enumerate(levels[1:], 1):
            if lv.dtype != first.dtype or lv.shape[-1] != first.shape[-1]:
                raise ValueError(
                    f"multiscale level {i} is {lv.shape[-1]} channels of {lv.dtype}, but level "
                    f"0 is {first.shape[-1]} of {first.dtype}; all levels must match."
                )
        return levels, True
    if isinstance(image, list | tuple):
        raise TypeError(
            "image must be an array, or a list of arrays for a multiscale image (full "
            f"resolution first); got a {type(image).__name__} of non-arrays."
        )
    return [as_dask(image, channel_axis=channel_axis, block_pixels=block_pixels)], False
