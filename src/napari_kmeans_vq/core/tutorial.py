"""The seed tutorial's three functions, with its signatures and meaning, done right, and
Lloyd's algorithm from scratch.

They follow "Image Compression with K-Means" (the tutorial this project grew from), which
fits scikit-learn's ``KMeans`` on every pixel. Two things it gets wrong are fixed here:

* labels were cast to uint8 whatever K was, so K > 256 silently wrapped around; here they
  take the smallest unsigned dtype that holds K - 1 (uint8, uint16, then uint32);
* the reconstruction truncated the float centroids (``astype(np.uint8)`` rounds 254.9
  down to 254); here they are rounded to the nearest integer and clipped to the range.

For real work use :func:`napari_kmeans_vq.quantize`, which gives the same clustering
(exact k-means on all pixels) much faster and accounts for the bits. :func:`lloyd` is what
it computes, written plainly: the engine's result from the same initial centres is the
same (the tests hold it to that).
"""

from __future__ import annotations

import numpy as np

from .validation import check_image, check_int


def calculate_num_bits(arr: np.ndarray, max_int: int) -> tuple[int, int]:
    """Bits to store each value of ``arr`` and the whole array, as the seed counts them.

    Parameters
    ----------
    arr : ndarray
        Any array; only its size matters.
    max_int : int
        The largest value the number system must hold (255 for 8-bit images; for K
        codeword indices the largest index is K - 1).

    Returns
    -------
    num_bits : int
        Bits per value: the bit length of ``max_int``, i.e. ``ceil(log2(max_int + 1))``.
    total_bits : int
        ``num_bits * arr.size``.

    Notes
    -----
    The seed computes ``ceil(log2(max_int))``, which agrees for 255 (8 bits) but is one
    bit short when ``max_int`` is a power of two (256 needs 9 bits, not 8); the bit
    length is exact for every value.

    Examples
    --------
    >>> import numpy as np
    >>> calculate_num_bits(np.zeros((227, 303, 3), dtype=np.uint8), 255)
    (8, 1650744)
    """
    max_int = check_int(max_int, "max_int")
    if max_int < 0:
        raise ValueError(f"max_int must be >= 0, got {max_int}.")
    num_bits = max_int.bit_length()
    return num_bits, num_bits * int(np.asarray(arr).size)


def compress_image(image: np.ndarray, **kmeans_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the pixels of an (H, W, 3) image with scikit-learn's KMeans, as the seed does.

    Parameters
    ----------
    image : ndarray, shape (H, W, C)
        The image; every pixel is one sample.
    **kmeans_kwargs
        Passed to ``sklearn.cluster.KMeans`` (e.g. ``n_clusters=16, n_init="auto",
        random_state=42``).

    Returns
    -------
    compressed_image : ndarray, shape (H * W,)
        The cluster index of every pixel, in the smallest unsigned dtype that holds K - 1
        (the seed always used uint8).
    centroids : ndarray, shape (K, C)
        The float cluster centres.
    """
    from sklearn.cluster import KMeans  # heavy: imported only when this is called

    arr = check_image(image)
    pixels = arr.reshape(-1, arr.shape[-1])
    kmeans = KMeans(**kmeans_kwargs).fit(pixels)
    k = kmeans.cluster_centers_.shape[0]
    dtype = np.min_scalar_type(max(k - 1, 0))
    return kmeans.labels_.astype(dtype), kmeans.cluster_centers_


def reconstruct_image(
    compressed_image: np.ndarray,
    centroids: np.ndarray,
    original_shape: tuple[int, ...],
) -> np.ndarray:
    """Replace every index by its centroid and restore the image's shape, as uint8.

    Parameters
    ----------
    compressed_image : ndarray of int, shape (N,)
        Cluster indices, as returned by :func:`compress_image`.
    centroids : ndarray, shape (K, C)
        Cluster centres.
    original_shape : tuple
        The image's shape, e.g. (H, W, 3).

    Returns
    -------
    ndarray of uint8, shape ``original_shape``
        Centroids rounded to the nearest integer and clipped to 0..255 (the seed truncated).
    """
    labels = np.asarray(compressed_image)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"compressed_image must hold integers, got dtype {labels.dtype}.")
    centroids = np.asarray(centroids, dtype=np.float64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(centroids)):
        raise ValueError(
            f"compressed_image has indices outside 0 .. {len(centroids) - 1} (the number of "
            "centroids)."
        )
    if labels.size * centroids.shape[-1] != int(np.prod(original_shape)):
        raise ValueError(
            f"{labels.size} indices with {centroids.shape[-1]} channels do not fill "
            f"original_shape {tuple(original_shape)}."
        )
    values = np.clip(np.rint(centroids), 0, 255).astype(np.uint8)
    return values[labels].reshape(original_shape)


def lloyd(
    points: np.ndarray, weights: np.ndarray, centers: np.ndarray, max_iter: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Lloyd's algorithm from ``centers``, written for reading, not for speed.

    Each point goes to its nearest centre (squared Euclidean distance; ties to the lower
    index, as ``argmin`` breaks them); each centre moves to the weighted mean of its
    points; repeat until no point changes centre. With the image's distinct colours as
    ``points`` and their pixel counts as ``weights``, this is k-means on every pixel.

    Parameters
    ----------
    points : ndarray, shape (M, D)
    weights : ndarray, shape (M,)
        Positive weights.
    centers : ndarray, shape (K, D)
        Initial centres; every cluster must keep at least one point.
    max_iter : int
        Most assignment steps.

    Returns
    -------
    centers : ndarray, shape (K, D)
        The weighted means of the final clusters.
    labels : ndarray, shape (M,)
        Each point's nearest centre.
    """
    x = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    c = np.array(centers, dtype=np.float64)
    k, d = c.shape
    labels = None
    for _ in range(max_iter):
        squared = ((x[:, np.newaxis, :] - c[np.newaxis]) ** 2).sum(axis=2)  # (M, K)
        nearest = squared.argmin(axis=1)
        if labels is not None and np.array_equal(nearest, labels):
            break
        labels = nearest
        mass = np.bincount(labels, weights=w, minlength=k)
        if (mass == 0).any():
            raise ValueError("a cluster lost all its points; start from other centres")
        sums = [np.bincount(labels, weights=w * x[:, j], minlength=k) for j in range(d)]
        c = np.stack(sums, axis=1) / mass[:, np.newaxis]
    return c, labels
