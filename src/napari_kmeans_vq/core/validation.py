"""Checks on what callers pass in, with errors that say what was wrong and what is accepted."""

from __future__ import annotations

import numbers

import numpy as np

from .._limits import MAX_CHANNELS, MAX_COLORS, MAX_FIT_COLORS, MAX_FLOAT_MAGNITUDE


def check_int(value, name: str) -> int:
    """Return ``value`` as an int, or raise TypeError if it is not an integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
    return int(value)


def check_positive_int(value, name: str) -> int:
    value = check_int(value, name)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}.")
    return value


def check_n_colors(n_colors, *, fit: bool = True) -> int:
    """K: an integer in [1, MAX_FIT_COLORS] for a fit, [1, MAX_COLORS] for a given palette."""
    n_colors = check_int(n_colors, "n_colors")
    if fit and not 1 <= n_colors <= MAX_FIT_COLORS:
        raise ValueError(
            f"n_colors must be between 1 and {MAX_FIT_COLORS:,} for a k-means fit, got "
            f"{n_colors:,}; a palette of up to {MAX_COLORS:,} colours can be used as it is "
            "with Codebook.from_palette."
        )
    if not 1 <= n_colors <= MAX_COLORS:
        raise ValueError(
            f"n_colors must be between 1 and {MAX_COLORS:,} (labels are stored as uint8 or "
            f"uint16), got {n_colors:,}."
        )
    return n_colors


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value.lower()


def is_chunked(image) -> bool:
    """A dask or zarr array (a numpy array is never chunked); checked without importing them."""
    return type(image).__module__.split(".")[0] in ("dask", "zarr")


def check_image(image, *, channel_axis: int | None = -1, name: str = "image") -> np.ndarray:
    """Validate an image and return it as an array with the colour axis last.

    The returned array may be a view of the caller's data: callers must not write to it.
    With ``channel_axis=None`` the image is scalar and a length-1 colour axis is appended.
    """
    if isinstance(image, list | tuple):
        raise TypeError(
            f"{name} must be a numpy array (or array-like of numbers), got a "
            f"{type(image).__name__}; for several images use Codebook.fit([...])."
        )
    if is_chunked(image):
        raise TypeError(
            f"{name} is a chunked {type(image).__module__.split('.')[0]} array, which this "
            "in-memory path would load whole. Use napari_kmeans_vq.quantize(image, K) or "
            "napari_kmeans_vq.large.fit_codebook / encode, which work block by block."
        )
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(
            f"{name} must have an integer or floating-point dtype (uint8, uint16, float32, "
            f"float64, ...), got dtype {arr.dtype}."
        )
    if channel_axis is None:
        if arr.ndim < 1:
            raise ValueError(f"{name} must have at least one axis, got a scalar.")
        arr = arr[..., np.newaxis]
    else:
        channel_axis = check_int(channel_axis, "channel_axis")
        if arr.ndim < 2:
            raise ValueError(
                f"{name} has no colour axis: shape {arr.shape}. Pass an array of shape "
                f"(..., C) with the colour axis last, or channel_axis=None for a scalar image."
            )
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image with {arr.ndim} axes."
            )
        arr = np.moveaxis(arr, channel_axis, -1)
        if arr.shape[-1] > MAX_CHANNELS:
            raise ValueError(
                f"{name} has no colour axis: its colour axis (axis {channel_axis}) has "
                f"{arr.shape[-1]} entries, more than the {MAX_CHANNELS} accepted. For a "
                f"grayscale or scalar image pass channel_axis=None; for RGB use shape (..., 3)."
            )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs at least one pixel.")
    check_values(arr, name)
    return arr


def check_values(arr: np.ndarray, name: str = "image") -> None:
    """Values the engine takes: integers not negative; floats finite and at most
    ``MAX_FLOAT_MAGNITUDE`` in magnitude (larger ones would overflow squared errors)."""
    if np.issubdtype(arr.dtype, np.floating) and arr.size:
        if not np.isfinite(arr).all():
            raise ValueError(
                f"{name} contains NaN or infinite values; only finite values can be quantized."
            )
        top = max(float(arr.max()), -float(arr.min()))  # (no copy of the image)
        if top > MAX_FLOAT_MAGNITUDE:
            raise ValueError(
                f"{name} has values as large as {top:.3g}: squared errors would overflow "
                f"float64. Accepted: magnitudes up to {MAX_FLOAT_MAGNITUDE:g}; rescale the "
                "image (for example to 0 .. 1)."
            )
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise ValueError(f"{name} has negative values; integer images must be non-negative.")


def check_mask(mask, shape: tuple, name: str = "mask") -> np.ndarray:
    """A boolean mask of ``shape`` (True: pixels to segment) that selects some pixels."""
    arr = np.asarray(mask)
    if arr.dtype != bool:
        raise TypeError(
            f"{name} must be a boolean array (True for the pixels to segment), got dtype "
            f"{arr.dtype}; from a labels layer use `labels > 0`."
        )
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} has shape {arr.shape}, but the image without its colour axis has shape "
            f"{tuple(shape)}; they must match."
        )
    if not arr.any():
        raise ValueError(f"{name} selects no pixels: nothing to segment.")
    return arr
