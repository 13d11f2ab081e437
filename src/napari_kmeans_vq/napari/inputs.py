"""What the user chose, checked: the image layer, K and a mask drawn in napari.

Every mistake is an :class:`InputError` whose message says what is wrong and what to do;
the widget shows it in its status line and a notification, never a traceback.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes

from .._limits import MAX_FIT_COLORS
from ..large import is_lazy_input

__all__ = ["IN_MEMORY_PIXELS", "InputError", "check_k", "check_source", "mask_from_layer"]

# Lazy (dask, zarr, multiscale) results up to this many full-resolution pixels are
# computed in the worker: napari then gets numpy layers (unless multiscale) and the files
# can be measured. Larger ones stay lazy, and their files are not measured.
IN_MEMORY_PIXELS = 1 << 25


class InputError(ValueError):
    """A user's mistake: said in the widget and in a notification, never a traceback."""


def check_source(layer, color_space: str):
    """``(data, channel_axis)`` of a layer that can be quantized, or an :class:`InputError`.

    ``data`` is a numpy array, the layer's own dask or zarr array (left lazy) or the list of
    a multiscale layer's levels; ``channel_axis`` is -1 for RGB(A), None for one channel.
    """
    if layer is None:
        raise InputError(
            "No image layer to quantize. Open an image (File > Open, or File > Open Sample > "
            "K-Means Colour Quantization) and choose it under 'image'."
        )
    if not isinstance(layer, Image):
        raise InputError(
            f"'{layer.name}' is a {layer.__class__.__name__} layer, not an image. Choose an "
            "image layer (RGB, RGBA or single-channel) under 'image'."
        )
    data = list(layer.data) if layer.multiscale else layer.data
    first = data[0] if layer.multiscale else data
    if np.dtype(first.dtype).kind not in "uif":
        raise InputError(
            f"'{layer.name}' holds {first.dtype} values; the quantizer needs integer or "
            "floating-point pixels. Convert the image, or choose another layer."
        )
    if layer.rgb:
        return data, -1
    # napari shows a last axis of 2 as two grey planes; clustering those as scalars would
    # give each pixel two labels. Say so rather than guess.
    if len(first.shape) >= 3 and first.shape[-1] == 2:
        raise InputError(
            f"'{layer.name}' has 2 values per pixel (shape {tuple(first.shape)}); the widget "
            "quantizes RGB, RGBA or single-channel images. To cluster both channels together "
            "call napari_kmeans_vq.quantize(layer.data, K) in the console; to quantize one, "
            "split the layer first (right-click > Split Stack)."
        )
    if color_space != "rgb":
        raise InputError(
            f"'{layer.name}' has no colour axis (it is a single-channel image), and "
            f"'{color_space}' clustering needs RGB colours. Choose colour space 'rgb', or an "
            "RGB layer."
        )
    if not layer.multiscale and not is_lazy_input(data):
        data = np.asarray(data)
    return data, None


def check_k(k) -> int:
    """K as an int in 1 .. MAX_FIT_COLORS, or an :class:`InputError` saying so."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_FIT_COLORS:
        raise InputError(
            f"K = {k!r} is out of range: choose a whole number from 1 to {MAX_FIT_COLORS}."
        )
    return int(k)


def spatial_shape(data, channel_axis) -> tuple[int, ...]:
    """The image's shape without its colour axis (level 0 of a multiscale list)."""
    first = data[0] if isinstance(data, list) else data
    shape = tuple(int(n) for n in first.shape)
    return shape if channel_axis is None else shape[:-1]


def mask_from_layer(layer: Layer, source: Image, shape: tuple[int, ...]) -> np.ndarray:
    """The boolean mask a labels layer (labels > 0) or a shapes layer (inside any shape)
    gives for ``source``, an image of ``shape`` pixels; an :class:`InputError` if none.

    Shapes are taken from their layer's data coordinates to the image's through the world
    (so a shapes layer with another scale or translate still lands on the right pixels)
    and rasterised by napari's ``Shapes.to_masks``.
    """
    if isinstance(layer, Labels):
        data = layer.data[0] if layer.multiscale else layer.data
        if tuple(data.shape) != shape:
            raise InputError(
                f"The mask layer '{layer.name}' has shape {tuple(data.shape)}, but "
                f"'{source.name}' has {shape} pixels (without its colour axis): a mask must "
                "cover the image pixel for pixel. Paint it on the image, or choose another "
                "mask. Nothing was added."
            )
        mask = np.asarray(data) > 0
    elif isinstance(layer, Shapes):
        if layer.ndim != len(shape):
            raise InputError(
                f"The shapes layer '{layer.name}' has {layer.ndim} dimensions, but "
                f"'{source.name}' has {len(shape)}: draw the shapes over the image, or "
                "choose another mask. Nothing was added."
            )
        if layer.nshapes == 0:
            raise InputError(
                f"The shapes layer '{layer.name}' has no shapes: draw the tissue's outline, "
                "or choose another mask."
            )
        vertices = [
            np.array([source.world_to_data(layer.data_to_world(v)) for v in shape_data])
            for shape_data in layer.data
        ]
        drawn = Shapes(vertices, shape_type=list(layer.shape_type))
        mask = np.asarray(drawn.to_masks(mask_shape=shape)).any(axis=0)
    else:
        raise InputError(f"'{layer.name}' is neither a labels nor a shapes layer.")
    if not mask.any():
        raise InputError(
            f"The mask '{layer.name}' selects no pixel of '{source.name}': paint or draw the "
            "tissue over the image, or choose another mask."
        )
    return mask
