"""Inputs larger than memory: dask, zarr and multiscale arrays, opened lazily and blocked.

dask and zarr are imported only when a function here needs them (``pip install
napari-kmeans-vq[large]``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..core.validation import MAX_CHANNELS, check_int, is_chunked

# Pixels per dask block: big enough that per-block overhead is small, small enough that
# a block's keys and sort buffers (about 20 bytes a pixel) stay well under 100 MiB.
BLOCK_PIXELS = 1 << 22


def is_lazy_input(image) -> bool:
    """Whether ``image`` is processed block by block rather than in memory.

    True for dask and zarr arrays and for multiscale images: a list or tuple (or napari's
    ``MultiScaleData``) of arrays, full resolution first. Never imports dask.
    """
    if is_chunked(image):
        return True
    return _is_multiscale(image)


def _is_multiscale(image) -> bool:
    if isinstance(image, str | bytes | np.ndarray) or not isinstance(image, Sequence):
        return False
    return len(image) > 0 and all(hasattr(level, "shape") for level in image)


def open_image(path):
    """Open a zarr array, an OME-Zarr image or a (pyramidal) TIFF without reading pixels.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.zarr`` directory (a plain array, or an OME-Zarr image whose ``multiscales``
        lists its levels) or a ``.tif``/``.tiff`` file, read through tifffile's zarr view.

    Returns
    -------
    zarr array, or list of zarr arrays (full resolution first) for a multiscale image
    """
    import zarr

    path = os.fspath(path)
    if path.lower().endswith((".tif", ".tiff", ".svs", ".ndpi")):
        import tifffile

        node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    else:
        node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Array):
        return node
    multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return [node[d["path"]] for d in multiscales[0]["datasets"]]
    arrays = sorted(node.array_keys())
    if not arrays:
        raise ValueError(f"path {path!r} holds a zarr group with no arrays and no multiscales.")
    levels = sorted((node[k] for k in arrays), key=lambda a: -math.prod(a.shape))
    return levels if len(levels) > 1 else levels[0]


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
