"""Colour spaces: for clustering, the input's own (``"rgb"``) or CIELAB (``"lab"``); for
display, a palette's RGBA colours.

CIELAB is the classic space for segmenting stained tissue by colour: Euclidean distances
there follow perceived colour differences better than in RGB. Formulas: IEC 61966-2-1
(sRGB transfer curve), D65 white, CIE 1976 L*a*b*.
"""

from __future__ import annotations

import numpy as np

from .._limits import peak_value

# sRGB (linear) to CIE XYZ, D65 white point.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_EPSILON = 216 / 24389
_KAPPA = 24389 / 27


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB values in [0, 1], shape (..., 3), to CIELAB (L in [0, 100]).

    Examples
    --------
    >>> rgb_to_lab(np.array([1.0, 1.0, 1.0])).round(3) + 0.0  # + 0.0 turns -0. into 0.
    array([100.,   0.,   0.])
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"CIELAB needs 3 colour channels (RGB), got {rgb.shape[-1]}.")
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE_D65
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def palette_rgba(palette: np.ndarray, dtype=None) -> np.ndarray:
    """Display colours of a palette: RGBA floats in [0, 1], shape (K, 4).

    Parameters
    ----------
    palette : array_like, shape (K, C)
        Codewords in the image's dtype. C = 3 (RGB) or 4 (RGBA, alpha kept) give their own
        colour; C = 1 gives grey; any other C gives the grey of the channel mean.
    dtype : dtype, optional
        The image's dtype, which sets full intensity (255 for uint8, 65,535 for uint16, 1.0
        for floats, whose values are clipped to [0, 1]). Defaults to the palette's dtype.

    Returns
    -------
    ndarray, shape (K, 4), float64
        For uint8 palettes exactly ``palette / 255`` with alpha 1.
    """
    palette = np.asarray(palette)
    if palette.ndim == 1:
        palette = palette[:, None]
    if palette.ndim != 2:
        raise ValueError(f"palette must have shape (K, C), got {palette.shape}")
    peak = peak_value(palette.dtype if dtype is None else dtype)
    values = np.clip(palette.astype(np.float64) / peak, 0.0, 1.0)
    rgba = np.ones((palette.shape[0], 4), dtype=np.float64)
    channels = palette.shape[1]
    if channels in (3, 4):
        rgba[:, :channels] = values
    else:
        rgba[:, :3] = values.mean(axis=1, keepdims=True)
    return rgba
