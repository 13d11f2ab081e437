"""The facts every layer shares, written once: K limit, channel limit, label dtypes, peaks."""

from __future__ import annotations

import numpy as np

# Codes are stored as uint8 or uint16, so K stops at 2**16 (palettes, files, labels).
MAX_COLORS = 65_536
# The k-means fit's seeding and centre geometry grow as K times the colours and K * K: at
# K = 4,096 a fit takes minutes on a megapixel photo (docs/benchmarks.md); larger palettes
# can be given as they are (Codebook.from_palette).
MAX_FIT_COLORS = 4_096
MAX_CHANNELS = 16
# Float images: squared errors summed over MAX_CHANNELS channels must stay finite in
# float64 (J, PSNR), which (2 * 1e150)**2 * 16 does, far from float64's 1.8e308.
MAX_FLOAT_MAGNITUDE = 1e150


def index_dtype(n_colors: int) -> np.dtype:
    """The dtype of codeword indices ``0 .. K - 1``: uint8 up to K = 256, else uint16."""
    return np.dtype(np.uint8) if n_colors <= 256 else np.dtype(np.uint16)


def label_dtype(n_colors: int) -> np.dtype:
    """The dtype of labels ``1 .. K`` (label = index + 1, 0 left for background).

    K = 255 still fits uint8, K = 256 needs uint16 and K = 65,536 needs uint32: this is the
    dtype of napari labels layers and OME-Zarr labels.
    """
    if n_colors <= 255:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if n_colors <= 65_535 else np.dtype(np.uint32)


def peak_value(dtype) -> float:
    """Full intensity of a dtype: 255 for uint8, 65535 for uint16, 1.0 for floats."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0
