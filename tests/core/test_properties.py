"""Property tests on small random images (derandomized: the same cases on every run)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_kmeans_vq import bit_report, quantize

SETTINGS = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def small_images(draw):
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    channels = draw(st.sampled_from([1, 3, 4]))
    # draw from a small set of levels so that colours repeat, as in real images
    levels = draw(st.lists(st.integers(0, 255), min_size=1, max_size=6, unique=True))
    idx = draw(arrays(np.int64, (h, w, channels), elements=st.integers(0, len(levels) - 1)))
    return np.asarray(levels, dtype=np.uint8)[idx]


@SETTINGS
@given(image=small_images(), k=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_quantize_invariants(image, k, seed):
    before = image.copy()
    q = quantize(image, k, random_state=seed, alpha="quantize")
    n_pixels = image.shape[0] * image.shape[1]
    n_distinct = len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))
    assert q.n_colors == min(k, n_distinct)
    assert q.labels.shape == image.shape[:-1]
    assert q.labels.max() < q.n_colors
    np.testing.assert_array_equal(q.reconstruction, q.palette[q.labels])
    err = ((image.astype(np.float64) - q.reconstruction) ** 2).sum(axis=-1).mean()
    assert np.isclose(q.distortion, err, rtol=1e-12, atol=1e-12)
    if q.n_colors == n_distinct:
        assert q.distortion == 0
    r = q.report
    assert r.index_bits == n_pixels * r.bits_per_index
    assert r.codebook_bits == 8 * image.shape[-1] * q.n_colors
    assert r.total_bits == r.index_bits + r.codebook_bits
    assert r.original_bits == 8 * image.shape[-1] * n_pixels
    assert 0 <= r.entropy_bits <= r.index_bits + 1e-9
    np.testing.assert_array_equal(image, before)
    again = quantize(image, k, random_state=seed, alpha="quantize")
    np.testing.assert_array_equal(again.labels, q.labels)
    np.testing.assert_array_equal(again.palette, q.palette)


@SETTINGS
@given(
    n=st.integers(1, 10**9),
    k=st.integers(1, 65_536),
    c=st.integers(1, 4),
    b=st.sampled_from([8, 16, 32]),
)
def test_bit_report_arithmetic(n, k, c, b):
    r = bit_report(n, k, channels=c, bits_per_channel=b)
    assert 2**r.bits_per_index >= k
    assert k == 1 or 2 ** (r.bits_per_index - 1) < k
    assert r.total_bits == n * r.bits_per_index + b * c * k
    assert np.isclose(r.ratio + r.saving, 1.0)
    assert np.isclose(r.ratio * r.original_bits, r.total_bits)
