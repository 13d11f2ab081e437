"""The k-means engine: one compiled implementation, checked against the tutorial's Lloyd."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, quantize
from napari_kmeans_vq._limits import MAX_FIT_COLORS
from napari_kmeans_vq.core import _colors, _kmeans, _threads, kmeans
from napari_kmeans_vq.core.histogram import ColorHistogram
from napari_kmeans_vq.core.tutorial import lloyd
from napari_kmeans_vq.io.samples import ihc_image


def _weighted_colours(image):
    hist = ColorHistogram.from_pixels(image.reshape(-1, image.shape[-1]))
    return hist.colors, hist.counts.astype(np.float64)


@pytest.mark.parametrize("k", [1, 3, 8, 24])
def test_engine_equals_the_tutorials_lloyd_from_the_same_centres(ihc_crop, k):
    x, w = _weighted_colours(ihc_crop)
    init = x[np.random.default_rng(k).choice(len(x), size=k, replace=False)].astype(float)
    want_centers, want_labels = lloyd(x, w, init)
    for threads in (1, 2):
        got = kmeans.weighted_kmeans(x, w, k, init=init, tol=0, n_threads=threads)
        assert got.converged
        np.testing.assert_array_equal(got.labels, want_labels)
        # integer colours: exact sums, the same means to the last bit
        np.testing.assert_array_equal(got.centers, want_centers)


@pytest.mark.parametrize("dim", [1, 2, 4])
def test_engine_equals_the_tutorials_lloyd_on_float_points(dim):
    rng = np.random.default_rng(dim)
    x = rng.normal(0.0, 25.0, size=(3000, dim))
    w = rng.gamma(2.0, 1.5, size=3000)
    init = x[rng.choice(3000, size=7, replace=False)]
    want_centers, want_labels = lloyd(x, w, init)
    got = kmeans.weighted_kmeans(x, w, 7, init=init, tol=0, n_threads=2)
    np.testing.assert_array_equal(got.labels, want_labels)
    np.testing.assert_allclose(got.centers, want_centers, rtol=1e-12, atol=1e-12)


def test_assign_breaks_ties_to_the_lower_index():
    centres = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    points = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(kmeans.assign(points, centres), [0, 2, 1, 0])
    uint8_points = points.astype(np.uint8)
    np.testing.assert_array_equal(kmeans.assign(uint8_points, centres), [0, 0, 1, 0])


@pytest.mark.parametrize("k", [1, 2, 24, 25, 32, 33, 70])
def test_nearest_and_second_nearest_over_blocks_of_centres(k):
    # whole-number coordinates: exact distances, so ties happen and must go to the lower
    # index; K past the search's block of 32 centres and past the full-search limit
    rng = np.random.default_rng(k)
    centres = rng.integers(0, 6, size=(k, 3)).astype(np.float64)
    points = rng.integers(0, 6, size=(4000, 3)).astype(np.uint8)
    squared = ((points[:, None, :].astype(np.float64) - centres[None]) ** 2).sum(axis=2)
    want = squared.argmin(axis=1)  # (the first of equal minima)
    ordered = np.sort(squared, axis=1)
    m = len(points)
    labels, upper, lower = np.empty(m, np.int32), np.empty(m), np.empty(m)
    none = np.empty((k, 0), np.int32), np.empty((k, 0)), np.zeros(k)
    for threads in (1, 2):
        _kmeans.nearest(points, centres, labels, upper, lower, *none, False, threads)
        np.testing.assert_array_equal(labels, want)
        np.testing.assert_array_equal(upper, np.sqrt(ordered[:, 0]))
        second = np.sqrt(ordered[:, 1]) if k > 1 else np.full(m, np.inf)
        np.testing.assert_array_equal(lower, second)


@pytest.mark.parametrize("k", [2, 16, 40])
def test_the_search_after_a_swap_equals_a_full_search(k):
    rng = np.random.default_rng(k)
    points = rng.integers(0, 8, size=(5000, 3)).astype(np.uint8)  # exact ties happen
    w = np.ones(len(points))
    centres = rng.integers(0, 8, size=(k, 3)).astype(np.float64)
    before = kmeans._Run(points, w, centres, 2)
    for swapped in (0, k // 2, k - 1):
        new = centres.copy()
        new[swapped] = points[rng.integers(len(points))]
        for threads in (1, 2):
            after = kmeans._Run(points, w, new, threads, swap=(before, swapped))
            full = kmeans._Run(points, w, new, threads)
            np.testing.assert_array_equal(after.labels, full.labels)
            np.testing.assert_array_equal(after.upper, full.upper)
            assert (after.lower <= full.lower).all()  # a lower bound
            np.testing.assert_array_equal(after.total, full.total)


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_float_cluster_sums_add_in_point_order(dim):
    rng = np.random.default_rng(dim)
    x = rng.normal(0.0, 30.0, size=(2000, dim))
    w = rng.gamma(2.0, 1.5, size=2000)
    labels = np.repeat(rng.integers(0, 5, size=400), 5).astype(np.int32)  # runs and jumps
    sums, mass = np.empty((5, dim)), np.empty(5)
    _kmeans.cluster_sums(x, w, labels, sums, mass, np.empty((0, dim + 1), np.int64), 2)
    want, want_mass = np.zeros((5, dim)), np.zeros(5)
    for i in range(len(x)):  # float64 scalars: the same roundings as the kernel's
        want[labels[i]] = want[labels[i]] + w[i] * x[i]
        want_mass[labels[i]] = want_mass[labels[i]] + w[i]
    np.testing.assert_array_equal(sums, want)
    np.testing.assert_array_equal(mass, want_mass)


@pytest.mark.parametrize("k", [4, 40])
def test_relabel_after_rounding_equals_a_full_search(ihc, k):
    x, w = _weighted_colours(ihc)
    result = kmeans.weighted_kmeans(x, w, k, n_init=2)
    rounded = np.round(result.centers)
    np.testing.assert_array_equal(result.relabel(rounded), kmeans.assign(x, rounded))
    np.testing.assert_array_equal(result.labels, kmeans.assign(x, result.centers))


def test_empty_clusters_are_reseeded_on_the_costliest_point():
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(100.0, 40.0, size=(2000, 3))).clip(0, 255).astype(np.uint8)
    x = np.unique(x, axis=0)
    w = rng.integers(1, 9, size=len(x)).astype(np.float64)
    start = x[rng.choice(len(x), size=6, replace=False)].astype(float)
    start[1] = start[0]  # cluster 1 starts empty: ties go to centre 0
    result = kmeans.weighted_kmeans(x, w, 6, init=start, tol=0)
    assert result.converged
    assert np.bincount(result.labels, minlength=6).min() > 0


def test_a_tie_after_a_far_move_is_searched_again():
    # One point at the origin, labelled 2; centre 0 comes from far away to exactly as near
    # as centre 2: lower bound minus shift cancels, and the tie must still go to index 0.
    rng = np.random.default_rng(0)
    x = np.zeros((1, 3))
    for _ in range(300):
        p, q, r = rng.random(3) + 0.1
        far = np.array([-p, q, r]) * 1e9
        start = np.array([far, [-1e10] * 3, [p, q, r]])
        moved = np.array([[-p, q, r], [-1e10] * 3, [p, q, r]])
        run = kmeans._Run(x, np.ones(1), start, 1)
        assert run.labels[0] == 2
        assert run.move(moved)[0] == 0


def test_the_summary_of_integer_colours_keeps_exact_integer_sums(ihc):
    x, w = _weighted_colours(ihc)
    means, weights, cell, rows = kmeans._summary(x, w, 4096, 2)
    # each cell's row: its colours' summed counts times colour, and their count
    want = np.zeros_like(rows)
    np.add.at(want, cell, np.column_stack([x.astype(np.int64) * w[:, None], w]).astype(np.int64))
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_array_equal(means, rows[:, :3] / rows[:, 3:])
    start = kmeans.kmeans_plusplus(means, weights, 8, np.random.default_rng(0), n_threads=1)
    for threads in (1, 2):
        run = kmeans._Run(means, weights, start, threads, rows=rows)
        run.iterate(300, 0.0)
        # the clusters' int64 sums after the updates are those of their cells, afresh
        fresh = np.zeros((8, 4), np.int64)
        np.add.at(fresh, run.labels, rows)
        np.testing.assert_array_equal(run.total, fresh)
        np.testing.assert_array_equal(run.labels, kmeans.assign(means, run.centers))


def test_an_outlier_that_shrinks_the_summary_to_a_few_cells():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.random((20_000, 3)), [[1e6, 1e6, 1e6]]])
    w = np.ones(len(x))
    assert len(kmeans._summary(x, w, 8192, 1)[0]) < 4 * 4
    result = kmeans.weighted_kmeans(x, w, 4)
    assert result.converged
    assert np.bincount(result.labels, minlength=4).min() > 0
    assert (result.labels[-1] == result.labels[:-1]).sum() == 0  # the outlier alone


def test_weighted_kmeans_rejects_non_finite_points():
    x = np.array([[0.0, 0.0, 0.0], [1.0, np.nan, 0.0], [5.0, 5.0, 5.0]] * 5000)
    with pytest.raises(ValueError, match="finite"):
        kmeans.weighted_kmeans(x, np.ones(len(x)), 2)


def test_max_iter_bounds_the_iterations_on_every_colour(ihc):
    full = quantize(ihc, 16)
    assert full.info["converged"] and full.info["n_iter"] > 3
    capped = quantize(ihc, 16, max_iter=3)
    assert capped.info["n_iter"] == 3
    assert not capped.info["converged"]


def test_higher_effort_is_no_worse_on_a_real_image(ihc):
    js = {e: quantize(ihc, 12, effort=e).distortion for e in (1, 5, 10)}
    assert js[10] <= js[1] * 1.001
    assert quantize(ihc, 12, effort=1).info["n_init"] < quantize(ihc, 12).info["n_init"]


@pytest.mark.parametrize("effort", [0, 11, 2.5, True])
def test_effort_must_be_an_integer_from_1_to_10(ihc_crop, effort):
    with pytest.raises((TypeError, ValueError), match="effort"):
        quantize(ihc_crop, 4, effort=effort)


def test_plan_follows_effort():
    low, high = kmeans.Plan.from_effort(1, 16), kmeans.Plan.from_effort(10, 16)
    assert low.n_init < high.n_init and low.summary < high.summary
    assert low.swaps < high.swaps and low.finish <= high.finish
    assert kmeans.Plan.from_effort(5, 2).swaps < kmeans.Plan.from_effort(5, 64).swaps
    assert kmeans.Plan.from_effort(5, 1024).summary > kmeans.Plan.from_effort(5, 16).summary


def _greedy_plusplus(x, w, k, uniforms):
    """Greedy k-means++ in plain numpy, as the kernel documents it."""
    trials = 2 + int(np.log(k))

    def draw(cumulative, u):
        return np.minimum(np.searchsorted(cumulative, u * cumulative[-1], "right"), len(x) - 1)

    centers = [x[draw(np.cumsum(w), uniforms[:1])[0]]]
    closest = ((x - centers[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        candidates = draw(np.cumsum(w * closest), uniforms[1 + (i - 1) * trials :][:trials])
        d2 = ((x[:, np.newaxis] - x[candidates][np.newaxis]) ** 2).sum(axis=-1)
        potential = (w[:, np.newaxis] * np.minimum(closest[:, np.newaxis], d2)).sum(axis=0)
        centers.append(x[candidates[np.argmin(potential)]])
        closest = np.minimum(closest, ((x - centers[-1]) ** 2).sum(axis=1))
    return np.array(centers)


@pytest.mark.parametrize("k", [2, 7, 30])
def test_seeding_is_greedy_kmeans_plusplus(ihc_crop, k):
    x, w = _weighted_colours(ihc_crop)
    x = x.astype(np.float64)
    want = _greedy_plusplus(x, w, k, np.random.default_rng(k).random(kmeans._plusplus_draws(k)))
    for threads in (1, 2):
        got = kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(k), n_threads=threads)
        # (numpy sums the potentials in another order: only a near tie could differ)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="uniforms"):
        _kmeans.plusplus(x, w, np.zeros(2 * k), 2, np.zeros((k, 3)), 1)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_seeding_is_greedy_kmeans_plusplus_in_any_dimension(dim):
    rng = np.random.default_rng(dim)
    x = rng.normal(0.0, 10.0, size=(3000, dim))  # (three chunks of points)
    w = rng.gamma(2.0, 1.0, size=3000)
    uniforms = rng.random(kmeans._plusplus_draws(12))
    want = _greedy_plusplus(x, w, 12, uniforms)
    for threads in (1, 2):
        got = np.empty((12, dim))
        _kmeans.plusplus(x, w, uniforms, kmeans._plusplus_trials(12), got, threads)
        np.testing.assert_array_equal(got, want)


def test_a_far_point_is_drawn_by_weight_times_squared_distance():
    rng = np.random.default_rng(3)
    w, dist = rng.gamma(2.0, 1.0, 500), rng.random(500)
    dist[::7] = 0.0  # points on a centre are never drawn
    cumulative = np.cumsum(w * dist * dist)
    for u in [0.0, 0.3, 0.999999, *rng.random(20)]:
        want = np.searchsorted(cumulative, u * cumulative[-1], side="right")
        got = _kmeans.draw_far(w, dist, u)
        assert got == want and dist[got] > 0
    assert _kmeans.draw_far(w, np.zeros(500), 0.5) == -1
    with pytest.raises(ValueError, match="one entry per weight"):
        _kmeans.draw_far(w, dist[:10], 0.5)


# -- local search ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_swap_costs_are_the_costs_after_each_swap(ihc_crop, dtype):
    x, w = _weighted_colours(ihc_crop)
    x = x.astype(dtype)
    k = 6
    start = kmeans.kmeans_plusplus(x, w, k, np.random.default_rng(0), n_threads=1)
    run = kmeans._Run(x, w, start, 1)
    run.iterate(300, 0.0)
    run.exact_bounds()
    xf = x.astype(np.float64)
    for point in xf[[0, len(x) // 2, len(x) - 1]]:
        costs = []
        for threads in (1, 2):
            costs.append(np.empty(k))
            _kmeans.swap_costs(
                run.x, w, run.labels, run.upper, run.lower, point, costs[-1], threads
            )
        assert costs[0].tobytes() == costs[1].tobytes()
        for j in range(k):
            centers = run.centers.copy()
            centers[j] = point
            d2 = ((xf[:, np.newaxis] - centers[np.newaxis]) ** 2).sum(axis=-1).min(axis=1)
            assert costs[0][j] == pytest.approx(float((w * d2).sum()), rel=1e-9)


def test_local_search_lowers_the_cost_of_a_lloyd_optimum(ihc):
    # Lloyd's optimum from one seeding is a local one: swaps reach a lower cost.
    x, w = _weighted_colours(ihc)
    rng = np.random.default_rng(0)
    run = kmeans._Run(x, w, kmeans.kmeans_plusplus(x.astype(float), w, 24, rng, n_threads=1), 1)
    run.iterate(300, 0.0)
    before = run.inertia()
    after = kmeans._local_search(run, 10, rng, 300, 0.0, 1, None, 0.0, 0.0)
    assert after.inertia() < before
    np.testing.assert_array_equal(after.labels, kmeans.assign(x, after.centers))


def test_j_is_within_half_a_percent_of_scikit_learns_best_of_ten(ihc):
    # The example: at K = 8 on this slide, J was 2% above this reference.
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x, w = _weighted_colours(ihc)
    ref = sklearn_cluster.KMeans(8, n_init=10, random_state=0).fit(
        x.astype(float), sample_weight=w
    )
    palette = np.clip(np.rint(ref.cluster_centers_), 0, 255)
    d2 = ((x[:, np.newaxis].astype(float) - palette[np.newaxis]) ** 2).sum(axis=-1).min(axis=1)
    ref_j = float((w * d2).sum()) / w.sum()
    assert quantize(ihc, 8).distortion <= 1.005 * ref_j


# -- threads ---------------------------------------------------------------------------


def _images(ihc):
    rng = np.random.default_rng(0)
    crop = ihc[:160, :160]
    noisy = (crop.astype(np.int16) + rng.integers(-3, 4, crop.shape)).clip(0, 255)
    many = np.concatenate([noisy] * 5 + [noisy[..., :1]], axis=-1).astype(np.uint8)
    return {
        "uint8 rgb": ihc,
        "uint16 rgb": ihc.astype(np.uint16) * 257 + rng.integers(0, 200, ihc.shape, np.uint16),
        "float rgb": ihc[:200, :200] / 255.0,
        "one channel": ihc[..., 1],
        "rgba": np.dstack([crop, crop[..., :1] // 2 + crop[..., 2:] // 2]),
        "16 channels": many,
    }


_KINDS = [
    "uint8 rgb", "uint16 rgb", "float rgb", "one channel", "rgba", "16 channels",
    "uint16 grey", "float32 rgb", "uint8 lab", "uint8 hed",
]  # fmt: skip


def _image_and_options(ihc, kind):
    images = _images(ihc)
    if kind == "uint16 grey":
        return images["uint16 rgb"][..., 0], {"channel_axis": None}
    if kind == "float32 rgb":  # the whole image: enough colours for two threads' shares
        return (ihc / 255.0).astype(np.float32), {}
    if kind in ("uint8 lab", "uint8 hed"):
        return ihc, {"color_space": kind.split()[1]}
    image = images[kind]
    return image, {"channel_axis": None} if image.ndim == 2 else {"alpha": "quantize"}


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("k", [5, 48])
def test_one_thread_or_two_give_byte_identical_results(ihc, kind, k):
    if _threads.available_cores() < 2:
        pytest.skip("one core: n_threads=2 would run on one thread too")
    image, options = _image_and_options(ihc, kind)
    one = quantize(image, k, n_threads=1, **options)
    two = quantize(image, k, n_threads=2, **options)
    assert one.palette.tobytes() == two.palette.tobytes()
    assert one.labels.tobytes() == two.labels.tobytes()
    assert one.centroids.tobytes() == two.centroids.tobytes()
    assert one.distortion == two.distortion
    assert one.info["n_iter"] == two.info["n_iter"]


def test_applying_a_codebook_and_the_lazy_path_agree_on_one_thread_or_two(ihc):
    da = pytest.importorskip("dask.array")
    other = np.ascontiguousarray(ihc[::-1, ::-1])
    books = [Codebook(12, n_threads=n).fit(ihc) for n in (1, 2)]
    assert books[0].palette_.tobytes() == books[1].palette_.tobytes()
    encoded = [book.encode(other).tobytes() for book in books]
    applied = [quantize(other, codebook=books[0], n_threads=n).labels.tobytes() for n in (1, 2)]
    lazy = [
        quantize(da.from_array(ihc, chunks=(128, 128, 3)), 12, n_threads=n).labels.compute()
        for n in (1, 2)
    ]
    assert encoded[0] == encoded[1] == applied[0] == applied[1]
    assert lazy[0].tobytes() == lazy[1].tobytes() == quantize(ihc, 12).labels.tobytes()


# The compiled calls that take a thread count, as their last argument.
_THREADED = {
    _kmeans: [
        "nearest", "nearest_after_swap", "geometry", "move", "cluster_sums",
        "weighted_error", "moments", "plusplus", "grid_keys", "reseed_costs", "swap_costs",
    ],
    _colors: ["set_keys", "count", "lookup", "lookup_decode"],
}  # fmt: skip


@pytest.fixture
def threads_seen(monkeypatch):
    """Every thread count the compiled calls receive, by call."""
    seen = []

    def spy(module, name):
        real = getattr(module, name)

        def call(*args):
            seen.append((name, args[-1]))
            return real(*args)

        monkeypatch.setattr(module, name, call)

    for module, names in _THREADED.items():
        for name in names:
            spy(module, name)
    return seen


def test_n_threads_reaches_every_compiled_call(ihc, threads_seen):
    if _threads.available_cores() < 2:
        pytest.skip("needs two cores to tell one thread from the default")
    big = np.concatenate([ihc, ihc[::-1]], axis=0)  # enough work for two threads
    book = Codebook(16, n_threads=1).fit(big)
    book.encode(big[::-1])
    quantize(big, 16, n_threads=1)
    quantize(big[::-1], codebook=book, n_threads=1)
    quantize(big, 16, n_threads=1, color_space="lab", min_region=4)
    one = list(threads_seen)
    assert {name for name, _ in one} >= {"nearest", "move", "plusplus", "count", "lookup"}
    assert {n for _, n in one} == {1}, sorted({c for c in one if c[1] != 1})
    threads_seen.clear()
    quantize(big, 16, n_threads=2)
    assert max(n for _, n in threads_seen) == 2  # (the spy sees what a default run uses)


@pytest.mark.parametrize("kind", ["uint8 rgb", "uint16 rgb", "float rgb", "uint16 grey"])
def test_the_palette_comes_in_canonical_order(ihc, kind):
    image, options = _image_and_options(ihc, kind)
    for seed in (0, 7):  # another seed: possibly another optimum, but ordered alike
        q = quantize(image, 16, random_state=seed, **options)
        keys = [tuple(row) for row in q.palette.tolist()]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys) or kind == "uint16 grey"


def test_one_thread_holds_in_the_calling_thread_only():
    seen = []
    cores = _threads.available_cores()
    with _threads.one_thread():
        other = threading.Thread(target=lambda: seen.append(_threads.thread_limit()))
        other.start()
        other.join()
        seen.append(_threads.thread_limit())
        assert _threads.resolve(8) == 1
    seen.append(_threads.thread_limit())
    assert seen == [cores, 1, cores]


def test_threadpoolctl_limits_the_default_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert _threads.default_threads() == 1
    assert _threads.default_threads() == min(_threads.available_cores(), _kmeans.max_threads())


@pytest.mark.parametrize("n_threads", [0, -1, 1.5, "2"])
def test_n_threads_must_be_a_positive_integer(ihc_crop, n_threads):
    with pytest.raises((TypeError, ValueError), match="n_threads"):
        quantize(ihc_crop, 4, n_threads=n_threads)


def test_engine_info_describes_the_build():
    from napari_kmeans_vq.core import engine_info

    info = engine_info()
    assert info["threads"] >= 1 and info["cores"] >= 1
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert all(path.endswith((".so", ".pyd")) for path in info["modules"])


# -- inputs the kernels must survive ---------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [1e308, -1e308],  # a range that overflows float64 (it crashed the C engine)
        [1e308, 1e308 * 0.5],
        [5e-324, 1e-310],  # subnormals
        [-1e308, 5e-324],
        [np.finfo(np.float64).max, np.finfo(np.float64).min],
        [1e150, -1e150],  # the largest magnitudes accepted
    ],
)
def test_any_finite_float_image_is_processed_or_refused_clearly(values):
    rng = np.random.default_rng(0)
    img = rng.random((20, 20, 3))
    img[0, 0] = values[0]
    img[0, 1] = values[1]
    try:
        q = quantize(img, 4)
    except ValueError as exc:  # a clear refusal is fine; a crash is not
        assert "finite" in str(exc) or "large" in str(exc)
        return
    assert q.labels.shape == (20, 20)
    assert np.isfinite(q.palette).all()
    np.testing.assert_array_equal(q.reconstruction, q.palette[q.labels])
    # the extreme pixels get codewords of their own sign and order of magnitude
    assert np.sign(q.reconstruction[0, 0, 0]) == np.sign(values[0]) or values[0] == 0
    assert np.isfinite(q.distortion)


def test_an_image_of_subnormals_only_is_quantized():
    # (its scale to the engine's range, 2**1070, is past float64's largest power of two)
    rng = np.random.default_rng(0)
    img = rng.random((20, 20, 3)) * 1e-310
    q = quantize(img, 4)
    assert q.labels.shape == (20, 20) and len(np.unique(q.labels)) == 4
    assert (q.palette >= img.min()).all() and (q.palette <= img.max()).all()


def test_magnitudes_past_the_limit_are_refused_clearly():
    from napari_kmeans_vq._limits import MAX_FLOAT_MAGNITUDE

    img = np.random.default_rng(0).random((8, 8, 3))
    img[0, 0, 0] = -2 * MAX_FLOAT_MAGNITUDE
    with pytest.raises(ValueError, match=r"as large as -?2e\+150.*up to 1e\+150"):
        quantize(img, 2)


@pytest.mark.parametrize("space", ["lab", "oklab"])
def test_extreme_floats_in_perceptual_spaces_are_refused_clearly(space):
    img = np.random.default_rng(0).random((8, 8, 3))
    img[0, 0] = 1e150  # accepted in RGB; its conversion overflows
    with pytest.raises(ValueError, match=f"color_space='{space}'.*too large"):
        quantize(img, 4, color_space=space)


def test_zero_threads_means_one_and_writes_one_threads_buffer():
    # n_threads = 0 must not let OpenMP pick its own count: each thread writes its own
    # slice of delta, and only one slice was given.
    rng = np.random.default_rng(0)
    m, k, d = 200_000, 8, 3
    x = rng.integers(0, 256, (m, d), dtype=np.uint8)
    centers = rng.uniform(0, 255, (k, d))
    nbr, gap, zeros = np.zeros((k, 0), np.int32), np.zeros((k, 0)), np.zeros(k)
    whole = np.zeros((2, k, d + 1), np.int64)
    labels = np.zeros(m, np.int32)
    changed = _kmeans.move(
        x, np.ones(m), centers, zeros, zeros, nbr, gap, zeros, labels, np.zeros(m),
        np.zeros(m), np.empty((0, d + 1), np.int64), whole[:1], 0,
    )  # fmt: skip
    assert changed > 0 and whole[0].any()
    assert not whole[1].any()


def test_kernels_reject_arrays_of_the_wrong_size_or_labels_out_of_range():
    x = np.zeros((10, 3))
    centers = np.zeros((2, 3))
    labels = np.zeros(10, np.int32)
    nbr, gap, slack = np.zeros((2, 1), np.int32), np.zeros((2, 1)), np.zeros(2)
    bounds = np.zeros(10), np.zeros(10)
    none = np.empty((0, 4), np.int64)  # (no integer rows)
    with pytest.raises(ValueError, match="one entry per point"):
        _kmeans.nearest(x, centers, labels[:5], *bounds, nbr, gap, slack, False, 1)
    with pytest.raises(ValueError, match="coordinates"):
        _kmeans.nearest(x, np.zeros((2, 4)), labels, *bounds, nbr, gap, slack, False, 1)
    bad = np.full(10, 5, np.int32)
    with pytest.raises(ValueError, match="out of range"):
        _kmeans.nearest(x, centers, bad, *bounds, nbr, gap, slack, True, 1)
    with pytest.raises(ValueError, match="width"):
        wide = np.zeros((2, 2), np.int32)
        _kmeans.nearest(x, centers, labels, *bounds, wide, gap, slack, True, 1)
    with pytest.raises(ValueError, match="weights"):
        _kmeans.cluster_sums(x, np.ones(9), labels, np.zeros((2, 3)), np.zeros(2), none, 1)
    with pytest.raises(ValueError, match="out of range"):
        _kmeans.cluster_sums(x, np.ones(10), bad, np.zeros((2, 3)), np.zeros(2), none, 1)
    with pytest.raises(ValueError, match="out of range"):
        _kmeans.weighted_error(x, np.ones(10), centers, bad, np.zeros(2), 2)
    delta = np.zeros((2, 2, 4), np.int64)
    args = x.astype(np.uint8), np.ones(10), centers, np.zeros(2), np.zeros(2), nbr, gap, slack
    with pytest.raises(ValueError, match="out of range"):
        _kmeans.move(*args, bad, *bounds, none, delta, 2)
    with pytest.raises(ValueError, match="delta"):
        _kmeans.move(*args, labels, *bounds, none, delta[:1], 2)
    with pytest.raises(ValueError, match="rows"):
        _kmeans.move(*args, labels, *bounds, np.zeros((3, 4), np.int64), delta, 2)
    with pytest.raises(ValueError, match="out of range"):
        _kmeans.swap_costs(x, np.ones(10), bad, *bounds, np.zeros(3), np.zeros(2), 1)
    with pytest.raises(ValueError, match="coordinates"):
        _kmeans.swap_costs(x, np.ones(10), labels, *bounds, np.zeros(4), np.zeros(2), 1)
    with pytest.raises(ValueError, match="means"):
        _kmeans.update(np.zeros((2, 3)), np.ones(2), centers, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="must match"):
        _kmeans.update(np.zeros((2, 3)), np.ones(3), centers, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least one coordinate"):
        _kmeans.nearest(x[:, :0], centers[:, :0], labels, *bounds, nbr, gap, slack, False, 1)
    with pytest.raises(ValueError, match="D >= 1"):
        kmeans.assign(np.zeros((5, 0)), np.zeros((2, 0)))
    with pytest.raises(TypeError, match="signature"):  # wrong dtype: no specialisation
        _kmeans.nearest(x.astype(np.float32), centers, labels, *bounds, nbr, gap, slack, False, 1)


def test_stale_neighbour_lists_give_the_fit_of_fresh_ones(monkeypatch):
    # With K * K above the points, the centres' neighbour lists are kept across iterations
    # (the searches widen their bounds); measuring them afresh each time must change nothing.
    colors, counts = np.unique(ihc_image().reshape(-1, 3), axis=0, return_counts=True)
    x, w = colors[::4][:20_000], counts[::4][:20_000].astype(np.float64)
    k = 300
    assert k * k > 4 * len(x)
    fits = {}
    for stale in (0.0, kmeans._STALE, 10.0):
        monkeypatch.setattr(kmeans, "_STALE", stale)
        fits[stale] = kmeans.weighted_kmeans(x, w, k, n_init=1, random_state=3, tol=0)
    fresh = fits[0.0]
    for fit in fits.values():
        np.testing.assert_array_equal(fit.centers, fresh.centers)
        np.testing.assert_array_equal(fit.labels, fresh.labels)
        assert fit.n_iter == fresh.n_iter and fit.inertia == fresh.inertia


def test_the_largest_k_the_fit_takes_works_and_one_more_is_refused_clearly():
    image = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    cb = Codebook(MAX_FIT_COLORS, n_init=1, max_iter=5).fit(image)
    assert cb.n_colors_ == MAX_FIT_COLORS
    labels = cb.encode(image)
    assert labels.dtype == np.uint16 and len(np.unique(labels)) == MAX_FIT_COLORS
    with pytest.raises(ValueError, match=r"n_colors must be between 1 and 4,096.*from_palette"):
        Codebook(MAX_FIT_COLORS + 1).fit(image)
    # a larger palette is used as it is
    palette = np.unique(image.reshape(-1, 3), axis=0)[: MAX_FIT_COLORS + 1]
    big = Codebook.from_palette(palette)
    assert big.n_colors_ == MAX_FIT_COLORS + 1
    np.testing.assert_array_equal(big.decode(big.encode(palette[None])), palette[None])


def test_cluster_sums_of_no_points_are_zero():
    sums, mass = kmeans.cluster_sums(np.zeros((0, 3), np.uint8), None, np.zeros(0, int), 4)
    assert sums.shape == (4, 3) and not sums.any() and not mass.any()
    sums, mass = kmeans.cluster_sums(np.zeros(0), None, np.zeros(0, int), 2)  # 1-D points
    assert sums.shape == (2, 1) and not mass.any()
