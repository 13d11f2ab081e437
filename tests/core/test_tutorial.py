import numpy as np
import pytest

from napari_kmeans_vq import calculate_num_bits, compress_image, reconstruct_image


def test_calculate_num_bits_matches_the_seed_hestain_numbers():
    image = np.zeros((227, 303, 3), dtype=np.uint8)
    assert calculate_num_bits(image, 255) == (8, 1_650_744)
    assert 227 * 303 * 24 == 1_650_744


@pytest.mark.parametrize(("max_int", "bits"), [(1, 1), (15, 4), (16, 5), (255, 8), (256, 9)])
def test_calculate_num_bits_holds_max_int(max_int, bits):
    num_bits, total = calculate_num_bits(np.zeros(10), max_int)
    assert num_bits == bits
    assert 2**num_bits > max_int
    assert total == 10 * bits


def test_compress_and_reconstruct_round_trip(ihc_crop):
    labels, centroids = compress_image(ihc_crop, n_clusters=6, n_init="auto", random_state=42)
    assert labels.shape == (ihc_crop.shape[0] * ihc_crop.shape[1],)
    assert labels.dtype == np.uint8
    assert centroids.shape == (6, 3)
    rec = reconstruct_image(labels, centroids, ihc_crop.shape)
    assert rec.shape == ihc_crop.shape and rec.dtype == np.uint8
    # rounded, not truncated
    expected = np.clip(np.rint(centroids), 0, 255).astype(np.uint8)[labels]
    np.testing.assert_array_equal(rec.reshape(-1, 3), expected)
    truncated = centroids.astype(np.uint8)
    assert not np.array_equal(expected, truncated[labels]) or np.allclose(
        centroids, np.rint(centroids)
    )


def test_compress_keeps_labels_above_255():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    labels, centroids = compress_image(image, n_clusters=300, n_init=1, random_state=0)
    assert labels.dtype == np.uint16
    assert labels.max() > 255  # the seed's uint8 cast would have wrapped these
    rec = reconstruct_image(labels, centroids, image.shape)
    np.testing.assert_array_equal(
        rec.reshape(-1, 3), np.clip(np.rint(centroids), 0, 255).astype(np.uint8)[labels]
    )


def test_reconstruct_rejects_bad_indices():
    with pytest.raises(ValueError, match="indices outside"):
        reconstruct_image(np.array([0, 3]), np.zeros((2, 3)), (1, 2, 3))
    with pytest.raises(ValueError, match="original_shape"):
        reconstruct_image(np.array([0, 1]), np.zeros((2, 3)), (2, 2, 3))
    with pytest.raises(TypeError, match="integers"):
        reconstruct_image(np.array([0.0, 1.0]), np.zeros((2, 3)), (1, 2, 3))
