import math

import numpy as np
import pytest

from napari_kmeans_vq import bit_report
from napari_kmeans_vq.core.bits import bits_per_index, label_entropy_bits


def test_seed_worked_example():
    # "Image Compression with K-Means": 100 x 100 pixels, K = 16.
    r = bit_report(100 * 100, 16)
    assert r.original_bits == 240_000
    assert r.index_bits == 40_000
    assert r.codebook_bits == 384
    assert r.total_bits == 40_384
    assert round(r.ratio, 3) == 0.168
    assert f"{100 * r.ratio:.1f}%" == "16.8%"
    assert r.saving == pytest.approx(1 - 40_384 / 240_000)
    assert r.bits_per_pixel == pytest.approx(4.0384)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 16, 17, 255, 256, 257, 300, 65_536])
def test_bits_per_index_is_ceil_log2(k):
    expected = 0 if k == 1 else math.ceil(math.log2(k))
    assert bits_per_index(k) == expected
    # enough bits for every index, and no spare bit
    b = bits_per_index(k)
    assert 2**b >= k and (k == 1 or 2 ** (b - 1) < k)


def test_single_colour_needs_no_index_bits():
    r = bit_report(1000, 1)
    assert r.index_bits == 0
    assert r.total_bits == r.codebook_bits == 24


def test_other_channel_counts_and_depths():
    r = bit_report(10, 300, channels=1, bits_per_channel=16)
    assert r.bits_per_index == 9
    assert r.original_bits == 160
    assert r.codebook_bits == 16 * 300
    assert r.total_bits == 90 + 4800
    assert r.ratio > 1  # a codebook larger than the image costs more than it saves


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, 16), ValueError),
        ((100, 0), ValueError),
        ((100, 2.5), TypeError),
        ((100, True), TypeError),
        ((100, 16, 0), ValueError),
    ],
)
def test_bad_arguments(args, error):
    with pytest.raises(error, match=r"n_pixels|n_colors|channels"):
        bit_report(*args)


def test_entropy_bits():
    assert label_entropy_bits(np.array([5, 5])) == pytest.approx(10.0)
    assert label_entropy_bits(np.array([7])) == 0.0
    counts = np.array([1, 2, 3, 10])
    p = counts / counts.sum()
    assert label_entropy_bits(counts) == pytest.approx(-(counts * np.log2(p)).sum())


def test_report_round_trips_to_dict():
    r = bit_report(50, 4).with_entropy(12.5)
    d = r.to_dict()
    assert d["entropy_bits"] == 12.5
    assert d["total_bits"] == 50 * 2 + 96
    assert "total bits" in str(r)
