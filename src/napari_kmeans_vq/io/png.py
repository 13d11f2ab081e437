"""Indexed (palette) PNG: a 2D K-colour image any image viewer opens.

A PNG of colour type 3 stores one palette index per pixel at a bit depth of 1, 2, 4 or 8,
the palette in a ``PLTE`` chunk (8-bit RGB, at most 256 entries) and, for RGBA palettes, the
alphas in a ``tRNS`` chunk. Pillow writes and decodes the files: given a palette of exactly
K entries it writes ``PLTE`` with K entries at the smallest depth that holds them. Before
Pillow decodes a file, this module checks its structure and sizes itself (see
:func:`decode_indexed_png`), so a hostile file is refused with :class:`KVQError`.

A ``tEXt`` chunk with keyword ``napari-kmeans-vq`` records ``{"n_colors": K, "channels": C}``
so that one-channel (grey) and RGBA palettes come back with their own number of channels,
and ``"names"`` when the classes are named.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zlib

import numpy as np

from .._limits import index_dtype
from ._read import open_regular, read_checked
from .data import KVQData, KVQError, check_labels_palette, fail
from .kvq import DEFAULT_LEVEL, check_class_metadata
from .limits import check_pixels, parse_json

__all__ = [
    "PNG_SIGNATURE",
    "TEXT_KEY",
    "decode_indexed_png",
    "encode_indexed_png",
    "png_bit_depth",
    "read_indexed_png",
    "read_png_header",
    "smallest_bit_depth",
    "written_here",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_KEY = "napari-kmeans-vq"
_MAX_SIDE = 2**31 - 1  # PNG's own limit on width and height
_MAX_INFLATE_RATIO = 1100
#: The text chunk's entries that describe the file itself, not its classes.
_FORMAT_KEYS = ("n_colors", "channels", "scalar")
_INFLATE_SLACK = 1 << 16


def smallest_bit_depth(n_colors: int) -> int:
    """The smallest PNG palette bit depth (1, 2, 4 or 8) that holds ``n_colors`` indices."""
    n_colors = int(n_colors)
    if not 1 <= n_colors <= 256:
        raise ValueError(f"an indexed PNG holds 1 to 256 colours, got n_colors = {n_colors}")
    for depth in (1, 2, 4, 8):
        if n_colors <= 1 << depth:
            return depth
    raise AssertionError  # pragma: no cover


def _check_png_input(labels, palette) -> tuple[np.ndarray, np.ndarray]:
    labels, palette = check_labels_palette(labels, palette)
    if labels.ndim != 2:
        raise ValueError(
            f"an indexed PNG is 2D: labels must have shape (height, width), got {labels.shape}"
        )
    if max(labels.shape) > _MAX_SIDE:
        raise ValueError(f"PNG sides are at most 2**31 - 1 pixels, got {labels.shape}")
    if palette.shape[0] > 256:
        raise ValueError(
            f"an indexed PNG holds at most 256 colours, got a palette of {palette.shape[0]}"
        )
    if palette.dtype != np.uint8:
        raise ValueError(
            f"an indexed PNG stores 8-bit colours; palette dtype must be uint8, got "
            f"{palette.dtype} (use the .kvq format for other dtypes)"
        )
    if palette.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"an indexed PNG stores grey, RGB or RGBA colours: palette must have 1, 3 or 4 "
            f"channels, got {palette.shape[1]}"
        )
    return labels, palette


def _encode(
    labels: np.ndarray, palette: np.ndarray, level: int, scalar: bool, metadata: dict
) -> bytes:
    """Pillow writes the file: mode "P", PLTE of exactly K entries (so the depth is the
    smallest that holds K), tRNS for RGBA palettes, our text chunk, one deflate."""
    from PIL import Image, PngImagePlugin

    height, width = labels.shape
    k, channels = palette.shape
    image = Image.frombytes("P", (width, height), labels.astype(np.uint8, copy=False).tobytes())
    rgb = palette if channels != 1 else np.repeat(palette, 3, axis=1)
    image.putpalette(np.ascontiguousarray(rgb[:, :3]).tobytes(), rawmode="RGB")
    info = {**metadata, "n_colors": int(k), "channels": int(channels)}
    if scalar:
        info["scalar"] = True
    # ASCII JSON (non-Latin names as \u escapes): tEXt is Latin-1 by the PNG standard.
    text = PngImagePlugin.PngInfo()
    text.add_text(TEXT_KEY, json.dumps(info, sort_keys=True, ensure_ascii=True))
    options: dict = {"compress_level": int(level), "pnginfo": text}
    if channels == 4:
        options["transparency"] = np.ascontiguousarray(palette[:, 3]).tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def encode_indexed_png(
    labels,
    palette,
    *,
    bit_depth: int | str = "auto",
    level: int = DEFAULT_LEVEL,
    scalar: bool = False,
    metadata: dict | None = None,
) -> bytes:
    """Encode a 2D K-colour image as the bytes of an indexed PNG (written by Pillow).

    Parameters
    ----------
    labels : ndarray of int, shape (height, width)
        Palette index per pixel, ``0 .. K-1``.
    palette : ndarray of uint8, shape (K, C)
        K <= 256 colours; C = 3 (RGB), 4 (RGBA: alphas go to ``tRNS``) or 1 (grey, written
        as R = G = B).
    bit_depth : {"auto", "smallest", 1, 2, 4, 8}, default "auto"
        The file always has the smallest depth that holds K (:func:`smallest_bit_depth`),
        the one Pillow writes for a palette of K entries: ``"auto"`` and ``"smallest"``
        say so, and a number is accepted when it is that depth.
    level : int, default 6
        zlib compression level (0 .. 9; 6 is zlib's default).
    scalar : bool, default False
        The image had no colour axis (one channel): recorded in the text chunk so that
        :func:`decode_indexed_png` gives back the same reconstruction shape.
    metadata : dict, optional
        More entries for the text chunk's JSON, such as ``{"names": [...]}`` (one class
        name per palette entry; :func:`decode_indexed_png` returns them as ``names``).

    Returns
    -------
    bytes

    Raises
    ------
    TypeError, ValueError
        Labels not 2D integer indices below K, a palette that is not uint8 with 1, 3 or 4
        channels, K > 256, a bit depth other than the smallest that holds K, or metadata
        whose names are not one string per class.
    """
    labels, palette = _check_png_input(labels, palette)
    if scalar and palette.shape[1] != 1:
        raise ValueError(f"scalar=True needs a one-channel palette, got C = {palette.shape[1]}")
    smallest = smallest_bit_depth(palette.shape[0])
    if bit_depth not in ("auto", "smallest"):
        if bit_depth not in (1, 2, 4, 8) or isinstance(bit_depth, bool):
            raise ValueError(
                f"bit_depth must be 'auto', 'smallest', 1, 2, 4 or 8, got {bit_depth!r}"
            )
        if bit_depth < smallest:
            raise ValueError(
                f"bit_depth {bit_depth} cannot hold {palette.shape[0]} colours; use "
                f"{smallest} or 'auto'"
            )
        if bit_depth != smallest:
            raise ValueError(
                f"bit_depth {bit_depth}: the PNG writer (Pillow) stores {palette.shape[0]} "
                f"colours at {smallest} bits, the smallest depth that holds them; use "
                f"{smallest} or 'auto'"
            )
    metadata = check_class_metadata(dict(metadata or {}), palette.shape[0], error=ValueError)
    return _encode(labels, palette, level, scalar, metadata)


def png_bit_depth(data) -> int:
    """The bit depth byte of a PNG's ``IHDR`` chunk (the first chunk), read from the bytes."""
    data = bytes(data[:33])
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise KVQError("not a PNG file (no signature and IHDR chunk)")
    return data[24]


#: Bytes of a PNG up to the end of its IHDR chunk: all :func:`read_png_header` needs.
PNG_HEAD = 33


def read_png_header(head, size: int | None = None, *, source=None, max_pixels=None) -> tuple:
    """Check an indexed PNG's signature and ``IHDR`` chunk from its first 33 bytes.

    Width, height, bit depth and colour type are checked, and the pixels against the
    limit, before anything else of the file is read. Returns ``(width, height, depth,
    interlace)``.
    """
    head = bytes(head[:PNG_HEAD])
    if head[:8] != PNG_SIGNATURE:
        raise fail("not a PNG file (wrong signature)", source)
    if len(head) < PNG_HEAD or (size is not None and size < PNG_HEAD):
        raise fail("truncated: shorter than a PNG signature and IHDR chunk", source)
    (length,) = struct.unpack_from(">I", head, 8)
    if head[12:16] != b"IHDR" or length != 13:
        raise fail("the first chunk is not a 13-byte IHDR", source)
    (crc,) = struct.unpack_from(">I", head, 29)
    if zlib.crc32(head[12:29]) != crc:
        raise fail("CRC mismatch in the 'IHDR' chunk", source)
    width, height, depth, color_type, _compression, _filter, interlace = struct.unpack_from(
        ">IIBBBBB", head, 16
    )
    if color_type != 3:
        raise fail(f"not an indexed (palette) PNG: colour type {color_type}", source)
    if depth not in (1, 2, 4, 8):
        raise fail(f"invalid palette bit depth {depth}", source)
    if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
        raise fail(f"invalid size {width} x {height}", source)
    check_pixels(width * height, max_pixels, source=source, what=f"{width} x {height}")
    return width, height, depth, interlace


def _chunks(view: memoryview, source):
    """Yield (type, body) of each chunk, checking lengths and CRCs."""
    pos, size = 8, len(view)
    while pos < size:
        if pos + 8 > size:
            raise fail("truncated chunk header", source)
        (length,) = struct.unpack_from(">I", view, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if length > 2**31 - 1 or end > size:
            raise fail(f"truncated {kind!r} chunk", source)
        body = view[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", view, pos + 8 + length)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise fail(f"CRC mismatch in the {kind.decode('latin-1')!r} chunk", source)
        yield kind, body
        if kind == b"IEND":
            return
        pos = end
    raise fail("truncated: no IEND chunk", source)


def decode_indexed_png(data, *, source=None, max_pixels: int | None = None) -> KVQData:
    """Decode an indexed PNG into codeword indices and a palette.

    Parameters
    ----------
    data : bytes-like
        The whole file.
    source : str, optional
        Named in error messages.
    max_pixels : int, optional
        Refuse images with more pixels than this; default
        :data:`napari_kmeans_vq.io.limits.MAX_PIXELS` (2**28 unless changed).

    Returns
    -------
    KVQData
        ``labels`` (uint8 when K <= 256) and ``palette`` (uint8, K rows; C from the
        ``napari-kmeans-vq`` text chunk, else 3, or 4 when the PNG has a ``tRNS`` chunk),
        and ``names`` when the text chunk has them.

    Raises
    ------
    KVQError
        Not a PNG, not a palette PNG, damaged (bad CRC, truncated, inflates wrongly), larger
        than the limits, metadata that is not small, shallow JSON, or an index beyond the
        palette.
    """
    view = memoryview(data).cast("B")
    width, height, depth, interlace = read_png_header(
        view[:PNG_HEAD], len(view), source=source, max_pixels=max_pixels
    )
    plte = trns = None
    text: dict = {}
    idat_bytes = 0
    for index, (kind, body) in enumerate(_chunks(view, source)):
        if kind == b"IHDR":
            if index:
                raise fail("more than one IHDR chunk", source)
        elif kind == b"PLTE":
            plte = bytes(body)
        elif kind == b"tRNS":
            trns = bytes(body)
        elif kind == b"IDAT":
            idat_bytes += len(body)
        elif kind == b"tEXt":
            key, _, value = bytes(body).partition(b"\0")
            if key == TEXT_KEY.encode("latin-1"):
                text = parse_json(
                    value,
                    source=source,
                    what="the napari-kmeans-vq text chunk",
                    encoding="latin-1",
                )
                if not isinstance(text, dict):
                    raise fail("unreadable napari-kmeans-vq text chunk", source)
    # The scanlines' size without interlacing: interlaced images need a little more, so
    # this is a bound that holds for both.
    raw = height * (1 + (width * depth + 7) // 8)
    if raw > _MAX_INFLATE_RATIO * idat_bytes + _INFLATE_SLACK:
        raise fail(f"declares {raw} bytes of scanlines, more than its IDAT can hold", source)
    if plte is None or not plte or len(plte) % 3 or len(plte) > 768:
        raise fail("missing or invalid PLTE chunk", source)
    k = len(plte) // 3
    channels = text.get("channels", 4 if trns is not None else 3)
    scalar = text.get("scalar", False) is True
    if channels not in (1, 3, 4) or text.get("n_colors", k) != k or (scalar and channels != 1):
        raise fail(
            f"the napari-kmeans-vq text chunk {_short(text)} disagrees with the PLTE chunk of "
            f"{k} colours",
            source,
        )
    if trns is not None and len(trns) > k:
        raise fail("tRNS chunk is longer than the palette", source)
    check_class_metadata(text, k, source=source)
    metadata = {key: v for key, v in text.items() if key not in _FORMAT_KEYS}

    from PIL import Image, PngImagePlugin

    try:
        with warnings.catch_warnings():
            # The pixel count was checked against our own limit above: Pillow's own check
            # (in Image.open) is not asked again, so one documented limit applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with PngImagePlugin.PngImageFile(io.BytesIO(view)) as im:
                if im.mode != "P":
                    raise fail(f"not an indexed PNG (Pillow mode {im.mode})", source)
                im.load()
                indices = np.asarray(im)
    except KVQError:
        raise
    except Exception as exc:  # Pillow signals damage with many types; one type out
        raise fail(f"cannot decode the image data: {exc}", source) from None
    if indices.shape != (height, width):
        raise fail(f"decoded shape {indices.shape} is not {height} x {width}", source)
    if int(indices.max()) >= k:
        raise fail(f"an index is {int(indices.max())}, not below K = {k}", source)

    rgb = np.frombuffer(plte, dtype=np.uint8).reshape(k, 3)
    if channels == 1:
        if not (np.array_equal(rgb[:, 0], rgb[:, 1]) and np.array_equal(rgb[:, 0], rgb[:, 2])):
            raise fail("a one-channel palette must be grey (R = G = B)", source)
        palette = rgb[:, :1].copy()
    elif channels == 3:
        palette = rgb.copy()
    else:
        alpha = np.full(k, 255, dtype=np.uint8)
        if trns is not None:
            alpha[: len(trns)] = np.frombuffer(trns, dtype=np.uint8)
        palette = np.concatenate([rgb, alpha[:, None]], axis=1)
    return KVQData(
        labels=indices.astype(index_dtype(k), copy=False),
        palette=palette,
        scalar=scalar,
        format="png",
        version=0,
        deflated=True,
        file_size=len(view),
        payload_bytes=idat_bytes,
        bit_depth=depth,
        names=metadata.get("names"),
        extra={"interlaced": bool(interlace), **({"metadata": metadata} if metadata else {})},
    )


#: Bytes of a PNG's start that :func:`written_here` looks through for our text chunk.
_SNIFF = 1 << 16


def written_here(path) -> bool:
    """Whether ``path`` is an indexed PNG with this package's text chunk (one that
    :func:`encode_indexed_png` wrote), told from its first 64 KiB: the signature, an
    IHDR of colour type 3, and a ``napari-kmeans-vq`` ``tEXt`` chunk before the first
    IDAT. Never raises for a bad or unreadable file: it is simply not ours."""
    try:
        with open_regular(path) as handle:
            head = handle.read(_SNIFF)
    except (OSError, KVQError):
        return False
    if len(head) < PNG_HEAD or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return False
    if head[25] != 3:  # colour type: palette
        return False
    key = TEXT_KEY.encode("latin-1") + b"\0"
    pos = 8
    while pos + 8 <= len(head):
        (length,) = struct.unpack_from(">I", head, pos)
        kind = head[pos + 4 : pos + 8]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind == b"tEXt" and head[pos + 8 : pos + 8 + len(key)] == key:
            return True
        pos += 12 + length
    return False


def read_indexed_png(path, *, max_pixels: int | None = None) -> KVQData:
    """Read an indexed PNG file (see :func:`decode_indexed_png`): a regular file only, its
    signature and ``IHDR`` checked (and the pixels against the limit) before the rest is
    read."""
    source = str(path)
    data = read_checked(
        path,
        PNG_HEAD,
        lambda head, size: read_png_header(head, size, source=source, max_pixels=max_pixels),
    )
    return decode_indexed_png(data, source=source, max_pixels=max_pixels)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
