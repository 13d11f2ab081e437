import numpy as np
import pytest

from napari_kmeans_vq.core import histogram
from napari_kmeans_vq.core.histogram import ColorHistogram, KeyCodec


@pytest.fixture(params=["C", "numpy"])
def colors_path(request, monkeypatch):
    """Each test using it runs with the C extension _ccolors, then with numpy alone."""
    if request.param == "C" and histogram._ccolors is None:
        pytest.skip("the C extension was not built")
    if request.param == "numpy":
        monkeypatch.setattr(histogram, "_ccolors", None)
    return request.param


def test_rgb_keys_pack_the_bytes_and_unpack_exactly():
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, size=(1000, 4), dtype=np.uint8)
    rgba[0, :3] = 255  # the largest key, next to the buffer's end
    codec = KeyCodec(np.uint8, 3)
    for pixels in (rgba[:, :3], np.ascontiguousarray(rgba[:, :3]), rgba[-1:, :3]):
        keys = codec.keys(pixels)
        p = pixels.astype(np.uint32)
        np.testing.assert_array_equal(keys, p[:, 0] | p[:, 1] << 8 | p[:, 2] << 16)
        np.testing.assert_array_equal(codec.colors(keys), pixels)
    wide = KeyCodec(np.uint8, 4)
    np.testing.assert_array_equal(wide.colors(wide.keys(rgba)), rgba)
    assert codec.dense and not wide.dense


@pytest.mark.parametrize(
    ("dtype", "channels"), [(np.uint8, 1), (np.uint8, 2), (np.uint16, 3), (np.float32, 3)]
)
def test_histogram_counts_and_lookup(dtype, channels):
    rng = np.random.default_rng(1)
    levels = np.array([0, 7, 200], dtype=dtype)
    pixels = levels[rng.integers(0, 3, size=(5000, channels))]
    hist = ColorHistogram.from_pixels(pixels, chunk=777)  # several chunks to merge
    colors, counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.lexsort(hist.colors.T[::-1])
    np.testing.assert_array_equal(hist.colors[order], colors)
    np.testing.assert_array_equal(hist.counts[order], counts)
    values = np.arange(len(hist.colors)) * 3
    looked_up = hist.lookup(pixels, values)
    np.testing.assert_array_equal(hist.colors[looked_up // 3], pixels)


def test_merge_adds_counts():
    a = np.array([[1, 2, 3], [1, 2, 3], [4, 5, 6]], np.uint8)
    b = np.array([[4, 5, 6], [7, 8, 9]], np.uint8)
    merged = ColorHistogram.merge([ColorHistogram.from_pixels(a), ColorHistogram.from_pixels(b)])
    table = {tuple(c): n for c, n in zip(merged.colors.tolist(), merged.counts, strict=True)}
    assert table == {(1, 2, 3): 2, (4, 5, 6): 2, (7, 8, 9): 1}


def test_large_images_count_in_a_dense_table_with_the_same_result():
    rng = np.random.default_rng(2)
    palette = rng.integers(0, 256, size=(5000, 3), dtype=np.uint8)
    pixels = palette[rng.integers(0, 5000, size=4 * 2**20 + 123)]
    dense = ColorHistogram.from_pixels(pixels)  # above the dense-count threshold
    merged = ColorHistogram.merge(
        [ColorHistogram.from_pixels(part) for part in np.array_split(pixels, 3)]
    )
    np.testing.assert_array_equal(dense.keys, merged.keys)
    np.testing.assert_array_equal(dense.counts, merged.counts)
    assert dense.counts.sum() == len(pixels)


def test_dense_counting_equals_sorting_on_a_real_image(ihc, monkeypatch, colors_path):
    monkeypatch.setattr(histogram, "_DENSE_COUNT_MIN_PIXELS", 0)
    rgba = np.dstack([ihc, np.full(ihc.shape[:2], 255, np.uint8)])
    pixels = rgba[..., :3].reshape(-1, 3)  # rows 4 bytes apart: not contiguous
    seen = []
    dense = ColorHistogram.from_pixels(pixels, chunk=10_000, progress=lambda s, f: seen.append(f))
    keys, counts = np.unique(KeyCodec(np.uint8, 3).keys(pixels), return_counts=True)
    np.testing.assert_array_equal(dense.keys, keys)
    np.testing.assert_array_equal(dense.counts, counts)
    np.testing.assert_array_equal(dense.colors, KeyCodec(np.uint8, 3).colors(keys))
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert np.array_equal(rgba[..., :3], ihc)  # the caller's pixels are left alone


def test_the_c_histogram_checks_its_input():
    ccolors = histogram._ccolors
    if ccolors is None:
        pytest.skip("the C extension was not built")
    bits = np.zeros(1 << 18, np.uint64)
    pixels = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    ccolors.mark(pixels[:1], bits, 1)
    before = np.empty(1 << 18, np.uint32)
    assert ccolors.index(bits, before) == 1
    with pytest.raises(ValueError, match="not in the table"):
        ccolors.tally(pixels, bits, before, np.zeros(1, np.int64), 2, 1)
    with pytest.raises(ValueError, match="expected 262144 items of uint64"):
        ccolors.mark(pixels, bits[:10], 2)
    with pytest.raises(ValueError, match="expected 6 items of uint8"):
        ccolors.mark(pixels.astype(np.int16), bits, 2)


@pytest.mark.parametrize("label_type", [np.uint8, np.uint16])
def test_encode_decode_in_c_equals_lookup_and_take(ihc, monkeypatch, label_type):
    from napari_kmeans_vq.core import _threads
    from napari_kmeans_vq.core.histogram import encode_decode

    pixels = ihc.reshape(-1, 3)
    hist = ColorHistogram.from_pixels(pixels)
    n_labels = 300 if label_type == np.uint16 else 7
    values = (hist.keys % n_labels).astype(label_type)
    palette = np.random.default_rng(0).integers(0, 256, (n_labels, 3), dtype=np.uint8)
    expected = hist.lookup(pixels, values)
    diff = pixels.astype(np.int64) - palette[expected]
    expected_stats = [*np.bincount(expected, minlength=n_labels), int((diff**2).sum())]
    stats = [np.zeros(n_labels + 1, np.int64) for _ in range(3)]
    results = [encode_decode(hist, pixels, values, palette, chunk=100_000, stats=stats[0])]
    with _threads.one_thread():
        results.append(encode_decode(hist, pixels, values, palette, stats=stats[1]))
    monkeypatch.setattr(hist._codec, "rgb8", False)  # the numpy path
    results.append(encode_decode(hist, pixels, values, palette, stats=stats[2]))
    for (labels, codewords), measured in zip(results, stats, strict=True):
        assert labels.dtype == label_type
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(codewords, palette[expected])
        assert measured.tolist() == expected_stats


def test_encode_decode_rejects_a_label_outside_the_palette(ihc):
    from napari_kmeans_vq.core.histogram import encode_decode

    if histogram._ccolors is None:
        pytest.skip("the C extension was not built")
    pixels = ihc[:64].reshape(-1, 3)
    hist = ColorHistogram.from_pixels(pixels)
    values = np.full(len(hist.keys), 4, np.uint8)
    with pytest.raises(ValueError, match="a label is 4 or more"):
        encode_decode(hist, pixels, values, np.zeros((4, 3), np.uint8))


def test_nearest_codewords_per_pixel_equal_the_lookup():
    # Many distinct colours and K <= 4: encode_decode computes each pixel's nearest
    # codeword instead of looking it up; ties (a repeated codeword) go to the lower index.
    from napari_kmeans_vq.core.histogram import encode_decode
    from napari_kmeans_vq.core.kmeans import assign

    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (200_000, 3), dtype=np.uint8)
    hist = ColorHistogram.from_pixels(pixels)
    palette = np.array([[10, 200, 30], [128, 128, 128], [10, 200, 30], [250, 5, 90]], np.uint8)
    values = assign(hist.colors.astype(np.float64), palette.astype(np.float64)).astype(np.uint8)
    assert 2 not in values  # the repeated codeword loses every tie
    looked_up = encode_decode(hist, pixels, values, palette)
    stats = np.zeros(5, np.int64)
    computed = encode_decode(hist, pixels, values[:0], palette, nearest=True, stats=stats)
    # (no values needed per pixel; J and the counts measured on the way)
    diff = pixels.astype(np.int64) - palette[computed[0]]
    assert stats.tolist() == [*np.bincount(computed[0], minlength=4), int((diff**2).sum())]
    with pytest.raises(ValueError, match="one per colour"):
        encode_decode(hist, pixels, values[:0], palette)
    # (the per-pixel path is taken: many distinct colours, K = 4)
    assert len(hist.keys) >= histogram._NEAREST_MIN_DISTINCT * len(pixels)
    for labels, codewords in (computed, looked_up):
        np.testing.assert_array_equal(labels, hist.lookup(pixels, values))
        np.testing.assert_array_equal(codewords, palette[labels])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_each_pixels_nearest_codeword_in_c_for_any_palette_size(k):
    # Up to four entries take an unrolled loop over a padded palette, more the general
    # one; both must give the nearest entry, ties to the lower index (entry 2 repeats 0).
    from napari_kmeans_vq.core.histogram import _ccolors
    from napari_kmeans_vq.core.kmeans import assign

    if _ccolors is None:
        pytest.skip("the C extension was not built")
    rng = np.random.default_rng(k)
    pixels = rng.integers(0, 256, (5_000, 3), dtype=np.uint8)
    palette = np.array(
        [[10, 200, 30], [128, 128, 128], [10, 200, 30], [250, 5, 90], [0, 0, 0], [99, 1, 7]],
        np.uint8,
    )[:k]
    labels = np.empty(len(pixels), np.uint8)
    out = np.empty_like(pixels)
    _ccolors.encode_decode(pixels, None, palette, labels, out, len(pixels), k, 1, 1)
    expected = assign(pixels.astype(np.float64), palette.astype(np.float64))
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(out, palette[expected])


def test_small_rgb_histograms_equal_numpys_unique(ihc, colors_path):
    pixels = ihc.reshape(-1, 3)
    hist = ColorHistogram.from_pixels(pixels)
    colors, counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.lexsort(colors.T)  # keys sort by blue, then green, then red
    np.testing.assert_array_equal(hist.colors, colors[order])
    np.testing.assert_array_equal(hist.counts, counts[order])
    assert hist.counts.dtype == np.int64 and hist.keys.dtype == np.uint32


def test_c_runs_need_sorted_keys():
    if histogram._ccolors is None:
        pytest.skip("the C extension was not built")
    keys = np.array([5, 3, 3], np.uint32)
    with pytest.raises(ValueError, match="not sorted"):
        histogram._ccolors.runs(keys, 3, None, None, None, 0)


def test_c_runs_reject_keys_that_are_not_sorted_24_bit_ones():
    if histogram._ccolors is None:
        pytest.skip("the C extension was not built")
    for bad in ([0xFFFFFFFF], [5, 3, 5], [1, 1 << 24]):
        keys = np.array(bad, np.uint32)
        m = len(set(bad))
        out = np.zeros(m, np.uint32), np.zeros(m, np.int64), np.zeros((m, 3), np.uint8)
        with pytest.raises(ValueError, match="not sorted"):
            histogram._ccolors.runs(keys, len(keys), *out, m)
