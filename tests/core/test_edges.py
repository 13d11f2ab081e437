"""The edges of the input space: extreme integers, array-likes, parameter bounds."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import FewColorsWarning, quantize


@pytest.mark.parametrize(
    ("dtype", "top"), [(np.int64, 2**63 - 1), (np.uint64, 2**64 - 1), (np.uint32, 2**32 - 1)]
)
def test_integer_extremes_stay_exact(dtype, top):
    image = np.full((6, 6, 3), top, dtype=dtype)
    image[0, 0] = 0
    with pytest.warns(FewColorsWarning):
        q = quantize(image, 4)
    assert q.palette.dtype == dtype
    assert sorted(q.palette[:, 0].tolist()) == [0, top]  # no wrap-around to 0 or -2**63
    assert q.distortion == 0.0
    assert np.array_equal(q.reconstruction, image)


def test_means_near_the_top_of_int64_clip_instead_of_wrapping():
    rng = np.random.default_rng(0)
    image = rng.integers(2**62, 2**63 - 1, size=(16, 16, 3), dtype=np.int64)
    image[0] = 2**63 - 1
    q = quantize(image, 4)
    assert q.palette.min() >= 2**62 - 2**12  # float64 rounding, never a negative wrap
    assert q.palette.max() <= 2**63 - 1


def test_array_likes_numpy_accepts(ihc_crop):
    assert np.array_equal(quantize(memoryview(ihc_crop), 4).labels, quantize(ihc_crop, 4).labels)
    with pytest.raises(TypeError, match="numpy array"):
        quantize(ihc_crop.tolist(), 4)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("n_init", 10**9, "n_init must be 'auto' or from 1 to 1,000"),
        ("n_init", 0, "n_init must be"),
        ("max_iter", 10**7, "max_iter must be from 1 to 1,000,000"),
        ("effort", 11, "effort must be from 1 to 10"),
        ("n_threads", 0, "n_threads"),
        ("tol", -1.0, "tol must be"),
    ],
)
def test_every_parameter_has_a_bound(ihc_crop, option, value, match):
    with pytest.raises(ValueError, match=match):
        quantize(ihc_crop, 4, **{option: value})
