"""Shared fixtures: real images that ship with the test dependencies, or generated ones."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def ihc() -> np.ndarray:
    """scikit-image's immunohistochemistry slide (512 x 512 RGB uint8, about 45k colours)."""
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.immunohistochemistry()
    image.setflags(write=False)
    return image


@pytest.fixture(scope="session")
def ihc_crop(ihc) -> np.ndarray:
    """A 96 x 128 crop: big enough to be real, small enough for all-pixel scikit-learn fits."""
    return np.ascontiguousarray(ihc[200:296, 150:278])
