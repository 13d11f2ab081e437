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
from ._atomic import atomic_write
from .data import KVQData, KVQError, check_labels_palette

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
    names : sequence of str, optional
        Class names, stored with the palette.
    pixel_size : float, optional
        Pixel size in micrometres, stored as the TIFF resolution (pixels per centimetre).
    compression : str, default "zlib"
        tifffile's compression (``None`` for none).
    """
    import tifffile

    labels, palette = check_labels_palette(labels, palette)
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


def read_labels_tiff(path) -> KVQData:
    """Read a labels TIFF: the indices and the palette (exact when we wrote the file).

    A palette TIFF from elsewhere gives its colour map as an 8-bit RGB palette; any other
    TIFF is refused with :class:`KVQError`.
    """
    import tifffile

    try:
        with tifffile.TiffFile(os.fspath(path)) as tif:
            page = tif.pages[0]
            labels = tif.asarray()
            description = page.description
            colormap = page.colormap
            photometric = page.photometric
    except (tifffile.TiffFileError, ValueError) as exc:
        raise KVQError(f"{path}: not a readable TIFF ({exc})") from exc
    ours = _our_metadata(description)
    if ours is not None:
        palette = np.asarray(ours["palette"], dtype=ours["dtype"])
    elif photometric == tifffile.PHOTOMETRIC.PALETTE and colormap is not None:
        k = int(labels.max()) + 1 if labels.size else 1
        palette = np.rint(np.asarray(colormap)[:, :k].T / 257).astype(np.uint8)
    else:
        raise KVQError(f"{path}: a TIFF without a palette is not a labels image")
    if palette.ndim == 1:
        palette = palette[:, None]
    if not 1 <= palette.shape[0] <= MAX_COLORS or (labels.size and labels.max() >= len(palette)):
        raise KVQError(f"{path}: labels and palette do not match")
    extra = {"names": ours.get("names")} if ours else {}
    return KVQData(
        labels=labels.astype(index_dtype(len(palette)), copy=False),
        palette=palette,
        format="tiff",
        version=0,
        file_size=os.path.getsize(path),
        extra=extra,
    )


def _our_metadata(description: str) -> dict | None:
    try:
        parsed = json.loads(description)
    except (TypeError, ValueError):
        return None
    return parsed.get(KEY) if isinstance(parsed, dict) else None


__all__ = ["encode_labels_tiff", "read_labels_tiff", "write_labels_tiff"]
