"""The class table's mean stains describe the labels produced, also after min_region clean-up."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import quantize
from napari_kmeans_vq.core.classes import class_means, class_table, label_centroids
from napari_kmeans_vq.core.colorspace import stain_amounts, stain_space


def brute_force_stains(image, labels, k, space="hdab", mask=None):
    """Each label's mean stain amounts, pixel by pixel."""
    matrix, _ = stain_space(space)
    amounts = stain_amounts(image.reshape(-1, 3), matrix, 255.0)
    flat = labels.reshape(-1)
    keep = np.ones(flat.size, bool) if mask is None else mask.reshape(-1)
    return np.array([amounts[(flat == i) & keep].mean(axis=0) for i in range(k)])


@pytest.fixture(scope="module")
def cleaned(ihc):
    return quantize(ihc, 3, color_space="hdab", min_region=200)


def test_table_after_min_region_reports_the_labels_produced(ihc, cleaned):
    q = cleaned
    expected = brute_force_stains(ihc, q.labels, 3)
    table = class_table(
        q.palette,
        q.cluster_sizes,
        color_space="hdab",
        centroids=q.centroids / q.codebook.space_scale_,
        image=ihc,
        labels=q.labels,
    )
    measured = np.array(
        [[row[c] for c in table.columns if c.startswith("mean_")] for row in table.rows]
    )
    np.testing.assert_allclose(measured, expected, rtol=1e-9, atol=1e-12)
    # The result's own table says the same: its centroids are the labels' after clean-up,
    # while the fit's centroids describe the labels before it, which are not these.
    own = q.class_table()
    ours = np.array([[row[c] for c in own.columns if c.startswith("mean_")] for row in own.rows])
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    fitted = q.codebook.centroids_ / q.codebook.space_scale_
    assert np.abs(fitted - expected).max() > 1e-3


def test_label_centroids_are_the_fit_centroids_when_labels_did_not_change(ihc):
    q = quantize(ihc, 4, color_space="hdab")
    again = label_centroids(q.codebook, ihc, q.labels)
    # k-means stops when the centroids move less than its tolerance: the means of the
    # members are the centroids up to that.
    spread = np.ptp(q.centroids, axis=0)
    assert np.all(np.abs(again - q.centroids) <= 1e-2 * spread)


def test_label_centroids_after_clean_up_in_the_codebook_space(ihc, cleaned):
    q = cleaned
    centroids = label_centroids(q.codebook, ihc, q.labels)
    expected = brute_force_stains(ihc, q.labels, 3) * q.codebook.space_scale_
    np.testing.assert_allclose(centroids, expected, rtol=1e-9)


def test_masked_pixels_only_and_empty_classes(ihc):
    image = ihc[:120, :160]
    mask = np.zeros(image.shape[:2], bool)
    mask[20:100, 30:140] = True
    q = quantize(image, 3, color_space="hdab", mask=mask)
    labels = q.labels.copy()
    labels[labels == 2] = 1  # class 3 merged away: no pixel left
    means = class_means(image, labels, 3, color_space="hdab", mask=mask)
    expected = brute_force_stains(image, labels, 2, mask=mask)
    np.testing.assert_allclose(means[:2], expected, rtol=1e-9)
    assert np.isnan(means[2]).all()
    fallback = np.arange(9.0).reshape(3, 3)
    kept = class_means(image, labels, 3, color_space="hdab", mask=mask, fallback=fallback)
    assert np.array_equal(kept[2], fallback[2])


@pytest.mark.parametrize("space", ["rgb", "lab", "oklab", "od"])
def test_other_spaces_are_plain_means(ihc, space):
    from napari_kmeans_vq.core.colorspace import to_space

    image = ihc[:64, :64]
    labels = (np.arange(64 * 64).reshape(64, 64) % 3).astype(np.uint8)
    points = to_space(image.reshape(-1, 3), space, 255.0)
    expected = np.array([points[labels.reshape(-1) == i].mean(axis=0) for i in range(3)])
    np.testing.assert_allclose(class_means(image, labels, 3, color_space=space), expected)


def test_bad_labels_are_named(ihc):
    with pytest.raises(ValueError, match="labels: expected"):
        class_means(ihc, np.zeros((3, 3), np.uint8), 2)
    with pytest.raises(ValueError, match="below n_colors"):
        class_means(ihc[:4, :4], np.full((4, 4), 5, np.uint8), 2)
    with pytest.raises(ValueError, match="mask: expected"):
        class_means(ihc[:4, :4], np.zeros((4, 4), np.uint8), 2, mask=np.ones((2, 2), bool))


def test_min_region_with_a_mask_that_leaves_whole_chunks_empty():
    # over 2**20 pixels: the class means run chunk by chunk, and the mask empties the first
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1200, 1000, 3), dtype=np.uint8)
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[1100:] = True
    q = quantize(img, 4, mask=mask, min_region=4, color_space="hdab")
    assert np.isfinite(q.centroids).all()
    inside = q.labels[mask].astype(np.int64)
    for j in range(4):  # each class's mean stain amounts, from its pixels alone
        pixels = img[mask][inside == j]
        alone = class_means(
            pixels[None],
            np.zeros((1, len(pixels)), np.int64),
            1,
            color_space="hdab",
            scale=q.codebook.space_scale_,
        )
        np.testing.assert_allclose(q.centroids[j], alone[0], rtol=1e-9)


@pytest.mark.parametrize("channel_axis", [None, 0])
def test_min_region_on_images_whose_colour_axis_is_not_last(ihc, channel_axis):
    image = ihc[:96, :96, 0] if channel_axis is None else np.moveaxis(ihc[:96, :96], -1, 0)
    q = quantize(image, 3, channel_axis=channel_axis, min_region=5)
    plain = quantize(image, 3, channel_axis=channel_axis)
    assert q.labels.shape == plain.labels.shape == (96, 96)
    assert q.centroids.shape == plain.centroids.shape
