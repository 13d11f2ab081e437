"""The k-means engine's two paths: the C extension (_ckmeans) and plain numpy."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from napari_kmeans_vq import quantize
from napari_kmeans_vq.core import _lloyd_kernel, _scratch, _threads, kmeans
from napari_kmeans_vq.core.histogram import ColorHistogram


@pytest.fixture
def kernel():
    if not _lloyd_kernel.available():
        pytest.skip("the C extension was not built (no C compiler at install)")


@pytest.fixture(params=["kernel", "numpy"])
def path(request, monkeypatch):
    """Each test using it runs on the C extension, then on numpy alone."""
    if request.param == "kernel" and not _lloyd_kernel.available():
        pytest.skip("the C extension was not built (no C compiler at install)")
    if request.param == "numpy":
        monkeypatch.setattr(_lloyd_kernel, "_ckmeans", None)
    return request.param


@pytest.fixture
def without_kernel(monkeypatch):
    monkeypatch.setattr(_lloyd_kernel, "_ckmeans", None)


def _weighted_colours(image):
    hist = ColorHistogram.from_pixels(image.reshape(-1, 3))
    return hist.colors.astype(np.float64), hist.counts.astype(np.float64)


def _both_paths(x, w, start):
    """Lloyd's from ``start`` to convergence in C and in numpy; asserts they agree."""
    compiled = _lloyd_kernel.KernelRun(x, w, start)
    n_iter, converged = compiled.iterate(500, 0.0)
    state, numpy_iter, numpy_converged = kmeans._lloyd(kmeans._Bounds(x, w, start), 500, 0.0)
    assert converged and numpy_converged and n_iter == numpy_iter
    np.testing.assert_array_equal(compiled.labels, state.labels)
    np.testing.assert_allclose(compiled.centers, state.centers, rtol=0, atol=1e-9)
    return compiled, state


@pytest.mark.parametrize("k", [3, 8, 24])
def test_kernel_and_numpy_reach_the_same_fixed_point(kernel, ihc, k):
    x, w = _weighted_colours(ihc)
    start = kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(k))
    compiled, state = _both_paths(x, w, start)
    assert compiled.inertia() == pytest.approx(state.inertia(), rel=1e-9)
    # the labels are the nearest centres of the final centres
    np.testing.assert_array_equal(compiled.labels, kmeans.assign(x, compiled.centers))


def test_kernel_assign_breaks_ties_to_the_lower_index(kernel):
    centres = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    points = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    expected = [0, 2, 1, 0]  # ties: 0 and 1 / none / 1 and 2 / 0 and 2
    np.testing.assert_array_equal(_lloyd_kernel.assign(points, centres), expected)
    np.testing.assert_array_equal(kmeans._nearest_two(points, centres)[0], expected)


@pytest.mark.parametrize("k", [4, 16, 80])
def test_quantize_gives_the_same_codebook_without_the_kernel(kernel, ihc, monkeypatch, k):
    compiled = quantize(ihc, k)
    monkeypatch.setattr(_lloyd_kernel, "_ckmeans", None)
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


@pytest.mark.parametrize("dim", [1, 2, 4])
@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_kernel_and_numpy_agree_in_other_dimensions(kernel, dim, k):
    # one channel (scalar quantization), two, and RGBA-like points; K = 1 and 2 too
    rng = np.random.default_rng(dim * 100 + k)
    x = np.round(rng.gamma(2.0, 30.0, size=(3000, dim)))
    w = rng.integers(1, 50, size=3000).astype(np.float64)
    start = x[rng.choice(3000, size=k, replace=False)]
    _both_paths(x, w, start)


@pytest.mark.parametrize("k", [3, 12])
def test_empty_clusters_are_reseeded_alike(kernel, k):
    # two seeds on one point: the second gets no points at first and must be moved
    rng = np.random.default_rng(k)
    x = np.round(rng.normal(100.0, 40.0, size=(2000, 3)))
    w = rng.integers(1, 9, size=2000).astype(np.float64)
    start = x[rng.choice(2000, size=k, replace=False)]
    start[1] = start[0]
    assert not np.any(_lloyd_kernel.KernelRun(x, w, start).labels == 1)
    compiled, _ = _both_paths(x, w, start)
    assert np.bincount(compiled.labels, minlength=k).min() > 0


@pytest.mark.parametrize("k", [4, 40])
def test_moved_centres_relabel_like_a_full_search(kernel, ihc, k):
    x, w = _weighted_colours(ihc)
    run = _lloyd_kernel.KernelRun(x, w, kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(0)))
    run.iterate(30, 0.0)
    rounded = np.round(run.centers)  # what the palette stores
    labels = run.move(rounded)
    np.testing.assert_array_equal(labels, kmeans.assign(x, rounded))
    np.testing.assert_array_equal(labels, run.labels)
    error, mass = kmeans.weighted_error(x, w, rounded, labels)
    assert run.inertia() == pytest.approx(error, rel=1e-12)
    np.testing.assert_array_equal(mass, np.bincount(labels, weights=w, minlength=k))


def test_weighted_error_and_masses_in_c_and_numpy(ihc, monkeypatch):
    x, w = _weighted_colours(ihc)
    centers = x[[0, 500, 5000, 20000]]
    labels = kmeans.assign(x, centers)
    compiled = kmeans.weighted_error(x, w, centers, labels)
    monkeypatch.setattr(_lloyd_kernel, "_ckmeans", None)
    plain = kmeans.weighted_error(x, w, centers, labels)
    assert compiled[0] == pytest.approx(plain[0], rel=1e-12)
    np.testing.assert_array_equal(compiled[1], plain[1])
    assert compiled[1].sum() == w.sum() == ihc.shape[0] * ihc.shape[1]


@pytest.mark.parametrize("space", ["rgb", "lab", "grey", "many"])
def test_grid_summary_in_c_is_numpys_bit_for_bit(kernel, ihc, monkeypatch, space):
    from napari_kmeans_vq.core.colorspace import rgb_to_lab

    x, w = _weighted_colours(ihc)
    if space == "many":  # over 50,000 points: the C grid passes run on two threads
        noisy = ihc.astype(np.int16) + np.random.default_rng(0).integers(-6, 7, ihc.shape)
        x, w = _weighted_colours(np.clip(noisy, 0, 255).astype(np.uint8))
        assert len(x) > 50_000
    if space == "lab":
        x = np.ascontiguousarray(rgb_to_lab(x / 255.0))
    elif space == "grey":
        x, inverse = np.unique(x @ [0.25, 0.5, 0.25], return_inverse=True)
        w = np.bincount(inverse, weights=w)
        x = x[:, np.newaxis]
    for target in (256, 8192, 32768):
        compiled = kmeans._summary(x, w, target)
        with monkeypatch.context() as patch:
            patch.setattr(_lloyd_kernel, "_ckmeans", None)
            plain = kmeans._summary(x, w, target)
        assert len(compiled[0]) < len(x) or target >= len(x) // 2
        np.testing.assert_array_equal(compiled[0], plain[0])
        np.testing.assert_array_equal(compiled[1], plain[1])
        if space in ("rgb", "many"):  # 8-bit colours: the C code may read them as bytes
            for exact in (False, True):  # exact: sums added up on two threads ("many")
                from_bytes = kmeans._summary(x, w, target, x.astype(np.uint8), exact)
                np.testing.assert_array_equal(from_bytes[0], plain[0])
                np.testing.assert_array_equal(from_bytes[1], plain[1])


@pytest.mark.parametrize("k", [1, 4, 37])
def test_seeding_in_c_is_numpys_bit_for_bit(kernel, ihc, monkeypatch, k):
    x, w = _weighted_colours(ihc)
    sx, sw = kmeans._summary(x, w, 8192)
    compiled = kmeans.kmeans_plusplus(sx, sw, k, np.random.default_rng(k))
    monkeypatch.setattr(_lloyd_kernel, "_ckmeans", None)
    plain = kmeans.kmeans_plusplus(sx, sw, k, np.random.default_rng(k))
    np.testing.assert_array_equal(compiled, plain)
    # the centres are distinct points of the summary
    assert len(np.unique(plain, axis=0)) == k
    assert all((sx == c).all(axis=1).any() for c in plain)


def test_threaded_passes_give_the_same_result_every_time(kernel, ihc):
    # 45k colours x 64 centres: the C passes run on two threads, each over a fixed half
    x, w = _weighted_colours(ihc)
    start = kmeans.kmeans_plusplus(x, w, 64, np.random.default_rng(3))
    runs = []
    for _ in range(3):
        run = _lloyd_kernel.KernelRun(x, w, start)
        runs.append((run.iterate(300, 0.0), run.centers.copy(), run.labels.copy()))
    for other in runs[1:]:
        assert other[0] == runs[0][0]
        np.testing.assert_array_equal(other[1], runs[0][1])
        np.testing.assert_array_equal(other[2], runs[0][2])


def test_one_thread_or_two_give_the_same_result(kernel, ihc):
    x, w = _weighted_colours(ihc)
    start = kmeans.kmeans_plusplus(x, w, 64, np.random.default_rng(5))
    two = _lloyd_kernel.KernelRun(x, w, start)
    with _threads.one_thread():
        one = _lloyd_kernel.KernelRun(x, w, start)
        assert one._sizes()[3] == 1
        one_steps = one.iterate(300, 0.0)
    # the threads a call may use are the calling thread's at that call
    assert one._sizes()[3] == two._sizes()[3] == 2
    assert one_steps == two.iterate(300, 0.0)
    np.testing.assert_array_equal(one.centers, two.centers)
    np.testing.assert_array_equal(one.labels, two.labels)
    assert one.inertia() == two.inertia()


@pytest.mark.parametrize("k", [4, 64])
def test_sums_kept_up_to_date_equal_sums_recomputed(kernel, ihc, k):
    # Integer colours and counts: the kernel only updates the sums of points that change
    # cluster; that must be exactly what recomputing every sum on every pass gives.
    x, w = _weighted_colours(ihc)
    assert _lloyd_kernel.integral(x, w)
    start = kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(3))
    runs = []
    for exact in (False, True):
        for threads in (1, 2):
            with _threads.one_thread() if threads == 1 else contextlib.nullcontext():
                run = _lloyd_kernel.KernelRun(x, w, start, exact)
                steps = run.iterate(300, 0.0)  # (labels copied: the run's go to the next one)
                runs.append((steps, run.centers, run.labels.copy(), run.inertia()))
    for steps, centers, labels, inertia in runs[1:]:
        assert steps == runs[0][0] and steps[0] > 3
        np.testing.assert_array_equal(centers, runs[0][1])
        np.testing.assert_array_equal(labels, runs[0][2])
        # (exact runs take the inertia from their sums, the others make a pass)
        assert inertia == pytest.approx(runs[0][3], rel=1e-12)
    assert runs[0][3] == runs[1][3] and runs[2][3] == runs[3][3]


@pytest.mark.parametrize(("channels", "k"), [(3, 4), (3, 64), (4, 8)])
def test_8_bit_points_read_as_bytes_give_the_float_result(kernel, ihc, channels, k):
    # Exact problems may hand the C code their 8-bit colours as they are: every pass must
    # give what it gives on the float64 copy, to the last bit (3 channels have their own
    # paths, two points at a time among them; 4 take the general ones).
    pixels = ihc.reshape(-1, 3)
    if channels == 4:
        pixels = np.concatenate([pixels, pixels[:, :1] // 2 + pixels[:, 2:] // 2], axis=1)
    hist = ColorHistogram.from_pixels(np.ascontiguousarray(pixels))
    colours, w = hist.colors, hist.counts.astype(np.float64)
    x = colours.astype(np.float64)
    np.testing.assert_array_equal(
        _lloyd_kernel.moments(colours, w, True), _lloyd_kernel.moments(x, w, True)
    )
    start = kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(k))
    runs = [_lloyd_kernel.KernelRun(points, w, start, True) for points in (colours, x)]
    labels = [run.labels.copy() for run in runs]
    np.testing.assert_array_equal(*labels)
    steps = [run.iterate(300, 0.0) for run in runs]
    assert steps[0] == steps[1] and steps[0][0] > 3
    np.testing.assert_array_equal(runs[0].centers, runs[1].centers)
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    assert runs[0].inertia() == runs[1].inertia()
    moved = [run.move(np.round(run.centers)) for run in runs]
    np.testing.assert_array_equal(*moved)
    assert runs[0].error()[0] == runs[1].error()[0]
    fits = [
        kmeans.weighted_kmeans(points, w, k, n_init=3, integral=True, random_state=1)
        for points in (colours, x)
    ]
    assert fits[0]._points.dtype == np.uint8  # no float64 copy was made
    np.testing.assert_array_equal(fits[0].centers, fits[1].centers)
    np.testing.assert_array_equal(fits[0].labels, fits[1].labels)
    assert fits[0].inertia == fits[1].inertia
    # an empty cluster (two seeds on one point) takes the costliest point, read as bytes
    start[1] = start[0]
    runs = [_lloyd_kernel.KernelRun(points, w, start, True) for points in (colours, x)]
    assert not np.any(runs[0].labels == 1)
    steps = [run.iterate(300, 0.0) for run in runs]
    assert steps[0] == steps[1]
    np.testing.assert_array_equal(runs[0].centers, runs[1].centers)
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    with pytest.raises(ValueError, match="exact"):
        _lloyd_kernel.KernelRun(colours, w, start)


@pytest.mark.parametrize("k", [4, 64])
def test_exact_error_from_the_sums_equals_a_pass_over_the_points(kernel, ihc, k):
    # After a move to a rounded palette, an exact run's sums give J and the clusters'
    # weights exactly: what weighted_error's pass gives, to the last bit.
    x, w = _weighted_colours(ihc)
    run = _lloyd_kernel.KernelRun(
        x, w, kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(2)), True
    )
    run.iterate(300, 0.0)
    assert run.error() is None  # the means are not integers
    labels = run.move(np.round(run.centers))
    error, mass = run.error()
    assert (error, mass.tolist()) == (
        kmeans.weighted_error(x, w, np.round(run.centers), labels)[0],
        np.bincount(labels, weights=w, minlength=k).tolist(),
    )
    assert _lloyd_kernel.KernelRun(x, w, run.centers).error() is None  # not exact
    # Past the limit where every sum stays exact, no answer rather than a wrong one.
    huge = _lloyd_kernel.KernelRun(x * 2.0**20, w, np.round(run.centers) * 2.0**20, True)
    assert huge.error() is None


def test_integral_needs_integers_and_sums_below_2_to_the_52(kernel):
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    w = np.array([3.0, 1.0])
    assert _lloyd_kernel.integral(x, w)
    assert not _lloyd_kernel.integral(x + 0.5, w)
    assert not _lloyd_kernel.integral(x, w - 0.25)
    assert not _lloyd_kernel.integral(x, -w)
    assert not _lloyd_kernel.integral(x * 2.0**40, w * 2.0**12)


def test_one_thread_holds_in_the_calling_thread_only(kernel):
    import threading

    seen = []
    with _threads.one_thread():
        other = threading.Thread(target=lambda: seen.append(_threads.thread_limit()))
        other.start()
        other.join()
        seen.append(_threads.thread_limit())
    seen.append(_threads.thread_limit())
    assert seen == [2, 1, 2]


def test_a_tie_after_a_far_move_is_searched_again(path):
    # One point at the origin, labelled 2; centre 0 comes from far away to exactly as near
    # as centre 2: lower bound minus shift cancels, and the tie must still go to index 0.
    # (Found by review: a margin on the final bound alone left 1 in 2 such ties unsearched.)
    rng = np.random.default_rng(0)
    x = np.zeros((1, 3))
    for _ in range(300):
        p, q, r = rng.random(3) + 0.1
        near, far = np.array([-p, q, r]), np.array([-p, q, r]) * 1e9
        start = np.array([far, [-1e10] * 3, [p, q, r]])
        moved = np.array([near, [-1e10] * 3, [p, q, r]])
        if path == "kernel":
            run = _lloyd_kernel.KernelRun(x, np.ones(1), start)
            assert run.move(moved)[0] == 0
        else:
            bounds = kmeans._Bounds(x, np.ones(1), start)
            assert bounds.labels[0] == 2
            bounds.move(moved)
            assert bounds.labels[0] == 0


def test_an_outlier_that_shrinks_the_summary_to_a_few_cells(path):
    # 20,000 colours near 0 and one far away: the grid summary is two cells, too few to
    # seed K = 4; the seedings then use every point (no crash, the same on both paths)
    rng = np.random.default_rng(1)
    x = np.vstack([rng.random((20_000, 3)), [[1e6, 1e6, 1e6]]])
    w = np.ones(len(x))
    assert len(kmeans._summary(x, w, 8192)[0]) < 4 * 4
    result = kmeans.weighted_kmeans(x, w, 4)
    assert result.converged
    assert np.bincount(result.labels, minlength=4).min() > 0
    assert (result.labels[-1] == result.labels[:-1]).sum() == 0  # the outlier alone


@pytest.mark.parametrize("dim", [1, 3])
def test_the_numpy_summary_leaves_the_points_alone(without_kernel, dim):
    rng = np.random.default_rng(dim)
    x = np.round(rng.random((20_000, dim)) * 4000)
    w = rng.integers(1, 5, len(x)).astype(np.float64)
    before = x.copy()
    kmeans._summary(x, w, 8192)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("seed", range(6))
def test_fractional_weights_reseed_alike(kernel, seed):
    # weights that are not whole numbers leave rounding residue in running masses; an
    # emptied cluster must still be found empty on both paths
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(100.0, 40.0, size=(1500, 3)))
    w = rng.gamma(1.5, 2.0, size=1500)
    start = x[rng.choice(1500, size=9, replace=False)]
    start[3] = start[2]
    _both_paths(x, w, start)


@pytest.mark.parametrize("k", [4, 16, 50])
def test_unrounded_points_search_alike_two_at_a_time(kernel, k):
    # Lab-like coordinates (no integers, no exact sums): the C pass searches the points
    # its bounds leave in doubt two at a time, and adds the sums in point order after;
    # labels and the fixed point must be those of the numpy path.
    rng = np.random.default_rng(k)
    x = rng.normal(0.0, 25.0, size=(6000, 3)) + np.array([50.0, 0.0, 0.0])
    w = rng.gamma(2.0, 1.5, size=6000)
    start = x[rng.choice(6000, size=k, replace=False)]
    compiled, _ = _both_paths(x, w, start)
    np.testing.assert_array_equal(compiled.labels, kmeans.assign(x, compiled.centers))


def test_weighted_kmeans_rejects_non_finite_points():
    x = np.array([[0.0, 0.0, 0.0], [1.0, np.nan, 0.0], [5.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match="finite"):
        kmeans.weighted_kmeans(x, np.ones(3), 2)


@pytest.mark.parametrize("k", [4, 16])
def test_runs_side_by_side_give_the_result_of_runs_in_turn(kernel, ihc, monkeypatch, k):
    side_by_side = quantize(ihc, k)
    assert kmeans._in_parallel(np.empty((45_100, 3)), k, None)
    monkeypatch.setattr(kmeans, "_PARALLEL_RUNS_MAX_WORK", 0)
    in_turn = quantize(ihc, k)
    np.testing.assert_array_equal(side_by_side.centroids, in_turn.centroids)
    np.testing.assert_array_equal(side_by_side.labels, in_turn.labels)
    assert side_by_side.distortion == in_turn.distortion
    # with a progress callback, or a one-thread limit, runs go in turn
    assert not kmeans._in_parallel(np.empty((45_100, 3)), k, lambda *a: None)
    with _threads.one_thread():
        assert not kmeans._in_parallel(np.empty((45_100, 3)), k, None)


def test_kernel_rejects_arrays_of_the_wrong_size(kernel):
    from napari_kmeans_vq.core import _ckmeans

    x = np.zeros((10, 3))
    state = [np.ones(10), np.zeros((2, 3)), np.zeros(10, np.int32), np.zeros(10), np.zeros(10)]
    sums = np.zeros(8 * 2 * 4)
    with pytest.raises(ValueError, match="weights"):
        _ckmeans.assign(x, np.ones(9), *state[1:], sums, 10, 2, 3, 1, 0)
    with pytest.raises(ValueError, match="labels"):
        _ckmeans.assign(x, *state[:2], np.zeros(10, np.int64), *state[3:], sums, 10, 2, 3, 1, 0)
    with pytest.raises(ValueError, match="points: expected 30 items of float64"):
        _ckmeans.assign(x.astype(np.float32), *state, sums, 10, 2, 3, 1, 0)
    labels = np.full(10, 5, np.int32)
    with pytest.raises(ValueError, match="out of range"):
        _ckmeans.iterate(x, *state[:2], labels, *state[3:], sums, 10, 2, 3, 1, 0, 5, 0.0)
    with pytest.raises(ValueError, match="out of range"):
        _ckmeans.move(x, *state[:2], labels, *state[3:], sums, 10, 2, 3, 1, 0, np.zeros((2, 3)))


def test_without_the_extension_the_engine_runs_on_numpy(without_kernel):
    assert not _lloyd_kernel.available()
    x = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [10.0, 0.0, 0.0], [10.0, 2.0, 0.0]])
    result = kmeans.weighted_kmeans(x, np.ones(4), 2, init=x[[0, 2]])
    np.testing.assert_array_equal(result.labels, [0, 0, 1, 1])
    assert result.inertia == pytest.approx(4.0)


@pytest.mark.parametrize("k", [16, 80])
def test_labels_are_nearest_codewords_ties_to_the_lower_index(ihc, path, k):
    # ihc has thousands of pixels exactly equidistant from two codewords at K = 16
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


def test_labels_of_a_collected_run_are_not_what_callers_hold(kernel, ihc):
    # A run's per-point arrays are reused by later runs once it is gone: what assign()
    # and a fit return must be copies, untouched by the runs that follow.
    import gc

    x, w = _weighted_colours(ihc)
    first = kmeans.assign(x, x[[0, 1, 2, 3]])
    result = kmeans.weighted_kmeans(x, w, 4, random_state=1)
    kept_first, kept_labels = first.copy(), result.labels.copy()
    relabelled = result.relabel(np.round(result.centers))
    kept_relabelled = relabelled.copy()
    del result
    gc.collect()
    for seed in range(3):  # later runs of every size take the spare arrays
        kmeans.weighted_kmeans(x, w, 4, random_state=10 + seed)
        kmeans.assign(x, x[[5, 6, 7, 8]])
    np.testing.assert_array_equal(first, kept_first)
    np.testing.assert_array_equal(relabelled, kept_relabelled)
    assert len(_scratch._spare) + len(_scratch._returned) >= 1  # (arrays were given back)
    np.testing.assert_array_equal(
        kept_labels, kmeans.assign(x, kmeans.weighted_kmeans(x, w, 4, random_state=1).centers)
    )


@pytest.mark.parametrize("k", [4, 16])
def test_racing_seedings_still_ends_at_a_fixed_point_as_good(path, ihc, monkeypatch, k):
    # The seedings race four iterations on the summary and only the best two converge:
    # the fit must still be a fixed point of Lloyd's on every colour, about as good as
    # when every seeding converges.
    x, w = _weighted_colours(ihc)
    raced = kmeans.weighted_kmeans(x, w, k, n_init=5)
    monkeypatch.setattr(kmeans, "_COARSE_RACE", 10_000)
    full = kmeans.weighted_kmeans(x, w, k, n_init=5)
    for result in (raced, full):
        assert result.converged
        np.testing.assert_array_equal(result.labels, kmeans.assign(x, result.centers))
    assert raced.inertia <= 1.01 * full.inertia


def test_the_tolerance_is_the_same_on_both_paths(kernel, ihc, monkeypatch):
    # The convergence threshold comes from the points' weighted variance: summed in point
    # order in C and in numpy, so both paths stop at the same iteration.
    x, w = _weighted_colours(ihc)
    for points, weights in ((x, w), (x / 7.0, w * 0.3)):
        compiled, compiled_squares = kmeans._weighted_variance(points, weights)
        if weights is w:  # integer colours and counts: exact sums in any order
            assert [a.tolist() for a in kmeans._weighted_variance(points, weights, True)] == [
                compiled.tolist(),
                compiled_squares.tolist(),
            ]
        monkeypatch.setattr(_lloyd_kernel, "_ckmeans", None)
        plain, plain_squares = kmeans._weighted_variance(points, weights)
        monkeypatch.undo()
        np.testing.assert_array_equal(compiled, plain)
        np.testing.assert_array_equal(compiled_squares, plain_squares)
        mean = (weights @ points) / weights.sum()
        np.testing.assert_allclose(
            compiled, (weights @ (points - mean) ** 2) / weights.sum(), rtol=1e-9
        )
        np.testing.assert_allclose(compiled_squares, weights @ points**2, rtol=1e-12)


@pytest.mark.parametrize("channels", [9, 16])
def test_images_of_up_to_16_channels_quantize_on_both_paths(ihc, monkeypatch, channels):
    rng = np.random.default_rng(channels)
    image = np.concatenate(
        [ihc[:96, :96]] * (channels // 3) + [ihc[:96, :96, : channels % 3]], axis=-1
    )
    image = (image.astype(np.int16) + rng.integers(-2, 3, image.shape)).clip(0, 255)
    image = image.astype(np.uint8)
    compiled = quantize(image, 5)
    monkeypatch.setattr(_lloyd_kernel, "_ckmeans", None)
    plain = quantize(image, 5)
    assert compiled.palette.shape == (5, channels)
    np.testing.assert_array_equal(compiled.palette, plain.palette)
    np.testing.assert_array_equal(compiled.labels, plain.labels)


def test_nan_points_are_rejected_even_when_said_to_be_integral():
    x = np.array([[0.0, 0.0, 0.0], [1.0, np.nan, 0.0], [5.0, 5.0, 5.0]] * 5000)
    with pytest.raises(ValueError, match="finite"):
        kmeans.weighted_kmeans(x, np.ones(len(x)), 2, integral=True)
