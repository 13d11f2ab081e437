"""Labels as a palette-colour TIFF (tifffile), which Fiji, QuPath and any viewer open.

The pixel values are the codeword indices (uint8 for K <= 256, else uint16), and the TIFF
colour map shows each index in its palette colour, so a viewer displays the quantized image
and an analysis tool reads the classes. The exact palette (in the image's own dtype) and the
class names travel in the ImageDescription as JSON, so :func:`read_labels_tiff` gives back
the same codebook. A stack (more than two axes) is written as pages.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from .._limits import MAX_COLORS, index_dtype
from ..core.colorspace import palette_rgba
from ..large.inputs import check_tiff, check_tiff_structure
from ._atomic import atomic_write
from ._read import open_regular
from .data import KVQData, KVQError, check_labels_palette, fail
from .limits import MAX_METADATA_BYTES, as_kvq_error, check_pixels, parse_json, pixel_count

KEY = "napari_kmeans_vq"


def encode_labels_tiff(
    labels, palette, *, names=None, pixel_size: float | None = None, compression="zlib"
) -> bytes:
    """A palette-colour TIFF of the labels, as bytes.

    Parameters
    ----------
    labels : integer array, shape (Y, X) or (..., Y, X)
        Codeword indices ``0 .. K - 1``.
    palette : array, shape (K, C)
        The codewords (any dtype; the colour map shows them as :func:`palette_rgba` does).
    names : sequence of K str, optional
        Class names in codeword order, stored with the palette in the description
        (:func:`read_labels_tiff` returns them as ``names``).
    pixel_size : float, optional
        Pixel size in micrometres, stored as the TIFF resolution (pixels per centimetre).
    compression : str, default "zlib"
        tifffile's compression (``None`` for none).
    """
    import tifffile

    labels, palette = check_labels_palette(labels, palette)
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != palette.shape[0]:
            raise ValueError(
                f"names: expected {palette.shape[0]}, one per class, got {len(names)}."
            )
    if labels.ndim < 2:
        raise ValueError(f"labels must have at least 2 axes (Y, X), got shape {labels.shape}.")
    k = palette.shape[0]
    data = labels.astype(index_dtype(k), copy=False)
    entries = 1 << (8 * data.itemsize)
    colormap = np.zeros((3, entries), dtype=np.uint16)
    colormap[:, :k] = np.rint(palette_rgba(palette)[:, :3].T * 65535).astype(np.uint16)
    description = {
        KEY: {
            "palette": palette.tolist(),
            "dtype": str(palette.dtype),
            "names": list(names) if names is not None else None,
            "pixel_size_um": pixel_size,
        }
    }
    options = {}
    if pixel_size is not None:
        per_cm = 1e4 / float(pixel_size)
        options = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        data.reshape(-1, *data.shape[-2:]) if data.ndim > 2 else data,
        photometric="palette",
        colormap=colormap,
        compression=compression,
        description=json.dumps(description),
        metadata=None,
        **options,
    )
    return buffer.getvalue()


def write_labels_tiff(path, labels, palette, **options) -> None:
    """Write :func:`encode_labels_tiff` to ``path`` atomically."""
    atomic_write(path, encode_labels_tiff(labels, palette, **options))


def read_labels_tiff(path, *, max_pixels: int | None = None) -> KVQData:
    """Read a labels TIFF: the indices and the palette (exact when we wrote the file).

    A palette TIFF from elsewhere gives its colour map as an 8-bit RGB palette; any other
    TIFF is refused. Only a regular file is opened, the pixels the first series declares
    are checked against the limit (``max_pixels``, default
    :data:`napari_kmeans_vq.io.limits.MAX_PIXELS`) before any is read, and the JSON of the
    description is parsed within the metadata limits of :mod:`napari_kmeans_vq.io.limits`.

    Raises
    ------
    KVQError
        Whatever is wrong with the file (``OSError`` only when it cannot be opened).
    """
    source = os.fspath(path)
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            labels, description, colormap, palette_photometric = _read_tiff_labels(
                handle, source, max_pixels
            )
            ours = _our_metadata(description, source)
            if ours is not None:
                palette = _our_palette(ours, source)
            elif palette_photometric and colormap is not None:
                k = int(labels.max()) + 1 if labels.size else 1
                colormap = np.asarray(colormap)
                if colormap.ndim != 2 or colormap.shape[0] != 3 or colormap.shape[1] < k:
                    raise fail("its colour map does not cover the labels", source)
                palette = np.rint(colormap[:, :k].T / 257).astype(np.uint8)
            else:
                raise fail("a TIFF without a palette is not a labels image", source)
        except KVQError:
            raise
        except Exception as exc:  # tifffile and numpy raise many types for a damaged file
            raise as_kvq_error(exc, source, "not a readable TIFF") from None
    if palette.ndim == 1:
        palette = palette[:, None]
    if not 1 <= palette.shape[0] <= MAX_COLORS or (labels.size and labels.max() >= len(palette)):
        raise fail("labels and palette do not match", source)
    names = ours.get("names") if ours else None
    if names is not None and (
        not isinstance(names, list)
        or len(names) != len(palette)
        or not all(isinstance(n, str) for n in names)
    ):
        raise fail("the class names in the TIFF description are not one string per class", source)
    extra = {"names": names} if ours else {}
    return KVQData(
        labels=labels.astype(index_dtype(len(palette)), copy=False),
        palette=palette,
        format="tiff",
        version=0,
        file_size=size,
        names=names,
        extra=extra,
    )


def written_here(path) -> bool:
    """Whether ``path`` is a palette TIFF that :func:`encode_labels_tiff` wrote: its first
    page is a palette image whose description holds this package's JSON entry. Only the
    first page's tags are read; never raises for a bad or unreadable file."""
    import logging

    import tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with open_regular(path) as handle, tifffile.TiffFile(handle) as tif:
            page = tif.pages.first
            if page.photometric != tifffile.PHOTOMETRIC.PALETTE:
                return False
            description = page.description or ""
            if len(description) > MAX_METADATA_BYTES or f'"{KEY}"' not in description:
                return False
            return _our_metadata(description, os.fspath(path)) is not None
    except Exception:  # a damaged or foreign file is simply not ours
        return False
    finally:
        logger.setLevel(level)


def _read_tiff_labels(handle, source, max_pixels):
    """The first series' pixels (checked against the limit first), its description, colour
    map and whether it is a palette image."""
    import logging

    import tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # the one-line error says what is wrong
    try:
        check_tiff_structure(handle, os.fstat(handle.fileno()).st_size)
        handle.seek(0)
        with tifffile.TiffFile(handle) as tif:
            if not tif.pages or not tif.series:
                raise fail("not a readable TIFF (no image)", source)
            page = tif.pages.first
            series = tif.series[0]
            dtype = np.dtype(series.dtype)
            if dtype.kind not in "ui" or dtype.itemsize > 4:
                raise fail(f"labels must be 8, 16 or 32-bit integers, not {dtype}", source)
            check_pixels(
                pixel_count(series.shape, channels=False),
                max_pixels,
                source=source,
                what=" x ".join(map(str, series.shape)),
            )
            check_tiff(tif, os.fstat(handle.fileno()).st_size)
            labels = series.asarray()
            palette_photometric = page.photometric == tifffile.PHOTOMETRIC.PALETTE
            return labels, page.description, page.colormap, palette_photometric
    finally:
        logger.setLevel(level)


def _our_metadata(description, source) -> dict | None:
    """This package's entry of the description's JSON, or None when it has none."""
    if not description or not description.lstrip().startswith("{"):
        return None
    try:
        parsed = parse_json(description, source=source, what="the TIFF description")
    except KVQError:
        return None  # not ours: a foreign description that happens to start with "{"
    ours = parsed.get(KEY) if isinstance(parsed, dict) else None
    if ours is not None and not isinstance(ours, dict):
        raise fail(f"the {KEY!r} entry of the TIFF description is not an object", source)
    return ours


def _our_palette(ours: dict, source) -> np.ndarray:
    """The palette recorded in the description, in its dtype (a number dtype only)."""
    try:
        dtype = np.dtype(str(ours.get("dtype")))
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "uif" or dtype.itemsize > 8:
        raise fail(f"the palette's dtype {ours.get('dtype')!r} is not a number type", source)
    try:
        palette = np.asarray(ours.get("palette"), dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise fail(
            f"the palette in the TIFF description is not a table of numbers ({exc})", source
        ) from None
    if palette.ndim not in (1, 2) or (palette.ndim == 2 and not 1 <= palette.shape[1] <= 256):
        raise fail(f"the palette in the TIFF description has shape {palette.shape}", source)
    return palette


__all__ = ["encode_labels_tiff", "read_labels_tiff", "write_labels_tiff", "written_here"]
