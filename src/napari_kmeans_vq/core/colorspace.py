"""Colour spaces for clustering, and a palette's display colours.

* ``"rgb"``: the image's own values.
* ``"lab"`` (CIELAB) and ``"oklab"`` (Ottosson 2020): perceptual spaces, where Euclidean
  distances follow perceived colour differences better than in RGB. Formulas: IEC 61966-2-1
  (sRGB transfer curve), D65 white, CIE 1976 L*a*b*; Oklab's two published matrices.
* ``"od"``: optical density, ``-log10(I / I0)`` per channel (Beer-Lambert: stains add up
  in it).
* ``"hed"``, ``"hdab"``, ``"stains"``: colour deconvolution (Ruifrok and Johnston 2001,
  "Quantification of histochemical staining by color deconvolution"): the optical density
  split into the amounts of each stain, with the paper's hematoxylin, eosin and DAB vectors,
  or the caller's (``stain_vectors``). The third stain, when two are given, is their cross
  product (the residual).

Every space but ``"rgb"`` needs RGB colours; clustering happens there, while the palette,
the reconstruction and J stay in the image's own colours.
"""

from __future__ import annotations

import numpy as np

from .._limits import peak_value

COLOR_SPACES = ("rgb", "lab", "oklab", "od", "hed", "hdab", "stains")
STAIN_SPACES = ("hed", "hdab", "stains")

# Normalised optical-density vectors of Ruifrok and Johnston (2001), also ImageJ's.
HEMATOXYLIN = (0.650, 0.704, 0.286)
EOSIN = (0.072, 0.990, 0.105)
DAB = (0.268, 0.570, 0.776)
STANDARD_STAINS = {
    "hed": ((HEMATOXYLIN, EOSIN), ("hematoxylin", "eosin", "residual")),
    "hdab": ((HEMATOXYLIN, DAB), ("hematoxylin", "DAB", "residual")),
}

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


# Oklab: linear sRGB to LMS, and cube-rooted LMS to Lab (Ottosson 2020).
_RGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_TO_OKLAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)


def _linear(rgb: np.ndarray, space: str) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"{space} needs 3 colour channels (RGB), got {rgb.shape[-1]}.")
    return np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def rgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB values in [0, 1], shape (..., 3), to Oklab (L in [0, 1]).

    Examples
    --------
    >>> rgb_to_oklab(np.array([1.0, 1.0, 1.0])).round(4) + 0.0
    array([1., 0., 0.])
    """
    lms = _linear(rgb, "Oklab") @ _RGB_TO_LMS.T
    return np.cbrt(lms) @ _LMS_TO_OKLAB.T


def optical_density(rgb: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """``-log10(I / peak)`` per channel, with I clipped to [peak / 510, peak]: a black
    8-bit pixel has OD log10(510) = 2.71, white glass 0.

    Examples
    --------
    >>> optical_density(np.array([255, 25.5, 0.0]), peak=255).round(3) + 0.0
    array([0.   , 1.   , 2.708])
    """
    rgb = np.asarray(rgb, dtype=np.float64) / float(peak)
    return -np.log10(np.clip(rgb, 1 / 510, 1.0))


def stain_matrix(vectors) -> np.ndarray:
    """Stain optical-density vectors as a 3 x 3 matrix of unit rows (OD = amounts @ M).

    Two vectors are completed by their normalised cross product (the residual channel).

    Raises
    ------
    ValueError
        Not 2 or 3 vectors of 3 finite, non-negative numbers, or vectors that are zero or
        (nearly) linearly dependent, so that amounts cannot be solved for.
    """
    try:
        m = np.array(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "stain_vectors must be 2 or 3 optical-density vectors of 3 numbers (R, G, B)."
        ) from None
    if m.ndim != 2 or m.shape[0] not in (2, 3) or m.shape[1] != 3:
        raise ValueError(
            "stain_vectors must be 2 or 3 optical-density vectors of 3 numbers (R, G, B), "
            f"got shape {m.shape}."
        )
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("stain_vectors must be finite and non-negative (optical densities).")
    norms = np.linalg.norm(m, axis=1)
    if (norms == 0).any():
        raise ValueError("stain_vectors: a stain vector is zero.")
    m = m / norms[:, np.newaxis]
    if m.shape[0] == 2:
        third = np.cross(m[0], m[1])
        size = np.linalg.norm(third)
        if size < 1e-6:
            raise ValueError("stain_vectors: the two stains have the same colour (singular).")
        m = np.vstack([m, third / size])
    if np.linalg.cond(m) > 1e6:
        raise ValueError(
            "stain_vectors are linearly dependent (singular): amounts of each "
            "stain cannot be told apart. Choose stains of different colours."
        )
    return m


def stain_space(space: str, stain_vectors=None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The stain matrix and the stains' names of a stain space."""
    if space == "stains":
        if stain_vectors is None:
            raise ValueError("color_space='stains' needs stain_vectors (2 or 3 OD vectors).")
        m = stain_matrix(stain_vectors)
        names = tuple(f"stain {i + 1}" for i in range(len(np.atleast_2d(stain_vectors))))
        return m, names + (("residual",) if len(names) == 2 else ())
    vectors, names = STANDARD_STAINS[space]
    return stain_matrix(vectors if stain_vectors is None else stain_vectors), names


def stain_amounts(rgb: np.ndarray, matrix: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Each stain's amount (optical density along its vector) of RGB colours (..., 3)."""
    return optical_density(rgb, peak) @ np.linalg.inv(matrix)


def to_space(colors: np.ndarray, space: str, peak: float, stain_vectors=None) -> np.ndarray:
    """Colours (M, C) in the image's dtype -> float64 points (M, D) in ``space``."""
    if space == "rgb":
        return np.asarray(colors, dtype=np.float64)
    if colors.shape[-1] != 3:
        raise ValueError(
            f"color_space={space!r} needs RGB colours, got {colors.shape[-1]} channels."
        )
    if space == "lab":
        return rgb_to_lab(colors / peak)
    if space == "oklab":
        return rgb_to_oklab(colors / peak)
    if space == "od":
        return optical_density(colors, peak)
    matrix, _ = stain_space(space, stain_vectors)
    return stain_amounts(colors, matrix, peak)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB values in [0, 1], shape (..., 3), to CIELAB (L in [0, 100]).

    Examples
    --------
    >>> rgb_to_lab(np.array([1.0, 1.0, 1.0])).round(3) + 0.0  # + 0.0 turns -0. into 0.
    array([100.,   0.,   0.])
    """
    xyz = _linear(rgb, "CIELAB") @ _RGB_TO_XYZ.T / _WHITE_D65
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
