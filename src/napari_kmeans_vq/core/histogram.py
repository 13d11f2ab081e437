"""The distinct colours of an image and how many pixels have each.

K-means over every pixel and weighted k-means over the distinct colours (weight = pixel
count) have the same objective, so this table is all the fit needs (Celebi 2009). For
integer images a colour packs into one unsigned integer key. Keys of up to 24 bits (8-bit
RGB, 8- or 16-bit grey) are counted in the compiled kernels (``_colors.pyx``) with a bit
per possible key, no sort; wider keys are sorted chunk by chunk, so memory stays
proportional to the number of distinct colours. The blocks of an image larger than memory
(one thread each) are counted in a table of a count per possible key instead
(:func:`distinct_counts`). Pixels are mapped back to their colour's entry through a lookup
table instead of a distance computation.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from dataclasses import dataclass

import numpy as np

from . import _colors
from ._threads import resolve, team

CHUNK_PIXELS = 1 << 20
# Pixels counted at a time by the dense histogram: each chunk's histogram is merged with
# the others', a pass as costly as counting 4 Mpx (a 4096 x 4096 image is one chunk).
DENSE_CHUNK_PIXELS = 1 << 24
# The dense histogram pays for a bitmap of 2**24 bits per chunk: with fewer pixels,
# sorting the keys is faster.
DENSE_MIN_PIXELS = 1 << 19
# Per-chunk counts of wide keys are merged every this many chunks, to bound memory.
_MERGE_EVERY = 8
# Pixels per pass of distinct_in_table.
_TABLE_PASS = 1 << 31
# A count table's first use costs its page faults (about 0.1 s for the 2**24 entries of
# 8-bit RGB), then little: it is used for at least one pixel per this many entries.
TABLE_ENTRIES_PER_PIXEL = 16
# Key spaces up to this many bits get a dense lookup table (2**24 entries: 16 MiB as uint8).
DENSE_KEY_BITS = 24
_KEY_TYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


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
        # 8-bit RGB, packed in the compiled kernels (r | g << 8 | b << 16).
        self.rgb8 = self.dense and self.dtype == np.uint8 and channels == 3

    def keys(self, pixels: np.ndarray) -> np.ndarray:
        """Keys of ``pixels`` (n, C) as a 1D array (a new array, never a view of the input)."""
        n = pixels.shape[0]
        if self.rgb8:
            keys = np.empty(n, dtype=np.uint32)
            _colors.pack_rgb8(pixels, keys)
            return keys
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
        cls, pixels: np.ndarray, chunk: int | None = None, progress=None, n_threads=None
    ) -> ColorHistogram:
        """Count the distinct rows of ``pixels``, shape (N, C), ``chunk`` pixels at a time
        (default: :data:`DENSE_CHUNK_PIXELS` for keys of up to 24 bits and at least
        :data:`DENSE_MIN_PIXELS` pixels, else :data:`CHUNK_PIXELS`).

        ``progress``, if given, is called as ``progress("histogram", fraction_done)``.
        """
        codec = KeyCodec(pixels.dtype, pixels.shape[1])
        if not codec.usable:
            colors, inverse, counts = np.unique(
                pixels, axis=0, return_inverse=True, return_counts=True
            )
            return cls(colors, counts.astype(np.int64), None, inverse.reshape(-1), codec)
        if codec.dense and pixels.shape[0] >= DENSE_MIN_PIXELS:
            chunk = DENSE_CHUNK_PIXELS if chunk is None else chunk
            return cls._from_dense(pixels, chunk, progress, codec, resolve(n_threads))
        chunk = CHUNK_PIXELS if chunk is None else chunk
        n = pixels.shape[0]
        parts = []
        for start in range(0, n, chunk):
            parts.append(distinct_keys(codec.keys(pixels[start : start + chunk])))
            if len(parts) >= _MERGE_EVERY:
                parts = [_merge_counts(parts)]
            if progress is not None:
                progress("histogram", min(1.0, (start + chunk) / n))
        keys, counts = _merge_counts(parts)
        return cls(codec.colors(keys), counts, keys, None, codec)

    @classmethod
    def _from_dense(cls, pixels, chunk, progress, codec, threads) -> ColorHistogram:
        """Keys of up to 24 bits: each chunk counted with a bit per possible key (no sort),
        the chunks' histograms merged."""
        n = pixels.shape[0]
        parts = []
        with _pooled(("scratch", chunk), lambda: _scratch(chunk)) as (buffer, scratch):
            for start in range(0, max(n, 1), chunk):  # (an empty image: one empty chunk)
                part = pixels[start : start + chunk]
                keys, rgb = _kernel_rows(codec, part)
                # the counts go to the keys' array, or to the buffer when the kernel packs
                tally = keys if len(keys) else buffer[: len(part)]
                parts.append(cls._count_keys(keys, rgb, tally, scratch, codec, threads))
                if progress is not None:
                    progress("histogram", min(1.0, (start + chunk) / max(n, 1)))
        return parts[0] if len(parts) == 1 else cls._merge_dense(parts, codec)

    @classmethod
    def _count_keys(cls, keys, rgb, tally, scratch, codec, threads) -> ColorHistogram:
        """The histogram of uint32 ``keys`` or 8-bit RGB rows ``rgb`` (as
        :func:`_kernel_rows` gives them); ``tally`` (uint32, a value per row, may be
        ``keys``) receives the counts."""
        words = max(1, (1 << (8 * codec.nbytes)) // 64)
        buckets = max(1, words >> 10)
        bits = np.zeros(words, dtype=np.uint64)
        first = np.empty(buckets + 1, dtype=np.int64)
        rows = max(len(keys), len(rgb))
        _colors.count(keys, rgb, bits, scratch, tally, first, team(threads, rows))
        before = np.empty(words, dtype=np.uint32)
        m = _colors.rank(bits, before)
        distinct = np.empty(m, dtype=np.uint32)
        raw = np.empty((m, codec.nbytes), dtype=np.uint8)
        _colors.set_keys(bits, before, distinct, raw, team(threads, m))
        # Bucket b's counts, in key order, start at first[b] in keys: one slice each.
        edges = np.append(before[:: min(words, 1 << 10)], m).astype(np.int64)
        counts = np.empty(m, dtype=np.int64)
        for b in range(buckets):
            width = edges[b + 1] - edges[b]
            counts[edges[b] : edges[b + 1]] = tally[first[b] : first[b] + width]
        colors = raw.view(codec.dtype).reshape(m, codec.channels)
        return cls(colors, counts, distinct.astype(codec.key_dtype, copy=False), None, codec)

    @classmethod
    def merge(cls, hists: list[ColorHistogram]) -> ColorHistogram:
        """One histogram for several images (the colours of all, counts added)."""
        if len(hists) == 1:
            return hists[0]
        codec = hists[0]._codec
        if codec.dense:
            return cls._merge_dense(hists, codec)
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

    @classmethod
    def _merge_dense(cls, hists, codec) -> ColorHistogram:
        """Keys of up to 24 bits: mark every histogram's keys in a bitmap, rank the set
        bits, and add each histogram's counts at its keys' ranks (no sort)."""
        words = max(1, (1 << (8 * codec.nbytes)) // 64)
        bits = np.zeros(words, dtype=np.uint64)
        parts = [(np.ascontiguousarray(h.keys, dtype=np.uint32), h.counts) for h in hists]
        for keys, _ in parts:
            _colors.mark(keys, bits)
        before = np.empty(words, dtype=np.uint32)
        m = _colors.rank(bits, before)
        distinct = np.empty(m, dtype=np.uint32)
        raw = np.empty((m, codec.nbytes), dtype=np.uint8)
        _colors.set_keys(bits, before, distinct, raw, 1)
        counts = np.zeros(m, dtype=np.int64)
        for keys, weights in parts:
            _colors.tally(keys, bits, before, np.ascontiguousarray(weights, np.int64), counts)
        colors = raw.view(codec.dtype).reshape(m, codec.channels)
        return cls(colors, counts, distinct.astype(codec.key_dtype, copy=False), None, codec)

    def lookup(
        self,
        pixels: np.ndarray,
        values: np.ndarray,
        chunk: int = CHUNK_PIXELS,
        progress=None,
        n_threads: int | None = None,
    ):
        """``values[i]`` for the entry i of each pixel's colour; pixels must be in the table.

        Returns an array of shape (N,) and ``values.dtype``. ``progress``, if given, is
        called as ``progress("encode", fraction_done)``; ``n_threads`` as for
        :meth:`from_pixels`.
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
            part = pixels[start : start + chunk]
            if self._codec.dense:
                lookup_colors(
                    self._codec, part, table, out[start : start + chunk], n_threads=n_threads
                )
            else:
                out[start : start + chunk] = values[
                    np.searchsorted(self.keys, self._codec.keys(part))
                ]
            if progress is not None:
                progress("encode", min(1.0, (start + chunk) / pixels.shape[0]))
        return out


def encode_decode(
    hist, pixels, values, palette, chunk=CHUNK_PIXELS, progress=None, n_threads=None
):
    """Each pixel's value (its colour's entry of ``values``) and codeword (``palette`` at
    that value): ``hist.lookup`` and ``palette[labels]`` in one pass.

    Colours of up to 24-bit keys with uint8 or uint16 labels and palette go through the
    compiled kernel (which refuses a pixel whose colour is not in the histogram);
    anything else through numpy. ``pixels`` must be those the histogram was built from, or
    some of them. Returns (labels (N,), codewords (N, C)).
    """
    values = np.asarray(values)
    palette = np.ascontiguousarray(palette)
    fast = (
        hist._codec.dense
        and values.dtype in (np.uint8, np.uint16)
        and palette.dtype in (np.uint8, np.uint16)
    )
    if not fast:
        labels = hist.lookup(pixels, values, chunk=chunk, progress=progress)
        return labels, take_rows(palette, labels)
    if len(values) != len(hist.keys):
        raise ValueError(f"values: need one per colour ({len(hist.keys)}), got {len(values)}")
    threads = resolve(n_threads)
    n = pixels.shape[0]
    labels = np.empty(n, dtype=values.dtype)
    out = np.empty((n, palette.shape[1]), dtype=palette.dtype)
    codec = hist._codec
    with _lookup_table(values.dtype, 1 << (8 * codec.nbytes)) as table:
        # Only the entries of the histogram's colours are read: no need to clear it.
        table[hist.keys] = values
        for start in range(0, n, chunk):
            part = pixels[start : start + chunk]
            end = start + len(part)
            keys, rgb = _kernel_rows(codec, part)
            _colors.lookup_decode(
                keys,
                rgb,
                table,
                palette,
                labels[start:end],
                out[start:end],
                team(threads, len(part)),
            )
            if progress is not None:
                progress("encode", end / n)
    return labels, out


_pool: dict = {}
_pool_lock = threading.Lock()
# Tables kept per kind for the next calls: enough for two callers at once (dask's threads
# on blocks), not one per core (count tables: see counting_tables).
_POOL_SIZE = 2


@contextlib.contextmanager
def _pooled(kind, make, keep: int = _POOL_SIZE):
    """A table from the pool of ``kind`` (or ``make()``), put back after use if fewer than
    ``keep`` of its kind are there.

    Fresh memory of these sizes (2**24 entries) costs a page fault per 4 KiB page touched
    on first use: measured 3-4 ms a call on a photo whose colours touch every page, several
    times what the lookups cost.
    """
    with _pool_lock:
        free = _pool.get(kind)
        item = free.pop() if free else None
    if item is None:
        item = make()
    yield item
    with _pool_lock:
        free = _pool.setdefault(kind, [])
        if len(free) < keep:
            free.append(item)


# Count tables (distinct_in_table) in use at once, and kept, at most: 64 MiB each for
# 8-bit RGB, so on a machine of many cores the further threads sort their blocks instead.
MAX_COUNT_TABLES = 8
_counting = {"passes": 0, "tables": 0}


@contextlib.contextmanager
def counting_tables():
    """A pass over many blocks: the count tables :func:`distinct_counts` keeps for the next
    blocks are let go when the last such pass in this process (any thread) ends. (A
    cluster's workers keep theirs for their next blocks.)"""
    with _pool_lock:
        _counting["passes"] += 1
    try:
        yield
    finally:
        with _pool_lock:
            _counting["passes"] -= 1
            if not _counting["passes"]:
                for kind in [k for k in _pool if k[0] == "counts"]:
                    del _pool[kind]


@contextlib.contextmanager
def _count_table_turn():
    """Whether a count table may be used now (fewer than MAX_COUNT_TABLES are)."""
    with _pool_lock:
        turn = _counting["tables"] < MAX_COUNT_TABLES
        _counting["tables"] += turn
    try:
        yield turn
    finally:
        with _pool_lock:
            _counting["tables"] -= turn


def _scratch(chunk: int):
    """Keys and bucketed key halves for a chunk of pixels."""
    return np.empty(chunk, dtype=np.uint32), np.empty(chunk, dtype=np.uint16)


def _lookup_table(dtype: np.dtype, size: int):
    """A table of ``size`` entries of ``dtype``; its contents are never relied on."""
    dtype = np.dtype(dtype)
    return _pooled(("lookup", dtype, size), lambda: np.empty(size, dtype=dtype))


def lookup_colors(
    codec: KeyCodec,
    pixels: np.ndarray,
    table: np.ndarray,
    out=None,
    n_threads=None,
    *,
    marked: bool = False,
):
    """``table[key]`` for the key of each of ``pixels`` (n, C), keys of up to 24 bits, into
    ``out`` if given (compiled for uint8, uint16 and uint32 tables; a key past the table
    raises ``ValueError``). With ``marked``, returns (values, rows): ``rows`` the indices
    of the pixels whose value is the table dtype's largest (the mark of a colour a table
    does not hold), found in the same pass."""
    n = pixels.shape[0]
    if out is None:
        out = np.empty(n, dtype=table.dtype)
    missing = np.empty(n if marked else 0, dtype=np.int64)  # (pages touched only if used)
    if table.dtype in (np.uint8, np.uint16, np.uint32) and out.flags.c_contiguous:
        keys, rgb = _kernel_rows(codec, pixels)
        found = _colors.lookup(keys, rgb, table, out, missing, team(resolve(n_threads), n))
        rows = missing[:found]
    else:
        np.take(table, codec.keys(pixels), out=out)
        rows = np.flatnonzero(out == np.iinfo(table.dtype).max) if marked else None
    return (out, rows) if marked else out


_NO_KEYS = np.empty(0, dtype=np.uint32)
_NO_RGB = np.empty((0, 3), dtype=np.uint8)


def _kernel_rows(codec: KeyCodec, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys, rgb) as the lookup kernels take them: 8-bit RGB rows in one piece are packed
    inside the kernel (no keys array written and read back), others packed here."""
    if codec.rgb8 and pixels.strides[1:] == (1,) and pixels.strides[0] == 3:
        return _NO_KEYS, pixels
    return np.ascontiguousarray(codec.keys(pixels), dtype=np.uint32), _NO_RGB


def count_values(values: np.ndarray, n: int) -> np.ndarray:
    """How many of the integer ``values`` (labels, any shape) are 0, 1, ..., n - 1:
    ``np.bincount(values.ravel(), minlength=n)``, compiled for uint8, uint16 and uint32
    (about 6x faster on label images, whose runs of one value stall bincount); a value of
    n or more raises ``ValueError``."""
    values = np.ravel(values)
    counts = np.zeros(n, dtype=np.int64)
    if values.dtype in (np.uint8, np.uint16, np.uint32):
        _colors.count_values(np.ascontiguousarray(values), counts)
    else:
        found = np.bincount(values, minlength=n)
        if len(found) > n:
            raise ValueError("a value is past the counts")
        counts += found
    return counts


def take_rows(table: np.ndarray, index: np.ndarray, chunk: int = CHUNK_PIXELS) -> np.ndarray:
    """``table[index]`` for a 1D integer ``index``, a chunk at a time: take() gathers rows
    faster than fancy indexing, but turns the whole index into intp
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


def distinct_counts(codec: KeyCodec, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct keys of ``pixels`` (n, C) and their counts, in one thread:
    counted in a table (:func:`distinct_in_table`) for keys of up to 24 bits and at least
    one pixel per :data:`TABLE_ENTRIES_PER_PIXEL` entries of the table, while fewer than
    :data:`MAX_COUNT_TABLES` are in use; else sorted (:func:`distinct_keys`). A pass over
    many blocks goes in :func:`counting_tables`, which lets the tables go after."""
    if codec.dense and (1 << (8 * codec.nbytes)) <= TABLE_ENTRIES_PER_PIXEL * len(pixels):
        with _count_table_turn() as turn:
            if turn:
                return distinct_in_table(codec, pixels)
    keys, counts = distinct_keys(codec.keys(pixels))
    return keys, counts.astype(np.int64, copy=False)


def distinct_in_table(codec: KeyCodec, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct keys of ``pixels`` (n, C) and their counts, for keys of up to 24
    bits (``codec.dense``): every pixel counted in a table of a count per possible key, in
    one pass and one thread, and only the distinct keys sorted.

    For a block of a slide (few colours, each seen many times) this is what
    :func:`distinct_keys` gives without sorting every key. The table (2**24 counts, 64 MiB,
    for 8-bit RGB) is cleared as it is read, and kept for the next call inside
    :func:`counting_tables`.
    """
    if not codec.dense:
        raise ValueError(
            f"distinct_in_table: colours of {codec.channels} x {codec.dtype} do not pack "
            "into a dense key (at most 24 bits, little-endian)"
        )
    size = 1 << (8 * codec.nbytes)
    parts = []
    # Below 2**32 keys per pass, so that no uint32 count wraps.
    for start in range(0, max(pixels.shape[0], 1), _TABLE_PASS):
        part = pixels[start : start + _TABLE_PASS]
        keys, rgb = _kernel_rows(codec, part)
        seen = np.empty(len(part), dtype=np.uint32)
        # (a failure inside drops the table from the pool: it is not zero)
        make = functools.partial(np.zeros, size, dtype=np.uint32)
        with _pooled(("counts", size), make, MAX_COUNT_TABLES) as table:
            found, bad = _colors.count_in_table(keys, rgb, table, seen)
            distinct = np.sort(seen[:found])
            counts = np.empty(found, dtype=np.int64)
            _colors.take_counts(table, distinct, counts)
        if bad:
            raise ValueError("a key is past the table")
        parts.append((distinct, counts))
    keys, counts = _merge_counts(parts)
    return keys.astype(codec.key_dtype, copy=False), counts


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
