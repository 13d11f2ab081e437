"""The k-means engine's two paths: scikit-learn's compiled Lloyd kernel and plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import _lloyd_kernel, kmeans, quantize
from napari_kmeans_vq.histogram import ColorHistogram


@pytest.fixture
def kernel():
    if not _lloyd_kernel.available():
        pytest.skip("scikit-learn's Lloyd kernel is not usable here")


@pytest.fixture
def without_kernel(monkeypatch):
    monkeypatch.setattr(_lloyd_kernel, "_kernel", False)


def _weighted_colours(image):
    hist = ColorHistogram.from_pixels(image.reshape(-1, 3))
    return hist.colors.astype(np.float64), hist.counts.astype(np.float64)


@pytest.mark.parametrize("k", [3, 8, 24])
def test_kernel_and_numpy_reach_the_same_fixed_point(kernel, ihc, k):
    x, w = _weighted_colours(ihc)
    start = kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(k))
    compiled = _lloyd_kernel.KernelRun(x, w, start)
    _, converged = compiled.iterate(500, 0.0)
    state, _, numpy_converged = kmeans._lloyd(kmeans._Bounds(x, w, start), 500, 0.0)
    assert converged and numpy_converged
    np.testing.assert_array_equal(compiled.labels, state.labels)
    np.testing.assert_allclose(compiled.centers, state.centers, rtol=0, atol=1e-9)
    assert compiled.inertia() == pytest.approx(state.inertia(), rel=1e-9)
    # the labels are the nearest centres of the final centres
    np.testing.assert_array_equal(compiled.labels, kmeans.assign(x, compiled.centers))


def test_kernel_assign_breaks_ties_to_the_lower_index(kernel):
    centres = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    points = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    expected = [0, 2, 1, 0]  # ties: 0 and 1 / none / 1 and 2 / 0 and 2
    np.testing.assert_array_equal(_lloyd_kernel.assign(points, centres), expected)
    x2 = kmeans._row_norms2(points)
    np.testing.assert_array_equal(kmeans._nearest_two(points, x2, centres)[0], expected)


@pytest.mark.parametrize("k", [4, 16, 80])
def test_quantize_gives_the_same_codebook_without_the_kernel(kernel, ihc, monkeypatch, k):
    compiled = quantize(ihc, k)
    monkeypatch.setattr(_lloyd_kernel, "_kernel", False)
    plain = quantize(ihc, k)
    np.testing.assert_array_equal(compiled.palette, plain.palette)
    np.testing.assert_array_equal(compiled.labels, plain.labels)
    assert compiled.distortion == plain.distortion


def test_numpy_path_alone_is_deterministic_and_exact(without_kernel, ihc_crop):
    a = quantize(ihc_crop, 6, random_state=1)
    b = quantize(ihc_crop, 6, random_state=1)
    np.testing.assert_array_equal(a.labels, b.labels)
    err = ihc_crop.astype(np.float64) - a.reconstruction
    assert a.distortion == pytest.approx((err**2).sum(axis=-1).mean(), rel=1e-12)


def test_a_kernel_that_misbehaves_is_not_used(monkeypatch):
    lloyd = pytest.importorskip("sklearn.cluster._k_means_lloyd")

    def wrong(x, w, centers, new, mass, labels, shift, threads, update=True):
        labels[:] = 0  # every point to the first centre
        if update:
            new[:] = centers
            mass[:] = 1.0
            shift[:] = 0.0

    monkeypatch.setattr(lloyd, "lloyd_iter_chunked_dense", wrong)
    monkeypatch.setattr(_lloyd_kernel, "_kernel", None)
    assert not _lloyd_kernel.available()
    # and the engine still works, on numpy
    x = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [10.0, 0.0, 0.0], [10.0, 2.0, 0.0]])
    result = kmeans.weighted_kmeans(x, np.ones(4), 2, init=x[[0, 2]])
    np.testing.assert_array_equal(result.labels, [0, 0, 1, 1])


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
@pytest.mark.parametrize("k", [16, 80])
def test_labels_are_nearest_codewords_ties_to_the_lower_index(ihc, monkeypatch, compiled, k):
    # ihc has thousands of pixels exactly equidistant from two codewords at K = 16
    if not compiled:
        monkeypatch.setattr(_lloyd_kernel, "_kernel", False)
    q = quantize(ihc, k)
    pixels = ihc.reshape(-1, 1, 3).astype(np.int64)
    d2 = ((pixels - q.palette.astype(np.int64)) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(q.labels.reshape(-1), d2.argmin(axis=1))
    np.testing.assert_array_equal(q.codebook.encode(ihc), q.labels)


def test_max_iter_bounds_the_iterations_on_every_colour(ihc):
    # ihc at K = 16 takes more than 3 iterations on every colour to converge
    full = quantize(ihc, 16)
    assert full.info["converged"] and full.info["n_iter"] > 3
    capped = quantize(ihc, 16, max_iter=3)
    assert capped.info["n_iter"] == 3
    assert not capped.info["converged"]
