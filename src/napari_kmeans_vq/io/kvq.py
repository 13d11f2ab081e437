"""The ``.kvq`` container: a palette plus codeword indices bit-packed at ``ceil(log2 K)`` bits.

The byte layout is specified in ``docs/kvq-format.md``; this module is its reference
implementation. In short (all integers little-endian)::

    offset  size     field
    0       8        magic  b"\\x89KVQ\\r\\n\\x1a\\n"
    8       2        version (u16): 1; 2 when flag bit 2 is set; 3 when flag bit 3 is
    10      2        flags (u16): bit 0 deflated payload, bit 1 no colour axis,
                     bit 2 byte-aligned indices (version 2, deflated only),
                     bit 3 metadata section (version 3)
    12      1        ndim (u8), 1 .. 32
    13      1        dtype code (u8) of the palette
    14      1        bits per index b (u8) = ceil(log2 K), 0 for K = 1
    15      1        reserved, 0
    16      2        channels C (u16), 1 .. 256
    18      2        reserved, 0
    20      4        K (u32), 1 .. 65,536
    24      8        payload length in bytes (u64)
    32      4        CRC-32 of every other byte of the file
    36      4        metadata length M (u32) with flag bit 3, else reserved, 0
    40      8*ndim   shape, one u64 per axis (the image without its colour axis)
    ...     K*C*s    palette, row-major, little-endian, s = the dtype's size
    ...     M        metadata (flag bit 3): a UTF-8 JSON object, e.g. the class names
    ...     payload  indices: N values of b bits, most significant bit first, zero-padded
                     to a whole byte; deflated with zlib when flag bit 0 is set.
                     With flag bit 2 the deflated indices are whole bytes instead: one
                     u8 each (K <= 256) or one big-endian u16 each (K > 256)

Undeflated, a file is exactly ``40 + 8*ndim + K*C*s + M + ceil(N*b/8)`` bytes (M = 0 without
metadata).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import NamedTuple

import numpy as np

from .._limits import MAX_COLORS, index_dtype
from ._read import read_checked
from .data import KVQData, check_labels_palette, fail
from .limits import check_pixels, parse_json

__all__ = [
    "DEFAULT_LEVEL",
    "DTYPE_CODES",
    "INDEX_LAYOUTS",
    "MAGIC",
    "MAX_CHANNELS",
    "MAX_COLORS",
    "MAX_METADATA",
    "MAX_NDIM",
    "READ_VERSIONS",
    "VERSION",
    "KVQHeader",
    "auto_index_layout",
    "byte_width",
    "check_class_metadata",
    "class_metadata",
    "decode_kvq",
    "encode_kvq",
    "header_size",
    "kvq_size",
    "pack_indices",
    "read_header",
    "read_kvq",
    "unpack_indices",
]

#: The first 8 bytes of every ``.kvq`` file. Like PNG's signature: a non-ASCII first byte,
#: then a name, then CR LF, EOF (Ctrl-Z) and LF, so text-mode transfers show up as damage.
MAGIC = b"\x89KVQ\r\n\x1a\n"
#: The newest format version. Files are written at the lowest version that describes them
#: (1 unless the indices are byte-aligned, 2 for those, 3 with a metadata section), so
#: readers of version 1 read every file that needs neither, and files without metadata
#: are the same bytes as before version 3 existed.
VERSION = 3
#: The versions this module reads.
READ_VERSIONS = (1, 2, 3)

#: Documented limits, checked against the header before anything is allocated.
MAX_NDIM = 32
MAX_CHANNELS = 256

FLAG_DEFLATE = 1
FLAG_SCALAR = 2
#: Version 2: the deflated payload holds one whole byte (K <= 256) or two (K > 256) per
#: index instead of ``b`` bits, because deflate finds far more repeats in byte-aligned
#: values when ``b`` is not 8 or 16 (its matches and literals are whole bytes).
FLAG_BYTES = 4
#: Version 3: a metadata section (UTF-8 JSON, its length at header offset 36) sits between
#: the palette and the payload: class names and colours travel with the labels.
FLAG_META = 8
_KNOWN_FLAGS = {
    1: FLAG_DEFLATE | FLAG_SCALAR,
    2: FLAG_DEFLATE | FLAG_SCALAR | FLAG_BYTES,
    3: FLAG_DEFLATE | FLAG_SCALAR | FLAG_BYTES | FLAG_META,
}
#: The most bytes of metadata a file may hold (16 MiB: names of 65,536 classes at 256
#: bytes each), checked when writing and, from the header, before reading.
MAX_METADATA = 1 << 24

#: How the indices are laid out in a deflated payload: ``"auto"`` picks one by
#: :func:`auto_index_layout`, ``"packed"`` is ``b`` bits each, ``"bytes"`` whole bytes each.
INDEX_LAYOUTS = ("auto", "packed", "bytes")

#: zlib's own default level: files are written, and their sizes measured, with one deflate
#: at this level. On stained slides level 9 took 5-10 times as long for files 0-20 % smaller.
DEFAULT_LEVEL = 6

#: Palette dtypes and their codes in the header (byte 13). Stored little-endian.
DTYPE_CODES = {
    1: np.dtype("<u1"),
    2: np.dtype("<u2"),
    3: np.dtype("<u4"),
    4: np.dtype("<u8"),
    5: np.dtype("<i1"),
    6: np.dtype("<i2"),
    7: np.dtype("<i4"),
    8: np.dtype("<i8"),
    9: np.dtype("<f2"),
    10: np.dtype("<f4"),
    11: np.dtype("<f8"),
}
_CODE_OF = {(dt.kind, dt.itemsize): code for code, dt in DTYPE_CODES.items()}

# magic, version, flags, ndim, dtype code, b, reserved, C, reserved, K, payload length,
# crc, metadata length (reserved before version 3)
_HEADER = struct.Struct("<8sHHBBBBHHIQII")
_CRC_OFFSET = 32
_FIXED = _HEADER.size  # 40
assert _FIXED == 40

# Deflate cannot expand data by more than about 1032:1 (a run of 258 bytes per 2-bit code
# pair at best); a payload that claims more than this is rejected before inflating, so the
# memory spent is bounded by the file's real size.
_MAX_INFLATE_RATIO = 1100
_INFLATE_SLACK = 1024

# Pixels per packing step: a multiple of 8 so each step fills whole bytes; bounds the
# temporary bit arrays to about 16 MiB whatever the image size.
_CHUNK = 1 << 20


def header_size(ndim: int) -> int:
    """Bytes of the fixed header for an image with ``ndim`` axes (colour axis excluded)."""
    return _FIXED + 8 * ndim


def kvq_size(shape, n_colors: int, channels: int = 3, itemsize: int = 1) -> int:
    """Bytes of an undeflated ``.kvq`` file: header + palette + ``ceil(N*b/8)``.

    Parameters
    ----------
    shape : tuple of int
        The labels' shape (the image without its colour axis).
    n_colors : int
        K.
    channels : int, default 3
        C.
    itemsize : int, default 1
        Bytes per palette value (1 for uint8).
    """
    n = math.prod(shape)
    b = (int(n_colors) - 1).bit_length()
    return header_size(len(shape)) + n_colors * channels * itemsize + (n * b + 7) // 8


def auto_index_layout(n_colors: int) -> str:
    """The index layout ``index_layout="auto"`` deflates for K colours: one rule, one encoding.

    ``"packed"`` when every index sits whole inside a byte, that is when ``b = ceil(log2 K)``
    is 0, 1, 2, 4, 8 or 16 (at 0, 8 and 16 the two layouts are the same bytes);
    ``"bytes"`` otherwise (b = 3, 5, 6, 7 and 9 .. 15), where a packed index straddles
    bytes in a pattern that shifts from pixel to pixel and hides repeats from deflate. On
    stained slides at zlib level 6 the packed payload was 3-30 % smaller at b = 1, 2 and 4,
    the byte-aligned one 20-30 % smaller at b = 5 to 7 and 9, and the two within a few
    percent either way at b = 3 and 10. The choice needs no trial encoding.
    """
    bits = (int(n_colors) - 1).bit_length()
    return "packed" if bits in (0, 1, 2, 4, 8, 16) else "bytes"


def byte_width(n_colors: int) -> int:
    """Bytes per index in the byte-aligned layout: 1 for K <= 256, else 2."""
    return 1 if n_colors <= 256 else 2


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers below ``2**bits`` at exactly ``bits`` bits each.

    Value ``i`` occupies stream bits ``i*bits .. (i+1)*bits - 1``, most significant bit
    first, and stream bit 0 is the most significant bit of byte 0 (the order PNG uses for
    sub-byte pixels). The last byte is padded with zero bits.

    Parameters
    ----------
    indices : ndarray of int
        Any shape; packed in C order.
    bits : int
        0 .. 16. ``bits = 0`` gives no bytes at all.

    Returns
    -------
    ndarray of uint8, length ``ceil(indices.size * bits / 8)``
    """
    if not 0 <= bits <= 16:
        raise ValueError(f"bits must be between 0 and 16, got {bits}")
    flat = np.asarray(indices).reshape(-1)
    n = flat.size
    if bits == 0 or n == 0:
        return np.zeros(0, dtype=np.uint8)
    if bits == 8:
        return flat.astype(np.uint8)
    if bits == 16:
        return flat.astype(">u2").view(np.uint8)
    if 8 % bits == 0:
        return _pack_whole(flat, bits)
    out = np.empty((n * bits + 7) // 8, dtype=np.uint8)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
    for start in range(0, n, _CHUNK):
        chunk = flat[start : start + _CHUNK].astype(np.uint16, copy=False)
        # One row of bit planes per value, most significant first, then 8 bits to a byte.
        planes = ((chunk[:, None] >> shifts) & 1).astype(np.uint8)
        packed = np.packbits(planes.reshape(-1))
        first = start * bits // 8  # start is a multiple of 8, so this is exact
        out[first : first + packed.size] = packed
    return out


def _pack_whole(flat: np.ndarray, bits: int) -> np.ndarray:
    """:func:`pack_indices` for 1, 2 or 4 bits, where each byte holds whole indices."""
    per = 8 // bits
    out = np.zeros((flat.size + per - 1) // per, dtype=np.uint8)
    for start in range(0, flat.size, _CHUNK):  # _CHUNK is a multiple of 8
        chunk = flat[start : start + _CHUNK].astype(np.uint8)
        dest = out[start // per : (start + chunk.size + per - 1) // per]
        for j in range(per):
            part = chunk[j::per]
            dest[: part.size] |= part << np.uint8(bits * (per - 1 - j))
    return out


def unpack_indices(data, n: int, bits: int, dtype=np.uint16) -> np.ndarray:
    """Inverse of :func:`pack_indices`: the first ``n`` values of ``bits`` bits each.

    Parameters
    ----------
    data : bytes-like or ndarray of uint8
        At least ``ceil(n * bits / 8)`` bytes.
    n : int
        Number of values.
    bits : int
        0 .. 16.
    dtype : dtype, default uint16
        Output dtype (must hold ``2**bits - 1``).

    Returns
    -------
    ndarray, shape (n,)
    """
    if not 0 <= bits <= 16:
        raise ValueError(f"bits must be between 0 and 16, got {bits}")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.size < (n * bits + 7) // 8:
        raise ValueError(f"{n} values of {bits} bits need {(n * bits + 7) // 8} bytes")
    if bits == 0:
        # calloc-backed: pages are only touched when written, so a one-colour image of
        # any declared size costs (almost) nothing until used.
        return np.zeros(n, dtype=dtype)
    if bits == 8:
        return buf[:n].astype(dtype)
    if bits == 16:
        return buf[: 2 * n].view(">u2").astype(dtype)
    out = np.empty(n, dtype=dtype)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        first, last = start * bits // 8, (stop * bits + 7) // 8
        planes = np.unpackbits(buf[first:last], count=(stop - start) * bits)
        planes = planes.reshape(stop - start, bits)
        values = np.zeros(stop - start, dtype=np.uint16)
        for column in range(bits):
            values <<= 1
            values |= planes[:, column]
        out[start:stop] = values
    return out


def _dtype_code(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    code = _CODE_OF.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise TypeError(
            f"palette dtype {dtype} cannot be stored; use an unsigned or signed integer of "
            "1, 2, 4 or 8 bytes, or float16/32/64"
        )
    return code


def encode_kvq(
    labels,
    palette,
    *,
    deflate: bool = True,
    scalar: bool = False,
    level: int = DEFAULT_LEVEL,
    index_layout: str = "auto",
    metadata: dict | None = None,
) -> bytes:
    """Encode codeword indices and a palette as the bytes of a ``.kvq`` file.

    Parameters
    ----------
    labels : ndarray of int
        Codeword index per pixel, ``0 .. K-1``, any shape with 1 to 32 axes (the image
        without its colour axis).
    palette : ndarray, shape (K, C)
        Codewords: any unsigned or signed integer dtype of 1, 2, 4 or 8 bytes, or a float.
    deflate : bool, default True
        Compress the index payload with zlib.
    scalar : bool, default False
        The image has no colour axis (its reconstruction has the labels' shape; C must be 1).
    level : int, default 6
        zlib compression level when deflating (0 .. 9; 6 is zlib's default).
    index_layout : {"auto", "packed", "bytes"}, default "auto"
        How a deflated payload lays out the indices: ``"packed"`` at exactly ``b`` bits
        each (version 1), ``"bytes"`` as one byte each (two for K > 256; version 2, flag
        bit 2), ``"auto"`` the one :func:`auto_index_layout` gives for K (packed when
        ``b`` is 0, 1, 2, 4, 8 or 16, else bytes). The payload is deflated once, in that
        layout; at ``b`` = 0, 8 or 16 the two layouts are the same bytes and the file is
        always version 1. Without ``deflate`` the indices are always packed, so the file
        is exactly header + palette + ``ceil(N*b/8)`` bytes; ``"bytes"`` is then an error.
    metadata : dict, optional
        A JSON object stored in the version 3 metadata section (flag bit 3), such as
        ``{"names": [...]}`` (see :func:`class_metadata`). None or an empty dict writes no
        section: the file is then byte for byte what versions 1 and 2 write.

    Returns
    -------
    bytes

    Raises
    ------
    TypeError, ValueError
        Bad ``labels`` or ``palette`` (see :func:`check_labels_palette`), more than 32 axes,
        ``scalar`` with C != 1, an unknown ``index_layout``,
        ``index_layout="bytes"`` without ``deflate``, or metadata that is not a JSON
        object, holds names or colours that are not one per class, or is longer than
        :data:`MAX_METADATA` bytes as JSON.
    """
    if index_layout not in INDEX_LAYOUTS:
        raise ValueError(
            f"index_layout must be one of {', '.join(map(repr, INDEX_LAYOUTS))}, got "
            f"{index_layout!r}"
        )
    if index_layout == "bytes" and not deflate:
        raise ValueError(
            "index_layout='bytes' needs deflate=True: an undeflated .kvq always packs its "
            "indices at ceil(log2 K) bits"
        )
    labels, palette = check_labels_palette(labels, palette)
    k, channels = palette.shape
    code = _dtype_code(palette.dtype)
    if labels.ndim > MAX_NDIM:
        raise ValueError(f"labels may have at most {MAX_NDIM} axes, got {labels.ndim}")
    if scalar and channels != 1:
        raise ValueError(f"scalar=True needs a one-channel palette, got C = {channels}")
    bits = (k - 1).bit_length()
    flags = (FLAG_DEFLATE if deflate else 0) | (FLAG_SCALAR if scalar else 0)
    layout = index_layout if index_layout != "auto" else auto_index_layout(k)
    # At b = 0, 8 or 16 both layouts are the same bytes: always write version 1 then.
    if not deflate or bits in (0, 8, 16):
        layout = "packed"
    if layout == "bytes":
        wide = labels.astype(">u2" if byte_width(k) == 2 else np.uint8, copy=False)
        payload = np.ascontiguousarray(wide).tobytes()
        flags |= FLAG_BYTES
    else:
        payload = pack_indices(labels, bits).tobytes()
    if deflate:
        payload = zlib.compress(payload, level)
    meta = _encode_metadata(metadata, k)
    if meta:
        flags |= FLAG_META
    version = 3 if meta else 2 if flags & FLAG_BYTES else 1
    header = _HEADER.pack(
        MAGIC,
        version,
        flags,
        labels.ndim,
        code,
        bits,
        0,
        channels,
        0,
        k,
        len(payload),
        0,
        len(meta),
    )
    shape = struct.pack(f"<{labels.ndim}Q", *labels.shape)
    palette_bytes = np.ascontiguousarray(palette, dtype=DTYPE_CODES[code]).tobytes()
    crc = zlib.crc32(header[:_CRC_OFFSET])
    for piece in (header[_CRC_OFFSET + 4 :], shape, palette_bytes, meta, payload):
        crc = zlib.crc32(piece, crc)
    header = header[:_CRC_OFFSET] + struct.pack("<I", crc) + header[_CRC_OFFSET + 4 :]
    return b"".join((header, shape, palette_bytes, meta, payload))


def class_metadata(names=None, colors=None, n_colors: int | None = None, **extra) -> dict:
    """The metadata a file records for its classes: ``{"names": [...], "colors": [...]}``.

    Parameters
    ----------
    names : sequence of str, optional
        One name per class (codeword), in codeword order.
    colors : sequence, optional
        One display colour per class: ``"#rrggbb"`` or 3 numbers 0-255.
    n_colors : int, optional
        K, checked against both lengths when given.
    **extra
        Further JSON values kept as they are (readers keep keys they do not know).

    Returns
    -------
    dict
        Only the entries given (empty when nothing is), checked as :func:`encode_kvq` and
        the readers check them.
    """
    out = dict(extra)
    if names is not None:
        out["names"] = [str(name) for name in names]
    if colors is not None:
        out["colors"] = [_hex_color(c) for c in colors]
    return check_class_metadata(out, n_colors, error=ValueError)


def _hex_color(color) -> str:
    if isinstance(color, str):
        return color
    values = [round(float(v)) for v in list(color)[:3]]
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise ValueError(f"colors: expected '#rrggbb' or 3 numbers 0-255, got {color!r}")
    return "#{:02x}{:02x}{:02x}".format(*values)


def check_class_metadata(metadata, n_colors: int | None = None, *, error=None, source=None):
    """Check the entries this package gives meaning to: ``names`` (K strings) and
    ``colors`` (K ``"#rrggbb"`` strings); other keys pass. Raises ``error`` (default
    :class:`KVQError` naming ``source``) with what is wrong."""

    def bad(message):
        return error(message) if error is not None else fail(message, source)

    if not isinstance(metadata, dict):
        raise bad(f"metadata must be a JSON object (a dict), got {type(metadata).__name__}")
    for key, check in (("names", _is_name), ("colors", _is_hex)):
        if key not in metadata:
            continue
        value = metadata[key]
        if not isinstance(value, list) or not all(check(v) for v in value):
            what = "strings" if key == "names" else "'#rrggbb' strings"
            raise bad(f"metadata {key!r} must be a list of {what}")
        if n_colors is not None and len(value) != n_colors:
            raise bad(
                f"metadata {key!r} has {len(value)} entries, expected one per class "
                f"(K = {n_colors})"
            )
    return metadata


def _is_name(value) -> bool:
    return isinstance(value, str)


def _is_hex(value) -> bool:
    if not isinstance(value, str) or len(value) != 7 or value[0] != "#":
        return False
    try:
        int(value[1:], 16)
    except ValueError:
        return False
    return True


def _encode_metadata(metadata, k: int) -> bytes:
    """The metadata section's bytes (empty for no metadata), checked and bounded."""
    if metadata is None or (isinstance(metadata, dict) and not metadata):
        return b""
    check_class_metadata(metadata, k, error=ValueError)
    try:
        text = json.dumps(metadata, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable ({exc})") from None
    raw = text.encode("utf-8")
    if len(raw) > MAX_METADATA:
        raise ValueError(
            f"metadata is {len(raw):,} bytes as JSON, over the .kvq limit of "
            f"{MAX_METADATA:,} bytes (MAX_METADATA)"
        )
    return raw


class KVQHeader(NamedTuple):
    """The fields of a ``.kvq`` header, checked (see :func:`read_header`)."""

    version: int
    flags: int
    shape: tuple
    dtype: np.dtype
    bits: int
    channels: int
    n_colors: int
    payload_len: int
    crc: int
    head: int
    palette_len: int
    file_size: int
    n_pixels: int
    meta_len: int = 0

    @property
    def byte_aligned(self) -> bool:
        return bool(self.flags & FLAG_BYTES)

    @property
    def deflated(self) -> bool:
        return bool(self.flags & FLAG_DEFLATE)

    @property
    def stored_bits(self) -> int:
        """Bits per stored index: b packed, or 8 / 16 when byte-aligned."""
        return 8 * byte_width(self.n_colors) if self.byte_aligned else self.bits

    @property
    def raw_len(self) -> int:
        """Bytes of the indices once inflated."""
        return (self.n_pixels * self.stored_bits + 7) // 8


def read_header(view, size: int, *, source=None, max_pixels: int | None = None) -> KVQHeader:
    """Check a ``.kvq`` header (checks 1 to 7 of ``docs/kvq-format.md``) from its first bytes.

    Parameters
    ----------
    view : bytes-like
        At least the file's first ``header_size(ndim)`` bytes (fewer is "truncated").
    size : int
        The file's real size in bytes, which the header must describe exactly.
    source, max_pixels
        As for :func:`decode_kvq`.

    Returns
    -------
    KVQHeader
        Nothing is allocated for the pixels before every size is known to fit the file
        and the limit.
    """
    view = memoryview(view).cast("B")
    if len(view) < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        raise fail("not a .kvq file (wrong magic bytes)", source)
    if len(view) < _FIXED or size < _FIXED:
        raise fail(
            f"truncated: {min(size, len(view))} bytes, shorter than the {_FIXED}-byte header",
            source,
        )
    (_, version, flags, ndim, code, bits, res1, channels, res2, k, payload_len, crc, meta_len) = (
        _HEADER.unpack_from(view)
    )
    if version not in READ_VERSIONS:
        raise fail(
            f"format version {version} is not supported (this reader reads versions "
            f"{', '.join(map(str, READ_VERSIONS))})",
            source,
        )
    has_meta = bool(flags & FLAG_META)
    if flags & ~_KNOWN_FLAGS[version] or res1 or res2 or (meta_len and not has_meta):
        raise fail(
            f"unknown flags for version {version} or non-zero reserved header fields", source
        )
    if has_meta and not 2 <= meta_len <= MAX_METADATA:
        raise fail(f"metadata length {meta_len:,} is outside 2 .. {MAX_METADATA:,} bytes", source)
    if not 1 <= ndim <= MAX_NDIM:
        raise fail(f"ndim {ndim} is outside 1 .. {MAX_NDIM}", source)
    if code not in DTYPE_CODES:
        raise fail(f"unknown palette dtype code {code}", source)
    if not 1 <= channels <= MAX_CHANNELS:
        raise fail(f"channels {channels} is outside 1 .. {MAX_CHANNELS}", source)
    if not 1 <= k <= MAX_COLORS:
        raise fail(f"K = {k} is outside 1 .. {MAX_COLORS}", source)
    if bits != (k - 1).bit_length():
        raise fail(f"bits per index {bits} does not match K = {k}", source)
    byte_aligned = bool(flags & FLAG_BYTES)
    if byte_aligned and (not flags & FLAG_DEFLATE or bits in (0, 8, 16)):
        raise fail(
            f"byte-aligned indices (flag bit 2) need a deflated payload and b not 0, 8 or 16 "
            f"(flags {flags}, b = {bits})",
            source,
        )
    if flags & FLAG_SCALAR and channels != 1:
        raise fail(f"a scalar image must have one channel, header says {channels}", source)
    head = header_size(ndim)
    if len(view) < head or size < head:
        raise fail(
            f"truncated: {min(size, len(view))} bytes, shorter than its {head}-byte header",
            source,
        )
    shape = struct.unpack_from(f"<{ndim}Q", view, _FIXED)
    if min(shape) < 1:
        raise fail(f"shape {shape} has an empty axis", source)
    n = math.prod(shape)  # exact Python integers: no overflow
    check_pixels(n, max_pixels, source=source, what=" x ".join(map(str, shape)))
    dtype = DTYPE_CODES[code]
    palette_len = k * channels * dtype.itemsize
    expected = head + palette_len + meta_len + payload_len
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise fail(f"{what}: the header describes {expected} bytes, the file has {size}", source)
    header = KVQHeader(
        version,
        flags,
        shape,
        dtype,
        bits,
        channels,
        k,
        payload_len,
        crc,
        head,
        palette_len,
        size,
        n,
        meta_len,
    )
    raw_len = header.raw_len
    if not header.deflated and payload_len != raw_len:
        raise fail(
            f"index payload is {payload_len} bytes, {n} indices of {bits} bits need {raw_len}",
            source,
        )
    if header.deflated and raw_len > _MAX_INFLATE_RATIO * payload_len + _INFLATE_SLACK:
        raise fail(
            f"declares {raw_len} index bytes, more than {payload_len} deflated bytes can hold",
            source,
        )
    return header


def decode_kvq(data, *, source=None, max_pixels: int | None = None) -> KVQData:
    """Decode the bytes of a ``.kvq`` file, checking everything before allocating.

    Parameters
    ----------
    data : bytes-like
        The whole file.
    source : str, optional
        Named in error messages (the path).
    max_pixels : int, optional
        Refuse files that declare more pixels than this; default
        :data:`napari_kmeans_vq.io.limits.MAX_PIXELS` (2**28 unless changed).

    Returns
    -------
    KVQData

    Raises
    ------
    KVQError
        Not a ``.kvq`` file, another version, a header field out of range, more pixels than
        the limit, a header that disagrees with the file's size, a failed checksum, a
        payload that does not inflate to the declared size, or an index >= K.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    header = read_header(view, size, source=source, max_pixels=max_pixels)
    head, palette_len, crc = header.head, header.palette_len, header.crc
    shape, dtype, k, channels = header.shape, header.dtype, header.n_colors, header.channels
    n, stored_bits, raw_len = header.n_pixels, header.stored_bits, header.raw_len
    deflated, byte_aligned = header.deflated, header.byte_aligned
    payload_len, version = header.payload_len, header.version
    scalar = bool(header.flags & FLAG_SCALAR)
    actual = zlib.crc32(view[:_CRC_OFFSET])
    actual = zlib.crc32(view[_CRC_OFFSET + 4 :], actual)
    if actual != crc:
        raise fail(f"checksum mismatch (stored {crc:08x}, computed {actual:08x})", source)

    palette = np.frombuffer(view, dtype=dtype, count=k * channels, offset=head)
    palette = palette.reshape(k, channels).astype(dtype.newbyteorder("="))
    meta_end = head + palette_len + header.meta_len
    metadata = {}
    if header.meta_len:
        metadata = parse_json(
            view[head + palette_len : meta_end],
            source=source,
            what="the metadata section",
            max_bytes=MAX_METADATA,
        )
        check_class_metadata(metadata, k, source=source)
    payload = view[meta_end:]
    if deflated:
        inflater = zlib.decompressobj()
        try:
            # max_length + 1: a stream that inflates to more than declared is caught
            # without inflating all of it.
            raw = inflater.decompress(payload, raw_len + 1)
        except zlib.error as exc:
            raise fail(f"index payload does not inflate: {exc}", source) from None
        if len(raw) != raw_len or not inflater.eof or inflater.unconsumed_tail:
            raise fail(
                f"index payload inflates to {len(raw)}"
                f"{'+' if inflater.unconsumed_tail else ''} bytes, not the declared "
                f"{raw_len}, or has data after its end",
                source,
            )
        if inflater.unused_data:
            raise fail("index payload has data after its deflate stream", source)
    else:
        raw = payload
    raw = np.frombuffer(raw, dtype=np.uint8)
    if stored_bits % 8 and raw.size and (n * stored_bits) % 8:
        pad = 8 - (n * stored_bits) % 8
        if int(raw[-1]) & ((1 << pad) - 1):
            raise fail("non-zero padding bits after the last index", source)
    # Whole bytes unpack as 8- or 16-bit values (big-endian, as the packed order implies).
    try:
        labels = unpack_indices(raw, n, stored_bits, dtype=index_dtype(k))
    except MemoryError:
        raise fail(f"not enough memory to decode {n:,} pixels", source) from None
    if stored_bits and k < (1 << stored_bits):
        top = int(labels.max())
        if top >= k:
            raise fail(f"an index is {top}, not below K = {k}", source)
    return KVQData(
        labels=labels.reshape(shape),
        palette=palette,
        scalar=scalar,
        format="kvq",
        version=version,
        deflated=deflated,
        file_size=size,
        payload_bytes=payload_len,
        bit_depth=stored_bits,
        index_layout="bytes" if byte_aligned else "packed",
        names=metadata.get("names"),
        extra={"metadata": metadata} if metadata else {},
    )


def read_kvq(path, *, max_pixels: int | None = None) -> KVQData:
    """Read and decode a ``.kvq`` file (see :func:`decode_kvq`).

    Only a regular file is opened (a FIFO or a device is refused at once), and only its
    header is read before the header's sizes are checked against the file's real size and
    the pixel limit; then the file is read whole (its real size bounds that memory).
    Nothing is unpickled.
    """
    source = str(path)
    data = read_checked(
        path,
        header_size(MAX_NDIM),
        lambda head, size: read_header(head, size, source=source, max_pixels=max_pixels),
    )
    return decode_kvq(data, source=source, max_pixels=max_pixels)
