"""The distinct colours of an image and how many pixels have each.

K-means over every pixel and weighted k-means over the distinct colours (weight = pixel
count) have the same objective, so this table is all the fit needs (Celebi 2009). For
integer images a colour packs into one unsigned integer key; keys are counted chunk by
chunk, so memory stays proportional to the number of distinct colours, and pixels are
mapped back to their colour's entry by a lookup table instead of a distance computation.
8-bit RGB goes through the C extension ``_ccolors`` when it was built: keys packed and
counted there (large images with a bit per possible colour instead of a sort), and labels
and reconstruction written in one pass (see _ccolors.c).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass

import numpy as np

from . import _scratch
from ._threads import thread_limit

try:
    from . import _ccolors
except ImportError:  # installed without a C compiler
    _ccolors = None

CHUNK_PIXELS = 1 << 20
# Above this many pixels, packable colours are counted in a dense table (8-bit RGB: a
# bit per colour in C, 2-2.5x faster than sorting; below it, numpy's sort is as fast).
_DENSE_COUNT_MIN_PIXELS = 4 * CHUNK_PIXELS
# Per-chunk counts are merged every this many chunks, to bound memory.
_MERGE_EVERY = 8
# Key spaces up to this many bits get a dense lookup table (2**24 entries: 16 MiB as uint8).
DENSE_KEY_BITS = 24
_KEY_TYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_RGB_WORDS = 1 << 18  # 2**24 bits in uint64 words (WORDS in _ccolors.c)
# encode_decode computes the nearest of up to this many palette entries per pixel rather
# than looking labels up in a 16 MiB table when the colours are at least this share of
# the pixels (spread over the table, so lookups miss the caches). Measured at K = 4: fits
# 10-15% faster on fruits (76% distinct), 1-3% slower at 30-45%; slower at K = 8.
_NEAREST_MAX_ENTRIES = 4
_NEAREST_MIN_DISTINCT = 0.5


class KeyCodec:
    """Packs a colour (C integers) into one unsigned integer by padding its bytes."""

    def __init__(self, dtype: np.dtype, channels: int):
        self.dtype = np.dtype(dtype)
        self.channels = channels
        nbytes = self.dtype.itemsize * channels
        width = next((w for w in _KEY_TYPES if w >= nbytes), None)
        self.usable = np.issubdtype(self.dtype, np.integer) and width is not None
        self.nbytes = nbytes
        self.width = width
        self.key_dtype = np.dtype(_KEY_TYPES[width]) if self.usable else None
        # Padding bytes are zero, so on a little-endian machine keys stay below 2**(8*nbytes).
        self.dense = self.usable and 8 * nbytes <= DENSE_KEY_BITS and sys.byteorder == "little"
        # 8-bit RGB in the C extension, keyed as above (r | g << 8 | b << 16).
        self.rgb8 = (
            _ccolors is not None and self.dense and self.dtype == np.uint8 and channels == 3
        )

    def keys(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Keys of ``pixels`` (n, C) as a 1D array (a new array, never a view of the input;
        for 8-bit RGB, ``out`` if given: uint32, n)."""
        n = pixels.shape[0]
        if self.rgb8:
            keys = np.empty(n, dtype=np.uint32) if out is None else out
            _ccolors.pack(np.ascontiguousarray(pixels), keys, n)
            return keys
        if self.dense and self.nbytes == 3 and self.width == 4:
            # 8-bit RGB, about 8x faster than padding: read each pixel's 3 bytes plus the
            # next as one little-endian uint32 (a strided view over the bytes, one zero byte
            # appended) and mask the fourth byte off.
            buf = np.empty(3 * n + 1, dtype=np.uint8)
            buf[: 3 * n] = np.ascontiguousarray(pixels).reshape(-1).view(np.uint8)
            buf[-1] = 0
            words = np.ndarray((n,), dtype="<u4", buffer=buf, strides=(3,))
            return words & np.uint32(0xFFFFFF)
        if self.width == self.nbytes:
            return np.ascontiguousarray(pixels).view(self.key_dtype).reshape(n).copy()
        buf = np.zeros((n, self.width), dtype=np.uint8)
        buf[:, : self.nbytes] = np.ascontiguousarray(pixels).view(np.uint8).reshape(n, -1)
        return buf.view(self.key_dtype).reshape(n)

    def colors(self, keys: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`keys`."""
        raw = np.ascontiguousarray(keys, dtype=self.key_dtype).view(np.uint8)
        raw = raw.reshape(len(keys), self.width)[:, : self.nbytes]
        return np.ascontiguousarray(raw).view(self.dtype).reshape(len(keys), self.channels)


@dataclass
class ColorHistogram:
    """Distinct colours and their pixel counts.

    Attributes
    ----------
    colors : ndarray, shape (M, C)
        The distinct colours, in the image's dtype.
    counts : ndarray, shape (M,)
        Pixels of each colour (int64).
    keys : ndarray or None
        Sorted packed keys of ``colors`` (integer images), used for lookups.
    inverse : ndarray or None
        For images whose colours cannot be packed (floats, wide integers): the entry of each
        pixel of the image the histogram was built from.
    """

    colors: np.ndarray
    counts: np.ndarray
    keys: np.ndarray | None
    inverse: np.ndarray | None
    _codec: KeyCodec

    @property
    def n_pixels(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_pixels(
        cls, pixels: np.ndarray, chunk: int = CHUNK_PIXELS, progress=None
    ) -> ColorHistogram:
        """Count the distinct rows of ``pixels``, shape (N, C).

        ``progress``, if given, is called as ``progress("histogram", fraction_done)``.
        """
        codec = KeyCodec(pixels.dtype, pixels.shape[1])
        if not codec.usable:
            colors, inverse, counts = np.unique(
                pixels, axis=0, return_inverse=True, return_counts=True
            )
            return cls(colors, counts.astype(np.int64), None, inverse.reshape(-1), codec)
        n = pixels.shape[0]
        if codec.rgb8 and n > _DENSE_COUNT_MIN_PIXELS:
            return cls._from_rgb8(pixels, chunk, progress, codec)
        if codec.rgb8 and n <= chunk:
            # One chunk of 8-bit RGB: sort the keys, then one C pass gives the table. The
            # keys are a temporary: scratch memory (see _scratch), not fresh pages.
            keys = _scratch.take(n, np.uint32)
            try:
                codec.keys(pixels, out=keys)
                keys.sort()
                m = _ccolors.runs(keys, n, None, None, None, 0)
                distinct = np.empty(m, dtype=np.uint32)
                counts = np.empty(m, dtype=np.int64)
                colors = np.empty((m, 3), dtype=np.uint8)
                _ccolors.runs(keys, n, distinct, counts, colors, m)
            finally:
                _scratch.give(keys)
            if progress is not None:
                progress("histogram", 1.0)
            return cls(colors, counts, distinct, None, codec)
        # Large images of packable colours count into one dense table (64 MiB for RGB):
        # merging per-chunk tables would need several times that at the peak.
        dense = (
            np.zeros(1 << (8 * codec.nbytes), dtype=np.uint32 if n < 2**32 else np.uint64)
            if codec.dense and n > _DENSE_COUNT_MIN_PIXELS
            else None
        )
        parts = []
        for start in range(0, n, chunk):
            keys, counts = distinct_keys(codec.keys(pixels[start : start + chunk]))
            if dense is not None:
                dense[keys] += counts.astype(dense.dtype)  # keys are unique: no lost adds
            else:
                parts.append((keys, counts))
                if len(parts) >= _MERGE_EVERY:
                    parts = [_merge_counts(parts)]
            if progress is not None:
                progress("histogram", min(1.0, (start + chunk) / n))
        if dense is not None:
            keys = np.flatnonzero(dense).astype(codec.key_dtype)
            counts = dense[keys].astype(np.int64)
        else:
            keys, counts = _merge_counts(parts)
        return cls(codec.colors(keys), counts, keys, None, codec)

    @classmethod
    def _from_rgb8(cls, pixels, chunk, progress, codec) -> ColorHistogram:
        """from_pixels for 8-bit RGB in C: mark every pixel's colour, then count."""
        n = pixels.shape[0]
        bits = np.zeros(_RGB_WORDS, dtype=np.uint64)
        for start, part in _chunks(pixels, chunk):
            _ccolors.mark(part, bits, len(part))
            if progress is not None:
                progress("histogram", 0.5 * min(1.0, (start + chunk) / n))
        before = np.empty(_RGB_WORDS, dtype=np.uint32)
        m = _ccolors.index(bits, before)
        keys = np.empty(m, dtype=np.uint32)
        _ccolors.keys(bits, keys, m)
        counts = np.zeros(m, dtype=np.int64)
        for start, part in _chunks(pixels, chunk):
            _ccolors.tally(part, bits, before, counts, len(part), m)
            if progress is not None:
                progress("histogram", 0.5 + 0.5 * min(1.0, (start + chunk) / n))
        return cls(codec.colors(keys), counts, keys, None, codec)

    @classmethod
    def merge(cls, hists: list[ColorHistogram]) -> ColorHistogram:
        """One histogram for several images (the colours of all, counts added)."""
        if len(hists) == 1:
            return hists[0]
        codec = hists[0]._codec
        if codec.usable:
            keys, counts = _merge_counts([(h.keys, h.counts) for h in hists])
            return cls(codec.colors(keys), counts, keys, None, codec)
        colors, inverse = np.unique(
            np.concatenate([h.colors for h in hists]), axis=0, return_inverse=True
        )
        counts = np.bincount(
            inverse.reshape(-1), weights=np.concatenate([h.counts for h in hists])
        ).astype(np.int64)
        return cls(colors, counts, None, None, codec)

    def lookup(
        self, pixels: np.ndarray, values: np.ndarray, chunk: int = CHUNK_PIXELS, progress=None
    ):
        """``values[i]`` for the entry i of each pixel's colour; pixels must be in the table.

        Returns an array of shape (N,) and ``values.dtype``. ``progress``, if given, is
        called as ``progress("encode", fraction_done)``.
        """
        values = np.asarray(values)
        if self.keys is None:
            if self.inverse is None or self.inverse.shape[0] != pixels.shape[0]:
                raise RuntimeError("this histogram cannot look up pixels it was not built from")
            return values[self.inverse]
        out = np.empty(pixels.shape[0], dtype=values.dtype)
        if self._codec.dense:
            # Only the entries of the table's colours are ever read: no need to zero it.
            table = np.empty(1 << (8 * self._codec.nbytes), dtype=values.dtype)
            table[self.keys] = values
        for start in range(0, pixels.shape[0], chunk):
            keys = self._codec.keys(pixels[start : start + chunk])
            if self._codec.dense:
                np.take(table, keys, out=out[start : start + chunk])
            else:
                out[start : start + chunk] = values[np.searchsorted(self.keys, keys)]
            if progress is not None:
                progress("encode", min(1.0, (start + chunk) / pixels.shape[0]))
        return out


def encodes_per_pixel(hist, n_pixels: int, n_entries: int) -> bool:
    """Whether :func:`encode_decode` with ``nearest=True`` computes each of ``n_pixels``
    pixels' nearest codeword among ``n_entries`` in C instead of looking its colour up
    (8-bit RGB, few codewords, many distinct colours); it then reads no ``values``."""
    return (
        hist._codec.rgb8
        and n_entries <= _NEAREST_MAX_ENTRIES
        and len(hist.keys) >= _NEAREST_MIN_DISTINCT * n_pixels
    )


def encode_decode(
    hist,
    pixels,
    values,
    palette,
    chunk=CHUNK_PIXELS,
    progress=None,
    nearest=False,
    stats=None,
):
    """Each pixel's value (its colour's entry of ``values``) and codeword (``palette`` at
    that value): ``hist.lookup`` and ``palette[labels]`` in one pass.

    8-bit RGB with labels of uint8 or uint16 goes through C (on two threads, see
    _threads); anything else through numpy. ``nearest``: the caller vouches that each
    value is the index of the palette entry nearest its colour (squared RGB distance,
    ties to the lower index); with few entries C then computes it per pixel instead of
    looking it up in a 16 MiB table, whose cache misses cost more (see
    :func:`encodes_per_pixel`). ``pixels`` must be those the histogram was built from, or
    some of them. ``stats``: an int64 array of ``len(palette) + 1`` (integer images), to
    which each codeword's pixel count and, last, the sum over pixels of the squared error
    (colour minus codeword, summed over channels) are added. Returns (labels (N,),
    codewords (N, C)).
    """
    values = np.asarray(values)
    fast = (
        hist._codec.rgb8
        and values.dtype in (np.uint8, np.uint16)
        and palette.dtype == np.uint8
        and palette.shape[1] == 3
    )
    if not fast:
        labels = hist.lookup(pixels, values, chunk=chunk, progress=progress)
        codewords = take_rows(palette, labels)
        if stats is not None:
            stats[:-1] += np.bincount(labels, minlength=len(palette))
            for c in range(pixels.shape[1]):
                diff = pixels[:, c].astype(np.int64) - codewords[:, c]
                stats[-1] += int(diff @ diff)
        return labels, codewords
    n = pixels.shape[0]
    palette = np.ascontiguousarray(palette)
    labels = np.empty(n, dtype=values.dtype)
    out = np.empty((n, 3), dtype=np.uint8)
    per_pixel = nearest and encodes_per_pixel(hist, n, len(palette))
    if not per_pixel and len(values) != len(hist.keys):
        raise ValueError(f"values: need one per colour ({len(hist.keys)}), got {len(values)}")
    with contextlib.nullcontext(None) if per_pixel else _lookup_table(values.dtype) as table:
        if table is not None:
            # Only the entries of the histogram's colours are read: no need to clear it.
            table[hist.keys] = values
        for start, part in _chunks(pixels, chunk):
            end = start + len(part)
            _ccolors.encode_decode(
                part,
                table,
                palette,
                labels[start:end],
                out[start:end],
                len(part),
                len(palette),
                values.itemsize,
                thread_limit(),
                stats,
            )
            if progress is not None:
                progress("encode", end / n)
    return labels, out


_tables: dict = {}
_tables_lock = threading.Lock()


@contextlib.contextmanager
def _lookup_table(dtype: np.dtype):
    """A table of 2**24 entries of ``dtype`` (16 or 32 MiB), kept for the next call.

    Fresh memory of that size costs a page fault per 4 KiB page touched on first use:
    measured 3-4 ms a call on a photo whose colours touch every page, several times what
    the lookups cost. One table per dtype is kept (a second caller at the same time gets a
    fresh one); its contents are never relied on.
    """
    dtype = np.dtype(dtype)
    with _tables_lock:
        table = _tables.pop(dtype, None)
    if table is None:
        table = np.empty(1 << 24, dtype=dtype)
    try:
        yield table
    finally:
        with _tables_lock:
            _tables[dtype] = table


def take_rows(table: np.ndarray, index: np.ndarray, chunk: int = CHUNK_PIXELS) -> np.ndarray:
    """``table[index]`` for a 1D integer ``index``, a chunk at a time: take() gathers rows
    about three times faster than fancy indexing, but turns the whole index into intp
    first."""
    out = np.empty((index.size, table.shape[1]), dtype=table.dtype)
    for start in range(0, index.size, chunk):
        np.take(table, index[start : start + chunk], axis=0, out=out[start : start + chunk])
    return out


def distinct_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_counts=True)``, sorting ``keys`` in place: the same
    result, measured 1.8x faster (numpy 2.4's unique does more than this needs)."""
    keys.sort()
    starts = np.empty(len(keys), dtype=bool)
    starts[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=starts[1:])
    first = np.flatnonzero(starts)
    return keys[first], np.diff(first, append=len(keys)).astype(np.int64, copy=False)


def _chunks(pixels: np.ndarray, chunk: int):
    """(start, C-contiguous rows) of ``pixels`` a chunk at a time (a copy only of rows
    that are not contiguous already)."""
    for start in range(0, pixels.shape[0], chunk):
        yield start, np.ascontiguousarray(pixels[start : start + chunk])


def _merge_counts(parts):
    """Merge (sorted unique keys, counts) pairs into one pair."""
    if len(parts) == 1:
        keys, counts = parts[0]
        return keys, counts.astype(np.int64, copy=False)
    keys, inverse = np.unique(np.concatenate([k for k, _ in parts]), return_inverse=True)
    counts = np.bincount(
        inverse.reshape(-1), weights=np.concatenate([c for _, c in parts]), minlength=len(keys)
    )
    return keys, np.rint(counts).astype(np.int64)
