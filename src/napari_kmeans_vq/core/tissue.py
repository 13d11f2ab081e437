"""An automatic tissue mask: what absorbs light, as against the bright glass around it.

Bright-field slides show tissue on white glass. A pixel is tissue when its optical density
summed over R, G and B (Beer-Lambert: every stain adds to it) exceeds a threshold, by
default 0.15: glass is what stays above about 89% of full intensity in every channel (a
grey of 227 of 255). Otsu's threshold of the same sum is no default: on slides with strong
nuclei it splits nuclei from the rest instead of tissue from glass.
"""

from __future__ import annotations

import numpy as np

from .._limits import peak_value
from .colorspace import optical_density
from .validation import check_image

DEFAULT_THRESHOLD = 0.15


def tissue_mask(
    image, threshold: float = DEFAULT_THRESHOLD, *, channel_axis: int = -1
) -> np.ndarray:
    """The pixels of an RGB bright-field image that hold tissue.

    Parameters
    ----------
    image : array, shape (..., 3) (or RGBA, alpha ignored)
        An RGB image, colour axis at ``channel_axis``.
    threshold : float, default 0.15
        Optical density, summed over R, G and B, above which a pixel is tissue; raise it
        (0.2-0.3) to leave out faint tissue or dust, lower it for pale stains.

    Returns
    -------
    ndarray of bool, ``image``'s shape without the colour axis
    """
    arr = check_image(image, channel_axis=channel_axis)
    if arr.shape[-1] not in (3, 4):
        raise ValueError(
            f"a tissue mask needs an RGB image; this one has {arr.shape[-1]} channel(s)."
        )
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"threshold must be a number (an optical density), got {threshold!r}.")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite optical density >= 0, got {threshold!r}.")
    return optical_density(arr[..., :3], peak_value(arr.dtype)).sum(axis=-1) > threshold


__all__ = ["DEFAULT_THRESHOLD", "tissue_mask"]
