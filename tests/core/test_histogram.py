import numpy as np
import pytest

from napari_kmeans_vq.core.histogram import ColorHistogram, KeyCodec


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


def test_large_images_count_in_chunks_with_the_same_result():
    rng = np.random.default_rng(2)
    palette = rng.integers(0, 256, size=(5000, 3), dtype=np.uint8)
    pixels = palette[rng.integers(0, 5000, size=2 * 2**20 + 123)]
    whole = ColorHistogram.from_pixels(pixels)  # three chunks
    merged = ColorHistogram.merge(
        [ColorHistogram.from_pixels(part) for part in np.array_split(pixels, 3)]
    )
    keys, counts = np.unique(KeyCodec(np.uint8, 3).keys(pixels), return_counts=True)
    for hist in (whole, merged):
        np.testing.assert_array_equal(hist.keys, keys)
        np.testing.assert_array_equal(hist.counts, counts)
    assert whole.counts.sum() == len(pixels)


def test_counting_equals_sorting_on_a_real_image(ihc):
    from napari_kmeans_vq.core.histogram import DENSE_MIN_PIXELS

    tiled = np.tile(ihc, (2, 1, 1))  # enough pixels to be counted, not sorted
    assert tiled.shape[0] * tiled.shape[1] >= DENSE_MIN_PIXELS
    rgba = np.dstack([tiled, np.full(tiled.shape[:2], 255, np.uint8)])
    pixels = rgba[..., :3].reshape(-1, 3)  # rows 4 bytes apart: not contiguous
    seen = []
    hist = ColorHistogram.from_pixels(pixels, chunk=10_000, progress=lambda s, f: seen.append(f))
    keys, counts = np.unique(KeyCodec(np.uint8, 3).keys(pixels), return_counts=True)
    np.testing.assert_array_equal(hist.keys, keys)
    np.testing.assert_array_equal(hist.counts, counts)
    np.testing.assert_array_equal(hist.colors, KeyCodec(np.uint8, 3).colors(keys))
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert np.array_equal(rgba[..., :3], tiled)  # the caller's pixels are left alone
    for threads in (1, 2):
        again = ColorHistogram.from_pixels(pixels, n_threads=threads)
        np.testing.assert_array_equal(again.counts, counts)


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 1), (np.uint8, 2), (np.uint16, 1)])
def test_narrow_keys_count_in_the_bitmap_too(dtype, channels):
    rng = np.random.default_rng(9)
    top = np.iinfo(dtype).max
    from napari_kmeans_vq.core.histogram import DENSE_MIN_PIXELS

    size = (DENSE_MIN_PIXELS, channels)  # enough to be counted, not sorted
    pixels = rng.integers(0, top, size=size, endpoint=True).astype(dtype)
    pixels[0] = top  # the largest key, the bitmap's last bit
    hist = ColorHistogram.from_pixels(pixels)
    colors, counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.lexsort(hist.colors.T[::-1])
    np.testing.assert_array_equal(hist.colors[order], colors)
    np.testing.assert_array_equal(hist.counts[order], counts)


def test_the_colour_kernels_check_their_input():
    from napari_kmeans_vq.core import _colors

    bits = np.zeros(1 << 18, np.uint64)
    keys = np.array([1 | 2 << 8 | 3 << 16, 4 | 5 << 8 | 6 << 16], np.uint32)
    _colors.mark(keys[:1], bits)
    before = np.empty(1 << 18, np.uint32)
    assert _colors.rank(bits, before) == 1
    scratch, first = np.empty(2, np.uint16), np.empty(257, np.int64)
    no_rgb = np.empty((0, 3), np.uint8)
    for threads in (1, 2):
        with pytest.raises(ValueError, match="larger than the bitmap"):
            _colors.count(keys, no_rgb, bits[:10], scratch, keys.copy(), first[:2], threads)
        dirty = np.zeros_like(bits)
        dirty[(3 << 16) >> 6] = 0b11  # two keys of the first key's bucket already set
        with pytest.raises(ValueError, match="not clear"):
            _colors.count(keys[:1], no_rgb, dirty, scratch, keys.copy(), first, threads)
    with pytest.raises(ValueError, match="not in the table"):
        _colors.tally(keys, bits, before, np.ones(2, np.int64), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="scratch and tally"):
        _colors.count(keys, no_rgb, np.zeros_like(bits), scratch[:1], keys.copy(), first, 1)
    with pytest.raises(ValueError, match="larger than the bitmap"):
        _colors.mark(keys, bits[:10])
    with pytest.raises(ValueError, match="wrong size"):
        _colors.set_keys(bits, before, np.zeros(3, np.uint32), np.zeros((3, 3), np.uint8), 1)
    wrong = before.copy()
    wrong[keys[0] >> 6] = 5  # a rank table that is not the bits'
    with pytest.raises(ValueError, match="not the bits' rank"):
        _colors.set_keys(bits, wrong, np.zeros(1, np.uint32), np.zeros((1, 3), np.uint8), 1)
    with pytest.raises(ValueError, match="pack_rgb8"):
        _colors.pack_rgb8(np.zeros((2, 4), np.uint8), np.zeros(2, np.uint32))
    with pytest.raises(ValueError, match="dtype"):  # wrong dtype
        _colors.mark(keys.astype(np.int64), bits)
    no_keys, no_rgb = np.empty(0, np.uint32), np.empty((0, 3), np.uint8)
    no_marks = np.empty(0, np.int64)
    rgb = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)  # the same two colours as keys
    small = np.zeros(16, np.uint8)
    for source in ((keys, no_rgb), (no_keys, rgb)):
        with pytest.raises(ValueError, match="past the table"):
            _colors.lookup(*source, small, np.zeros(2, np.uint8), no_marks, 1)
        with pytest.raises(ValueError, match="past the table"):
            _colors.lookup_decode(
                *source,
                small,
                np.zeros((1, 3), np.uint8),
                np.zeros(2, np.uint8),
                np.zeros((2, 3), np.uint8),
                1,
            )
    with pytest.raises(ValueError, match="not both"):
        _colors.lookup(keys, rgb, small, np.zeros(2, np.uint8), no_marks, 1)
    table = np.zeros(1 << 24, np.uint8)
    table[keys] = [7, 9]
    for source in ((keys, no_rgb), (no_keys, rgb)):
        out = np.zeros(2, np.uint8)
        assert _colors.lookup(*source, table, out, no_marks, 2) == 0
        assert out.tolist() == [7, 9]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_lookup_finds_the_pixels_a_table_marks_unknown(ihc, threads):
    from napari_kmeans_vq.core.histogram import lookup_colors

    pixels = ihc.reshape(-1, 3)
    codec = KeyCodec(np.uint8, 3)
    keys = codec.keys(pixels)
    table = np.full(1 << 24, 255, np.uint8)
    known = np.unique(keys)[::3]  # a third of the colours known
    table[known] = known % 200
    expected = table[keys]
    rgba = np.dstack([ihc, np.zeros(ihc.shape[:2], np.uint8)])
    strided = rgba[..., :3].reshape(-1, 3)  # rows 4 bytes apart: packed before the lookup
    assert strided.strides == (4, 1)
    for image in (pixels, strided, pixels[::7]):
        values, rows = lookup_colors(codec, image, table, n_threads=threads, marked=True)
        truth = table[codec.keys(image)]
        np.testing.assert_array_equal(values, truth)
        np.testing.assert_array_equal(rows, np.flatnonzero(truth == 255))
    assert len(rows) and np.array_equal(lookup_colors(codec, pixels, table), expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_many_colour_histograms_equal_numpys_unique(threads):
    # uniform noise: nearly every pixel its own colour, every bucket of keys in use
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(700_000, 3), dtype=np.uint8)
    pixels[:1000] = pixels[1000:2000]  # and some colours repeated
    keys, counts = np.unique(KeyCodec(np.uint8, 3).keys(pixels), return_counts=True)
    for chunk in (None, 250_000):
        hist = ColorHistogram.from_pixels(pixels, chunk=chunk, n_threads=threads)
        np.testing.assert_array_equal(hist.keys, keys)
        np.testing.assert_array_equal(hist.counts, counts)
    parts = [ColorHistogram.from_pixels(p) for p in np.array_split(pixels, 5)]
    merged = ColorHistogram.merge(parts)
    np.testing.assert_array_equal(merged.keys, keys)
    np.testing.assert_array_equal(merged.counts, counts)


@pytest.mark.parametrize("label_type", [np.uint8, np.uint16])
def test_encode_decode_equals_lookup_and_take(ihc, label_type):
    from napari_kmeans_vq.core.histogram import encode_decode

    pixels = ihc.reshape(-1, 3)
    hist = ColorHistogram.from_pixels(pixels)
    n_labels = 300 if label_type == np.uint16 else 7
    values = (hist.keys % n_labels).astype(label_type)
    palette = np.random.default_rng(0).integers(0, 256, (n_labels, 3), dtype=np.uint8)
    expected = hist.lookup(pixels, values)
    results = [
        encode_decode(hist, pixels, values, palette, chunk=100_000, n_threads=2),
        encode_decode(hist, pixels, values, palette, n_threads=1),
        encode_decode(hist, pixels, values.astype(np.int64), palette),  # the numpy path
    ]
    for labels, codewords in results:
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(codewords, palette[expected])


def test_encode_decode_rejects_a_label_outside_the_palette(ihc):
    from napari_kmeans_vq.core.histogram import encode_decode

    pixels = ihc[:64].reshape(-1, 3)
    hist = ColorHistogram.from_pixels(pixels)
    values = np.full(len(hist.keys), 4, np.uint8)
    with pytest.raises(ValueError, match="a label is 4 or more"):
        encode_decode(hist, pixels, values, np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="one per colour"):
        encode_decode(hist, pixels, values[:3], np.zeros((5, 3), np.uint8))


def test_small_rgb_histograms_equal_numpys_unique(ihc):
    pixels = ihc.reshape(-1, 3)
    hist = ColorHistogram.from_pixels(pixels)
    colors, counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.lexsort(colors.T)  # keys sort by blue, then green, then red
    np.testing.assert_array_equal(hist.colors, colors[order])
    np.testing.assert_array_equal(hist.counts, counts[order])
    assert hist.counts.dtype == np.int64 and hist.keys.dtype == np.uint32


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64])
def test_count_values_equals_bincount(ihc, dtype):
    from napari_kmeans_vq.core.histogram import count_values

    labels = (ihc[..., 0] // 9).astype(dtype)  # runs of one value, 0 .. 28
    assert count_values(labels, 40).tolist() == np.bincount(labels.ravel(), minlength=40).tolist()
    with pytest.raises(ValueError, match="past the counts"):
        count_values(labels, 20)


@pytest.mark.parametrize(
    ("dtype", "channels"), [(np.uint8, 3), (np.uint8, 1), (np.uint8, 2), (np.uint16, 1)]
)
def test_counting_in_a_table_equals_sorting(ihc, dtype, channels):
    from napari_kmeans_vq.core.histogram import (
        _pool,
        counting_tables,
        distinct_in_table,
        distinct_keys,
    )

    codec = KeyCodec(np.dtype(dtype), channels)
    rgba = np.dstack([ihc, np.full(ihc.shape[:2], 255, np.uint8)]).reshape(-1, 4)
    sources = [rgba[:, :channels], np.ascontiguousarray(rgba[:, :channels])]  # strided, packed
    if dtype == np.uint16:
        wide = ihc[..., 0].astype(np.uint16) * 257 + ihc[..., 1]
        sources = [wide.reshape(-1, 1), np.array([[65535], [0], [65535]], np.uint16)]
    sources.append(sources[1][:0])  # no pixels
    for pixels in sources:
        keys, counts = distinct_in_table(codec, pixels)
        want_keys, want_counts = distinct_keys(codec.keys(pixels))
        np.testing.assert_array_equal(keys, want_keys)
        np.testing.assert_array_equal(counts, want_counts)
        assert keys.dtype == want_keys.dtype and counts.dtype == np.int64
    # The pooled tables are left clear, ready for the next call; a pass lets them go.
    tables = [t for kind, free in _pool.items() if kind[0] == "counts" for t in free]
    assert tables and not any(t.any() for t in tables)
    with counting_tables():
        pass
    assert not [kind for kind in _pool if kind[0] == "counts"]
    with pytest.raises(ValueError, match="24 bits"):
        distinct_in_table(KeyCodec(np.uint8, 4), rgba)


def test_table_counting_in_passes_after_a_failure_and_with_every_table_in_use(ihc, monkeypatch):
    from napari_kmeans_vq.core import histogram

    codec = KeyCodec(np.uint8, 3)
    pixels = ihc.reshape(-1, 3)
    want_keys, want_counts = histogram.distinct_keys(codec.keys(pixels))
    # Several passes (as for 2**31 pixels or more), merged.
    monkeypatch.setattr(histogram, "_TABLE_PASS", 100_003)
    keys, counts = histogram.distinct_in_table(codec, pixels)
    np.testing.assert_array_equal(keys, want_keys)
    np.testing.assert_array_equal(counts, want_counts)
    # A failure after counting: the table (not clear) does not go back to the pool.
    with histogram.counting_tables():
        monkeypatch.setattr(histogram._colors, "take_counts", lambda *a: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            histogram.distinct_in_table(codec, pixels)
        monkeypatch.undo()
        tables = [t for kind, free in histogram._pool.items() if kind[0] == "counts" for t in free]
        assert not any(t.any() for t in tables)
    # With every table in use, blocks are sorted instead (the same result).
    used = []
    monkeypatch.setattr(histogram, "MAX_COUNT_TABLES", 0)
    monkeypatch.setattr(histogram, "distinct_in_table", lambda *a: used.append(1))
    keys, counts = histogram.distinct_counts(codec, np.tile(pixels, (4, 1)))
    assert not used and histogram._counting["tables"] == 0
    np.testing.assert_array_equal(keys, want_keys)
    np.testing.assert_array_equal(counts, want_counts * 4)


def test_the_table_counting_kernels_check_their_input():
    from napari_kmeans_vq.core import _colors

    keys = np.array([3, 70, 3, 9], np.uint32)
    table = np.zeros(64, np.uint32)
    seen = np.empty(4, np.uint32)
    no_rgb = np.empty((0, 3), np.uint8)
    # 70 is past the table: not counted, and said
    assert _colors.count_in_table(keys, no_rgb, table, seen) == (2, 1)
    assert seen[:2].tolist() == [3, 9] and table.sum() == 3
    counts = np.empty(2, np.int64)
    _colors.take_counts(table, np.array([3, 9], np.uint32), counts)
    assert counts.tolist() == [2, 1] and not table.any()
    with pytest.raises(ValueError, match="seen needs one entry per key"):
        _colors.count_in_table(keys, no_rgb, table, seen[:3])
    with pytest.raises(ValueError, match="past the table"):
        _colors.take_counts(table, np.array([64], np.uint32), np.empty(1, np.int64))
    with pytest.raises(ValueError, match="one count per key"):
        _colors.take_counts(table, keys, counts)


@pytest.mark.parametrize("threads", [1, 2])
def test_rgb_rows_packed_in_the_kernels_equal_keys_at_every_position(threads):
    from napari_kmeans_vq.core import _colors
    from napari_kmeans_vq.core.histogram import distinct_in_table

    rng = np.random.default_rng(3)
    codec = KeyCodec(np.uint8, 3)
    table = rng.integers(0, 200, 1 << 24).astype(np.uint8)
    for n in (1, 2, 3, 7):
        # Each row exactly 3 bytes, the buffer ending with the last pixel: the kernels read
        # four bytes at a time for every row but a range's last.
        rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        rgb[-1] = [255, 254, 253]
        keys = codec.keys(rgb)
        assert keys[-1] == 255 | 254 << 8 | 253 << 16
        out = np.empty(n, np.uint8)
        _colors.lookup(np.empty(0, np.uint32), rgb, table, out, np.empty(0, np.int64), threads)
        np.testing.assert_array_equal(out, table[keys])
        found, counts = distinct_in_table(codec, rgb)
        want, want_counts = np.unique(keys, return_counts=True)
        np.testing.assert_array_equal(found, want)
        np.testing.assert_array_equal(counts, want_counts)
