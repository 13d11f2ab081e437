"""Sample images: scikit-image's immunohistochemistry slide, and a generated H&E-like tile.

The command line's ``demo`` and napari's File > Open Sample menu both take their images from
here. scikit-image is optional (``pip install napari-kmeans-vq[samples]``); the generated
tile needs only numpy and scipy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["demo_image", "ihc_image", "stain_patches"]

# Optical densities per unit stain (R, G, B) of haematoxylin and eosin: the usual
# colour-deconvolution vectors (Ruifrok and Johnston), unit length.
_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])

#: What to install for :func:`ihc_image`.
SAMPLES_EXTRA = "pip install 'napari-kmeans-vq[samples]'"


def ihc_image() -> np.ndarray:
    """scikit-image's immunohistochemistry image (512 x 512 RGB uint8).

    A colon tissue slide stained with haematoxylin (blue nuclei) and DAB (brown), about
    45,000 distinct colours: the project's standard test image.

    Raises
    ------
    ImportError
        scikit-image is not installed.
    """
    from skimage.data import immunohistochemistry

    return immunohistochemistry()


def demo_image() -> tuple[np.ndarray, str, str | None]:
    """The built-in sample: the immunohistochemistry slide, or a generated tile without
    scikit-image.

    Returns
    -------
    image : ndarray, uint8 RGB
    name : str
        ``"ihc"``, or ``"generated"`` for the fallback.
    note : str or None
        Says when, and why, the fallback was used.
    """
    try:
        return ihc_image(), "ihc", None
    except ImportError:
        size = 256
        return (
            stain_patches(size),
            "generated",
            f"scikit-image is not installed ({SAMPLES_EXTRA}); using a generated "
            f"{size} x {size} stain-like image instead",
        )


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    from scipy.ndimage import zoom

    coarse = rng.random((shape[0] // cell + 2, shape[1] // cell + 2))
    field = zoom(coarse, cell, order=1)[: shape[0], : shape[1]]
    return (field - field.min()) / max(np.ptp(field), 1e-12)


def stain_patches(size: int = 512, seed: int = 0) -> np.ndarray:
    """A generated H&E-like tile: eosin-pink stroma, haematoxylin nuclei, white lumens.

    Colours follow the Beer-Lambert law, ``I = 255 exp(-(h H + e E))``, with stain amounts
    ``h`` and ``e`` that vary smoothly, so the image has thousands of distinct colours on a
    few stain mixtures, as real slides do. Deterministic for a given ``size`` and ``seed``.

    Parameters
    ----------
    size : int, default 512
        Height and width in pixels.
    seed : int, default 0

    Returns
    -------
    ndarray, shape (size, size, 3), uint8

    Examples
    --------
    >>> from napari_kmeans_vq.io.samples import stain_patches
    >>> tile = stain_patches(64)
    >>> tile.shape, tile.dtype.name
    ((64, 64, 3), 'uint8')
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)

    eosin = 0.2 + 0.45 * _smooth_field(rng, shape, max(size // 8, 2))
    haem = 0.05 * _smooth_field(rng, shape, max(size // 32, 2))

    # Nuclei: dark, slightly elongated blobs with soft edges.
    n_nuclei = max(size * size // 2500, 1)
    centres = rng.random((n_nuclei, 2)) * size
    radii = rng.uniform(0.008, 0.02, size=(n_nuclei, 2)) * size
    strength = rng.uniform(0.8, 1.6, size=n_nuclei)
    for (cy, cx), (ry, rx), s in zip(centres, radii, strength, strict=True):
        y0, y1 = int(max(cy - 3 * ry, 0)), int(min(cy + 3 * ry + 1, size))
        x0, x1 = int(max(cx - 3 * rx, 0)), int(min(cx + 3 * rx + 1, size))
        d2 = ((yy[y0:y1, x0:x1] - cy) / ry) ** 2 + ((xx[y0:y1, x0:x1] - cx) / rx) ** 2
        haem[y0:y1, x0:x1] += s / (1.0 + np.exp(6.0 * (d2 - 1.0)))

    # Lumens: a few empty (white) regions where both stains fade out.
    lumen = np.ones(shape)
    for _ in range(max(size // 128, 1)):
        cy, cx = rng.random(2) * size
        r = rng.uniform(0.05, 0.12) * size
        d = np.hypot(yy - cy, xx - cx) / r
        lumen *= 1.0 / (1.0 + np.exp(-14.0 * (d - 1.0)))

    density = (haem * lumen)[..., None] * _HAEMATOXYLIN + (eosin * lumen)[..., None] * _EOSIN
    density += rng.normal(0.0, 0.015, size=density.shape)  # grain, as a scanner adds
    image = 255.0 * np.exp(-np.clip(density, 0.0, None))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
