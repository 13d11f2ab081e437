"""How much a reader may take on trust: one pixel limit and the metadata bounds, written once.

Every reader of this package (``.kvq``, indexed PNG, TIFF, ``.npy``, zarr read whole, the
command line) checks the pixels an input declares against one limit **before** allocating
anything for them, as Pillow does with ``PIL.Image.MAX_IMAGE_PIXELS``:

``MAX_PIXELS``, default 2**28 = 268,435,456 (a 16,384 x 16,384 image)
    The most pixels decoded into memory. Change it for the process by setting
    ``napari_kmeans_vq.io.limits.MAX_PIXELS`` (or the environment variable
    ``NAPARI_KMEANS_VQ_MAX_PIXELS`` before the package is imported), for one call with
    ``max_pixels=`` (``load``, ``read_image``...), for one command with ``--max-pixels``.
    Larger TIFF and zarr inputs are not refused: they are streamed block by block
    (:func:`napari_kmeans_vq.large.open_image`) and never decoded whole.

Ordinary image files that Pillow reads (PNG, JPEG...) also meet Pillow's own limit (it
refuses more than ``2 * PIL.Image.MAX_IMAGE_PIXELS``, 178,956,970 pixels by default); the
command line's ``--max-pixels`` raises both.

Metadata (the JSON of a PNG text chunk or a TIFF description) is parsed only when it is at
most :data:`MAX_METADATA_BYTES` long and nested at most :data:`MAX_JSON_DEPTH` deep, checked
on the bytes before any parser sees them.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np

from ..large.inputs import MAX_METADATA_BYTES as _LARGE_METADATA_BYTES
from .data import KVQError, fail

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENV_MAX_PIXELS",
    "MAX_JSON_DEPTH",
    "MAX_METADATA_BYTES",
    "MAX_PIXELS",
    "check_pixels",
    "limit_in_force",
    "parse_json",
    "pixel_count",
]

#: The default of :data:`MAX_PIXELS`: 2**28 pixels, a 16,384 x 16,384 image (768 MiB as
#: 8-bit RGB, 256 MiB of labels).
DEFAULT_MAX_PIXELS = 2**28
#: The environment variable read (once, at import) for :data:`MAX_PIXELS`.
ENV_MAX_PIXELS = "NAPARI_KMEANS_VQ_MAX_PIXELS"
#: Metadata longer than this (bytes) is refused unparsed (64 MiB; a K = 65,536 palette of
#: 16 float64 channels as JSON is about 21 MB). The zarr reader
#: (:func:`napari_kmeans_vq.large.open_image`) applies the same bound to metadata files.
MAX_METADATA_BYTES = _LARGE_METADATA_BYTES
#: Deepest nesting of JSON arrays and objects accepted (this package writes at most 4).
MAX_JSON_DEPTH = 32


def _from_environment() -> int:
    text = os.environ.get(ENV_MAX_PIXELS, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        warnings.warn(
            f"{ENV_MAX_PIXELS} must be a positive whole number, got {text!r}; using the "
            f"default, {DEFAULT_MAX_PIXELS:,}",
            RuntimeWarning,
            stacklevel=2,
        )
        return DEFAULT_MAX_PIXELS
    return value


#: The most pixels any reader decodes into memory (see the module's docstring).
MAX_PIXELS: int = _from_environment()


def limit_in_force(value: int | None = None) -> int:
    """The limit in force: ``value`` when given, else :data:`MAX_PIXELS` as set now."""
    limit = MAX_PIXELS if value is None else value
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ValueError(f"max_pixels must be a positive whole number, got {limit!r}")
    return int(limit)


def pixel_count(shape, channels: bool | None = None) -> int:
    """Pixels of an array of ``shape``: the product of its axes without a colour axis.

    ``channels`` says whether the last axis is a colour axis; None guesses as the command
    line does (a last axis of at most 16 entries on an array of 3 or more axes).
    """
    shape = tuple(int(s) for s in shape)
    if channels is None:
        channels = len(shape) >= 3 and shape[-1] <= 16
    return math.prod(shape[:-1] if channels and shape else shape)


def check_pixels(n: int, limit: int | None = None, *, source=None, what: str = "") -> None:
    """Raise :class:`KVQError` when ``n`` pixels exceed the limit, saying how to raise it."""
    limit = limit_in_force(limit)
    if n > limit:
        described = f"{what} = " if what else ""
        raise fail(
            f"declares {described}{n:,} pixels, over the limit of {limit:,} pixels decoded "
            f"into memory; raise it with max_pixels=..., napari_kmeans_vq.io.limits."
            f"MAX_PIXELS, the environment variable {ENV_MAX_PIXELS} or the command line's "
            "--max-pixels",
            source,
        )


_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_BLOCK = 1 << 16


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text, counted without parsing it
    (brackets inside strings do not count), in blocks of 64 KiB: the memory it takes does
    not grow with the text."""
    raw = bytes(raw)
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return raw.count(b"[") + raw.count(b"{")  # an upper bound, and small: enough
    deepest = depth = 0
    inside = 0  # within a string at the end of the previous block
    backslashes = 0  # backslashes ending the previous block
    for start in range(0, len(raw), _BLOCK):
        block = np.frombuffer(
            raw, dtype=np.uint8, count=min(_BLOCK, len(raw) - start), offset=start
        )
        n = block.size
        slash = block == 0x5C
        # Backslashes just before each position: a quote after an odd number is escaped.
        index = np.arange(n, dtype=np.int32)
        last = np.where(slash, np.int32(-1), index)
        np.maximum.accumulate(last, out=last)
        before = np.empty(n, dtype=np.int64)
        before[0] = backslashes
        before[1:] = index[:-1] - last[:-1]
        before[1:][last[:-1] < 0] += backslashes
        quote = (block == 0x22) & (before % 2 == 0)
        parity = np.bitwise_xor.accumulate(quote.view(np.uint8)) ^ np.uint8(inside)
        steps = _STEP[block]
        steps[parity == 1] = 0
        levels = np.cumsum(steps, dtype=np.int64) + depth
        deepest = max(deepest, int(levels.max()))
        depth, inside = int(levels[-1]), int(parity[-1])
        backslashes = int(n - 1 - last[-1]) + (backslashes if last[-1] < 0 else 0)
    return deepest


def parse_json(
    raw,
    *,
    source=None,
    what: str = "metadata",
    encoding: str = "utf-8",
    max_bytes: int | None = None,
):
    """Parse JSON metadata read from a file, within ``max_bytes`` (default
    :data:`MAX_METADATA_BYTES`) and :data:`MAX_JSON_DEPTH`; any failure is a
    :class:`KVQError` naming ``what``."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
        encoding = "utf-8"
    raw = bytes(raw)
    limit = MAX_METADATA_BYTES if max_bytes is None else max_bytes
    if len(raw) > limit:
        raise fail(f"{what} is {len(raw):,} bytes, over the {limit:,} accepted", source)
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise fail(
            f"{what} is nested {depth} deep, more than the {MAX_JSON_DEPTH} accepted", source
        )
    try:
        return json.loads(raw.decode(encoding))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise fail(f"{what} is not valid JSON ({exc})", source) from None


def as_kvq_error(exc: BaseException, source, prefix: str) -> KVQError:
    """Any exception a third-party decoder raised, as one :class:`KVQError` line:
    ``"{source}: {prefix} ({what the exception said})"``."""
    if isinstance(exc, KVQError):
        return exc
    message = " ".join(str(exc).split()) or type(exc).__name__
    if len(message) > 300:
        message = message[:297] + "..."
    return fail(f"{prefix} ({message})", source)
