"""Weighted k-means: k-means++ seeding and Lloyd's algorithm on weighted points.

The points are an image's distinct colours and the weights their pixel counts, so the
objective is exactly the all-pixel one. With many points, seedings first converge on a
grid summary of them, and only the best go on to every point (coarse to fine; see
:func:`weighted_kmeans`). Lloyd's passes run in this package's C extension when it was
built (:mod:`._lloyd_kernel`), and otherwise in numpy. Both skip the distance
computations that cannot change an assignment, using Hamerly's bounds (Hamerly 2010,
"Making k-means even faster"): each point keeps an upper bound on the distance to its
centre and a lower bound on the distance to any other; only points whose bounds overlap
are re-examined. Both paths give plain Lloyd's result from the same initial centres, with
ties going to the lower centre index.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from . import _lloyd_kernel
from ._threads import one_thread, thread_limit

_ASSIGN_CHUNK = 1 << 16
# numpy is slow along a short last axis (an (M, 3) array's rows: min(axis=0),
# sum(axis=1), broadcasting a (3,) vector): several times slower than the same work on
# whole columns or through a matrix product, which is how the hot paths below do it.
_KDTREE_MAX_DIM = 4
_KDTREE_MIN_CENTERS = 8
_WORKERS = -1
_THREADED_QUERY_MIN = 20_000
# Above this many points, seeding and the first Lloyd iterations run on a grid summary of
# them (occupied cells' weighted means); the final iterations always run on every point.
_SUMMARY_MIN = 8192
_SUMMARY_PER_CLUSTER = 32
# ... but a few clusters are seeded and placed as well from fewer cells: this many per
# cluster, at least _SUMMARY_FEWEST (K = 4 on the six benchmark photos: 10-25% faster
# fits, J within 0.01%; at K = 8 some J moved by 1-2% either way, so 8192 stays from K = 8).
_SUMMARY_FEW_PER_CLUSTER = 1024
_SUMMARY_FEWEST = 4096
_SUMMARY_MAX_CELLS = 1 << 22
_SUMMARY_MIN_PER_CLUSTER = 4
# Coarse optima refined on every point for a few iterations before the best is finished.
# Four iterations rank them as twenty did on the benchmark images but one (J +0.6% on a
# photo at K = 64, still below every peer's) and save 10-30% at K = 16-256.
_REFINED_SEEDINGS = 2
_PROBE_ITERATIONS = 4
# A runner-up is probed if it came this close on the summary (1.01 before: the same J in
# 22 of 24 cells, +0.2% and -0.2% in two at K = 256, and 10-25% faster at K = 16-256).
_PROBE_WITHIN = 1.002
# ... but not if it came this close: then it is the best optimum again, stopped by the
# tolerance a little elsewhere, or one as good (on the benchmark photos at K = 4, runners-up
# within 0.01% had centres at most 2 levels from the best's), and probing it costs a run
# over every point (fruits, K = 4: 1 ms of 11).
_PROBE_GAIN_MIN = 1.0001
# The seedings race as many Lloyd iterations on the summary; the best two go on to
# convergence there (measured against all converging: 5-40% faster at K = 4-16 and 256,
# even at 64; J the same in 19 of 24 cells, -0.2% to +0.5% in the others).
_COARSE_RACE = 4
_COARSE_KEEP = 2
# Lloyd's passes run in compiled code (see _lloyd_kernel) up to this many centres. Above
# it the numpy path's k-d tree finds a point's nearest centres faster than the C code's
# search of every centre (measured: about even at 256 on 300k colours).
_KERNEL_MAX_CLUSTERS = 256
# A one-off assignment searches every centre in C: up to this many centres.
_KERNEL_MAX_CLUSTERS_ASSIGN = 64
# Independent runs (seedings, probes) on up to this many points x centres go two at a
# time on two threads (measured on 2 cores: K = 16 fits of the small benchmark images
# 5-25% faster, K = 64 about 5%, K = 4 within the noise).
_PARALLEL_RUNS_MAX_WORK = 1_000_000
# With this few centres a pass is mostly the bounds' update, which a second thread per
# pass splits poorly: runs go side by side at any size (fruits, 300k colours, K = 4: 20%
# faster).
_PARALLEL_RUNS_ANY_SIZE = 8
_LOOSEN = 1e-9  # relative margin on Hamerly's bounds (see _Bounds.move)


@dataclass(frozen=True)
class KMeansResult:
    """The outcome of :func:`weighted_kmeans`.

    Attributes
    ----------
    centers : ndarray, shape (K, D)
    labels : ndarray, shape (M,)
        Index of the nearest centre of each point (int32 from the C path, intp from
        numpy's).
    inertia : float
        Sum of weight times squared distance to the assigned centre (for exact runs in C,
        from the cluster sums: see :func:`._lloyd_kernel.inertia_from_sums`).
    n_iter : int
        Lloyd iterations of the best run.
    n_init : int
        Runs made; the one with the lowest inertia is kept.
    converged : bool
        Whether the best run stopped before ``max_iter``.
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    n_init: int
    converged: bool
    _state: _Bounds | _lloyd_kernel.KernelRun | None = field(
        default=None, repr=False, compare=False
    )
    _points: np.ndarray | None = field(default=None, repr=False, compare=False)

    def reorder(self, order: np.ndarray) -> KMeansResult:
        """This result with the centres in ``order`` (a permutation); the run state it
        keeps for :meth:`relabel` is renumbered in place."""
        inverse = np.argsort(order)
        if self._state is not None:
            self._state.reorder(order, inverse)
        return dataclasses.replace(
            self,
            centers=self.centers[order],
            labels=inverse[self.labels].astype(self.labels.dtype),
        )

    def relabel(self, centers: np.ndarray) -> np.ndarray:
        """Labels of the points for centres moved a little (e.g. rounded), reusing the bounds.

        Only points whose bounds leave doubt (ties included) are searched again, so the
        labels equal :func:`assign` on all points at a fraction of its cost.
        """
        if self._state is None:
            return assign(self._points, centers)
        if isinstance(self._state, _Bounds):
            self._state.move(np.asarray(centers, dtype=np.float64))
            return self._state.labels.copy()
        return self._state.move(centers)

    def relabelled_error(self) -> tuple[float, np.ndarray] | None:
        """After :meth:`relabel` to integer centres: the weighted squared error and each
        centre's weight, read exactly off the compiled run's sums when it kept exact ones
        (see :meth:`._lloyd_kernel.KernelRun.error`); None when :func:`weighted_error`
        must make a pass instead."""
        if isinstance(self._state, _lloyd_kernel.KernelRun):
            return self._state.error()
        return None


def prepare() -> None:
    """Load the compiled kernel now (a few milliseconds, once a process).

    Fits call it before they start their clock, so ``fit_seconds_`` times the fit alone.
    """
    _lloyd_kernel.available()


def weighted_kmeans(
    points: np.ndarray,
    weights: np.ndarray,
    n_clusters: int,
    *,
    init: str | np.ndarray = "k-means++",
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | np.random.Generator | None = 0,
    progress=None,
    integral: bool | None = None,
    values: np.ndarray | None = None,
) -> KMeansResult:
    """Cluster weighted points with k-means++ seeding and Lloyd's algorithm.

    Parameters
    ----------
    points : ndarray, shape (M, D)
        Distinct points; must number at least ``n_clusters``. uint8 points with
        ``integral=True`` are read as bytes by the compiled passes (no float64 copy).
    weights : ndarray, shape (M,)
        Positive weights (pixel counts).
    n_clusters : int
        K.
    init : "k-means++" or ndarray of shape (K, D)
        Seeding method, or the initial centres themselves (then ``n_init`` is 1).
    n_init : int
        Independent seedings; the run with the lowest weighted inertia is kept.
    max_iter : int
        Most Lloyd iterations per run.
    tol : float
        Stop when the summed squared centre shift falls to ``tol`` times the mean per-axis
        weighted variance of the points (scikit-learn's convention); 0 runs until no
        assignment changes. Labels are always those of the final centres.
    random_state : int, Generator or None
        Seed for the seeding.
    progress : callable, optional
        Called as ``progress("fit", fraction_done)`` after every Lloyd iteration; an
        exception it raises (to cancel) propagates.
    integral : bool or None
        True when the caller knows that points and weights are integers whose weighted
        sums stay below 2**52 (an integer image's colours and pixel counts), None to check
        (a pass over the points). Then the compiled passes keep the cluster sums up to
        date instead of recomputing them, with the same result.
    values : ndarray of uint8, optional
        The points themselves as uint8 (8-bit colours), for the coarse stage's summary to
        read: a byte per coordinate instead of eight, the same summary.

    Returns
    -------
    KMeansResult
    """
    points = np.asarray(points)
    # 8-bit colours of an exact problem stay bytes: the compiled passes read them so, and
    # no float64 copy is made (24 bytes a colour, page faults and all).
    as_bytes = (
        points.dtype == np.uint8
        and points.ndim == 2
        and integral is True
        and _lloyd_kernel.available()
        and (n_clusters if isinstance(init, str) else len(init)) <= _KERNEL_MAX_CLUSTERS
    )
    x = np.ascontiguousarray(points, dtype=None if as_bytes else np.float64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if as_bytes and values is None:
        values = x
    if x.shape[0] < n_clusters:
        raise ValueError(f"need at least {n_clusters} distinct points, got {x.shape[0]}")
    exact = _lloyd_kernel.available() and (
        integral if integral is not None else _lloyd_kernel.integral(x, w)
    )
    variance, squares = _weighted_variance(x, w, exact)
    # NaN or inf anywhere makes the sums so too: only then are the points looked at.
    if not np.isfinite(variance).all() and not (np.isfinite(x).all() and np.isfinite(w).all()):
        raise ValueError("points and weights must be finite (no NaN or inf)")
    rng = np.random.default_rng(random_state)
    tol_abs = float(tol) * float(variance.mean())
    # Exact runs take their inertia from their sums, which needs sum w|x|^2 (exact too).
    exact = float(squares.sum()) if exact else None
    if not isinstance(init, str):
        centers = np.array(init, dtype=np.float64)
        starts, n_init = [lambda: centers], 1
        summary = None
    else:
        sx, sw = _summary(x, w, _summary_size(n_clusters), values, exact is not None)
        # A summary of a few cells (colours crowded into one corner of a box stretched by
        # an outlier) cannot seed K clusters: then the seedings use every point.
        if sx.shape[0] < _SUMMARY_MIN_PER_CLUSTER * n_clusters:
            sx, sw = x, w
        # The draws are made here, in order; the seedings themselves run with their runs.
        trials = _local_trials(n_clusters)
        # (seeding reads float64: bytes, when there was no summary, converted once)
        seed_points = np.ascontiguousarray(sx, dtype=np.float64)
        starts = [
            functools.partial(
                _plusplus, seed_points, sw, n_clusters, _uniforms(rng, n_clusters, trials), trials
            )
            for _ in range(n_init)
        ]
        summary = (sx, sw) if sx.shape[0] < x.shape[0] else None
    if summary is None:
        share = 1 / n_init
        runs = _each(
            lambda i, start: _scored(
                _run(x, w, start(), max_iter, tol_abs, _stage(progress, i * share, share), exact)
            ),
            list(enumerate(starts)),
            _in_parallel(x, n_clusters, progress),
        )
        best = min(runs, key=lambda run: run[0].inertia())
    else:
        # Coarse to fine: every seeding converges on the summary (cheap); the best (and a
        # close runner-up) are refined on all points for a few iterations, and the better
        # one to convergence.
        # Lloyd's full passes thus start close to a fixed point, and a coarse optimum that
        # refines poorly does not decide the result alone.
        part = 1 / (n_init + 1)
        race = min(_COARSE_RACE, max_iter) if n_init > _COARSE_KEEP else max_iter
        heats = _each(
            lambda i, start: _scored(
                _run(*summary, start(), race, tol_abs, _stage(progress, i * part, part))
            ),
            list(enumerate(starts)),
            _in_parallel(summary[0], n_clusters, progress),
        )
        if race < max_iter:
            # (reports hold at the coarse stage's end: a callback means one thread, so
            # the heats above have reported it already)
            step = _stage(progress, n_init * part, 0)
            heats = sorted(heats, key=lambda h: h[0].inertia())[:_COARSE_KEEP]
            heats = _each(
                lambda _, h: _scored(h if h[2] else _resume(h[0], max_iter - h[1], tol_abs, step)),
                list(enumerate(heats)),
                _in_parallel(summary[0], n_clusters, progress),
            )
        runs = [h[0] for h in heats]
        scored = sorted(((run.inertia(), i, run) for i, run in enumerate(runs)))
        best_coarse = scored[0][0]
        # Runner-up coarse optima are worth probing only if they came close on the summary
        # but not too close (see _PROBE_GAIN_MIN), and are not the same optimum again.
        coarse = [scored[0][2]]
        for inertia, _, run in scored[1:]:
            if _PROBE_GAIN_MIN * best_coarse < inertia <= _PROBE_WITHIN * best_coarse and not any(
                _same_centers(run.centers, c.centers) for c in coarse
            ):
                coarse.append(run)
        sub = part / (_REFINED_SEEDINGS + 1)
        coarse = coarse[:_REFINED_SEEDINGS]
        probes = _each(
            lambda j, c: _scored(
                _run(
                    x,
                    w,
                    c.centers,
                    min(_PROBE_ITERATIONS, max_iter),
                    tol_abs,
                    _stage(progress, n_init * part + j * sub, sub),
                    exact,
                )
            ),
            list(enumerate(coarse)),
            _in_parallel(x, n_clusters, progress),
        )
        state, probe_iter, probe_converged = min(probes, key=lambda run: run[0].inertia())
        if probe_converged:
            best = state, probe_iter, True
        else:
            step = _stage(progress, 1 - sub, sub)
            state, n_iter, converged = _resume(state, max_iter - probe_iter, tol_abs, step)
            best = state, probe_iter + n_iter, converged
    state, n_iter, converged = best
    return KMeansResult(
        state.centers.copy(),
        state.labels.copy(),
        state.inertia(),
        n_iter,
        n_init,
        converged,
        state,
        x,
    )


def _summary_size(n_clusters: int) -> int:
    """How many points the coarse stage's summary aims at for K clusters."""
    few = max(_SUMMARY_FEWEST, _SUMMARY_FEW_PER_CLUSTER * n_clusters)
    return max(min(_SUMMARY_MIN, few), _SUMMARY_PER_CLUSTER * n_clusters)


def _weighted_variance(
    x: np.ndarray, w: np.ndarray, exact: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted variance of each axis, and each axis's sum of w x**2. Every sum runs in
    point order, in C (one pass, no BLAS threads left spinning) or in numpy (cumulative
    sums), so both paths get the same tolerance bit for bit. ``exact``: the points are
    exact (see weighted_kmeans's ``integral``), which uint8 points must be."""
    d = x.shape[1]
    if _lloyd_kernel.available():
        sums = _lloyd_kernel.moments(x, w, exact)
    else:
        sums = np.empty(1 + 2 * d)  # (x holds at least one point: see weighted_kmeans)
        sums[0] = np.cumsum(w)[-1]
        for t in range(d):
            weighted = w * x[:, t]
            sums[1 + t] = np.cumsum(weighted)[-1]
            sums[1 + d + t] = np.cumsum(weighted * x[:, t])[-1]
    mean = sums[1 : 1 + d] / sums[0]
    return np.maximum(sums[1 + d :] / sums[0] - mean * mean, 0.0), sums[1 + d :]


def _scored(run):
    """A run from :func:`_run`, its inertia computed (in the thread that ran it)."""
    run[0].inertia()
    return run


def _same_centers(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.allclose`` of the coordinate-wise sorted centres, without its overhead."""
    sa, sb = np.sort(a, axis=0), np.sort(b, axis=0)
    return bool(np.all(np.abs(sa - sb) <= 1e-8 + 1e-5 * np.abs(sb)))


def _in_parallel(x: np.ndarray, n_clusters: int, progress) -> bool:
    """Whether independent runs on ``x`` go to two threads at once.

    Only light runs (few points x centres, or at most _PARALLEL_RUNS_ANY_SIZE centres),
    whose C passes then keep to one thread each; and only without a progress callback
    (which is then always called from the caller's thread) nor a one-thread limit (see
    _threads.one_thread).
    """
    return (
        progress is None
        and _lloyd_kernel.available()
        and thread_limit() > 1
        and (
            n_clusters <= _PARALLEL_RUNS_ANY_SIZE
            or x.shape[0] * n_clusters <= _PARALLEL_RUNS_MAX_WORK
        )
    )


def _each(run, items, parallel: bool) -> list:
    """``[run(*item) for item in items]``, on two threads when ``parallel``.

    The calling thread and one pool thread take the items in turn from a shared counter:
    the caller starts at once (waking a pool thread takes 0.1-0.5 ms on the machines
    measured, a large part of a light run). The runs are independent and each is
    deterministic, so the results are the same either way; the C passes release the
    GIL, so two runs use both cores.
    """
    if not parallel or len(items) < 2:
        return [run(*item) for item in items]
    results = [None] * len(items)
    taken = itertools.count()  # next() on it is atomic under the GIL

    def drain():
        # Two runs at once already use both cores: their passes keep to one thread each.
        with one_thread():
            for i in taken:
                if i >= len(items):
                    return
                results[i] = run(*items[i])

    helper = _pool().submit(drain)
    try:
        drain()
    finally:
        # Still queued (behind another fit's helper): this thread did every run itself.
        if not helper.cancel():
            helper.result()
    return results


_executor = None
_executor_lock = threading.Lock()


def _pool():
    global _executor
    with _executor_lock:
        if _executor is None:
            from concurrent.futures import ThreadPoolExecutor

            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-kmeans-vq")
        return _executor


def _run(x, w, centers, max_iter, tol_abs, step=None, exact=None):
    """Lloyd's iterations from ``centers``: returns (state, iterations, converged).

    The state has ``centers``, ``labels`` (nearest centres of ``centers``) and
    ``inertia()``. The compiled kernel runs them when it was built and pays off (see the
    limit at the top). ``exact``: for points exact in the sense of
    :class:`._lloyd_kernel.KernelRun`, their sum of w|x|^2; None for others.
    """
    if len(centers) <= _KERNEL_MAX_CLUSTERS and _lloyd_kernel.available():
        state = _lloyd_kernel.KernelRun(x, w, centers, exact is not None, exact)
        return (state, *state.iterate(max_iter, tol_abs, step))
    return _lloyd(_Bounds(x, w, centers), max_iter, tol_abs, step)


def _resume(state, max_iter, tol_abs, step=None):
    """Go on iterating a state made by :func:`_run`."""
    if isinstance(state, _Bounds):
        return _lloyd(state, max_iter, tol_abs, step)
    return (state, *state.iterate(max_iter, tol_abs, step))


def kmeans_plusplus(
    points: np.ndarray,
    weights: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    n_local_trials: int | None = None,
) -> np.ndarray:
    """Greedy weighted k-means++ seeding (Arthur and Vassilvitskii 2007).

    Each new centre is the best of ``n_local_trials`` candidates (default ``2 + ln K``, as
    scikit-learn does) drawn with probability proportional to weight times squared distance
    to the nearest centre so far. Distances are sums of squared differences and every sum
    runs in point order, as in the C extension, which gives the same centres bit for bit.
    """
    if n_local_trials is None:
        n_local_trials = _local_trials(n_clusters)
    uniforms = _uniforms(rng, n_clusters, n_local_trials)
    return _plusplus(points, weights, n_clusters, uniforms, n_local_trials)


def _local_trials(n_clusters: int) -> int:
    return 2 + int(np.log(n_clusters))


def _uniforms(rng: np.random.Generator, n_clusters: int, trials: int) -> np.ndarray:
    """All the draws of one seeding at once: the same numbers as drawing step by step."""
    return rng.random(1 + (n_clusters - 1) * trials)


def _plusplus(points, weights, n_clusters, uniforms, n_local_trials) -> np.ndarray:
    """:func:`kmeans_plusplus` with its draws made."""
    x = np.ascontiguousarray(points, dtype=np.float64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    centers = np.empty((n_clusters, x.shape[1]))
    if _lloyd_kernel.available():
        _lloyd_kernel.seed(x, w, uniforms, centers, n_local_trials)
        return centers
    columns = np.ascontiguousarray(x.T)  # one row per axis (see the note at the top)
    first = _draw(np.cumsum(w), uniforms[:1])[0]
    centers[0] = x[first]
    closest = _squared_distances(columns, x[first : first + 1])[0]
    for i in range(1, n_clusters):
        cumulative = np.cumsum(w * closest)
        draws = uniforms[1 + (i - 1) * n_local_trials : 1 + i * n_local_trials]
        candidates = _draw(cumulative, draws)
        d2 = _squared_distances(columns, x[candidates])
        np.minimum(d2, closest, out=d2)
        # cumsum adds in point order (np.sum would add pairwise), as the C code does
        potentials = np.cumsum(d2 * w, axis=1)[:, -1]
        best = int(np.argmin(potentials))
        centers[i] = x[candidates[best]]
        closest = d2[best]
    return centers


def _squared_distances(columns: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(len(centers), M) squared distances, summed axis by axis in order."""
    d2 = np.zeros((centers.shape[0], columns.shape[1]))
    for axis, column in enumerate(columns):
        diff = column - centers[:, axis, np.newaxis]
        d2 += diff * diff
    return d2


def assign(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each point (ties go to the lower index)."""
    x = np.ascontiguousarray(points, dtype=np.float64)
    if len(centers) <= _KERNEL_MAX_CLUSTERS_ASSIGN and _lloyd_kernel.available():
        return _lloyd_kernel.assign(x, centers).astype(np.intp)
    labels, _, _ = _nearest_two(x, np.asarray(centers, dtype=np.float64))
    return labels


def weighted_error(
    points: np.ndarray, weights: np.ndarray, centers: np.ndarray, labels: np.ndarray
) -> tuple[float, np.ndarray]:
    """Sum over points of weight times squared distance to the centre they are labelled
    with, and the total weight of each centre's points (one pass in C)."""
    x = np.ascontiguousarray(points, dtype=np.float64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    c = np.ascontiguousarray(centers, dtype=np.float64)
    if _lloyd_kernel.available():
        return _lloyd_kernel.weighted_error(x, w, c, labels)
    diff = x - c[labels]
    return float(_row_norms2(diff) @ w), np.bincount(labels, weights=w, minlength=len(c))


def _draw(cumulative: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Indices drawn with probability proportional to the steps of ``cumulative``."""
    targets = uniforms * cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, targets, side="right"), len(cumulative) - 1)


def _summary(x: np.ndarray, w: np.ndarray, target: int, values=None, exact=False):
    """About ``target`` weighted points that stand for ``x``: occupied grid cells' means.

    Seeding costs K passes over its points and early Lloyd iterations move centres far; on
    the summary both are cheap. The last iterations run on every point, so the result is a
    fixed point of Lloyd's algorithm on all the data. The C extension, when built, makes
    the same cells bit for bit, 2-4 times faster; given ``values`` (``x`` as uint8), it
    reads those instead, and for ``exact`` points (integer coordinates and weights, see
    weighted_kmeans's ``integral``) it adds the cells up on two threads.
    """
    if x.shape[0] <= target:
        return x, w
    dim = x.shape[1]
    cells = max(2, int(np.ceil(target ** (1.0 / dim))))
    limit = int(_SUMMARY_MAX_CELLS ** (1.0 / dim))
    if _lloyd_kernel.available() and dim <= 8:
        summary = _lloyd_kernel.grid_summary(
            x, w, cells, limit, target, _SUMMARY_MAX_CELLS, values, exact
        )
        return (x, w) if summary is None else summary
    # One row per axis (see the note at the top); a copy, as it is scaled in place below
    # (for one axis, x.T would be a view of the caller's points).
    columns = np.array(x.T, dtype=np.float64, order="C")
    low = columns.min(axis=1)
    span = np.maximum(columns.max(axis=1) - low, 1e-12)
    offset = columns - low[:, np.newaxis]
    # Colours crowd into a small part of their bounding box: start with a grid of about
    # target cells and refine it until enough of them are occupied.
    scratch = np.empty_like(offset)
    while True:
        factor = cells / span  # one multiplication per coordinate (as in C)
        grid = np.multiply(offset, factor[:, np.newaxis], out=scratch).astype(np.int32)
        np.minimum(grid, cells - 1, out=grid)
        key = grid[0]  # cell index, row-major (int32: at most _SUMMARY_MAX_CELLS cells)
        for row in grid[1:]:
            key *= cells
            key += row
        occupied = np.bincount(key, minlength=cells**dim)
        uniq = np.flatnonzero(occupied)
        if len(uniq) >= target // 2 or (cells + 1) ** dim > _SUMMARY_MAX_CELLS:
            break
        cells = _finer_grid(cells, len(uniq), target, limit)
    if len(uniq) >= x.shape[0] // 2:
        return x, w
    remap = np.zeros(cells**dim, dtype=np.intp)
    remap[uniq] = np.arange(len(uniq))
    inverse = remap[key]
    total = np.bincount(inverse, weights=w, minlength=len(uniq))
    columns *= w
    means = np.stack(
        [np.bincount(inverse, weights=row, minlength=len(uniq)) for row in columns], axis=1
    )
    return means / total[:, np.newaxis], total


def _finer_grid(cells: int, occupied: int, target: int, limit: int) -> int:
    """The next grid to try: the grids grow by 1.25x + 1 cells per axis, and occupied
    cells about as the square of that (colours lie near a surface), so skip the grids
    that would still hold fewer than target / 2 (grid_cells in C does the same)."""
    want = cells * math.sqrt((target // 2) / max(occupied, 1))
    while True:
        cells = min(int(cells * 1.25) + 1, limit)
        if cells >= want or cells == limit:
            return cells


def _row_norms2(x: np.ndarray) -> np.ndarray:
    """Squared length of each row of an (M, D) array."""
    return (x * x) @ np.ones(x.shape[1])


def _nearest_two(x: np.ndarray, centers: np.ndarray):
    """Nearest centre of each point, its distance, and the distance to the second nearest."""
    n, dim = x.shape
    k = centers.shape[0]
    if k == 1:
        first = np.sqrt(_squared_distances(np.ascontiguousarray(x.T), centers)[0])
        return np.zeros(n, dtype=np.intp), first, np.full(n, np.inf)
    if dim <= _KDTREE_MAX_DIM and k >= _KDTREE_MIN_CENTERS:
        # In a few dimensions a k-d tree of the centres beats computing all K distances.
        from scipy.spatial import cKDTree  # imported here: keeps `import` fast

        # Threads pay off only on large queries: each call starts and joins its own.
        workers = _WORKERS if n >= _THREADED_QUERY_MIN else 1
        dist, idx = cKDTree(centers).query(x, k=2, workers=workers)
        labels = idx[:, 0].astype(np.intp)
        # The tree orders equidistant centres as it likes; ties go to the lower index, as
        # everywhere else (an encoder must give the labels the fit gave).
        tied = np.flatnonzero(dist[:, 0] == dist[:, 1])
        if tied.size:
            d2 = _squared_distances(np.ascontiguousarray(x[tied].T), centers)
            labels[tied] = np.argmin(d2, axis=0)
        return labels, dist[:, 0], dist[:, 1]
    labels = np.zeros(n, dtype=np.intp)
    first = np.empty(n)
    second = np.empty(n)
    for start in range(0, n, _ASSIGN_CHUNK):
        stop = min(start + _ASSIGN_CHUNK, n)
        # Squared differences summed axis by axis, as the C code does (no |x|^2 - 2 x.c +
        # |c|^2, which loses digits to cancellation and may break near-ties otherwise);
        # few centres, so the nearest two are kept up to date centre by centre on whole rows.
        d2 = _squared_distances(np.ascontiguousarray(x[start:stop].T), centers)
        best, runner, lab = d2[0].copy(), np.full(stop - start, np.inf), labels[start:stop]
        for j in range(1, k):
            row = d2[j]
            closer = row < best  # strict: ties keep the lower index, as argmin does
            np.minimum(runner, np.where(closer, best, row), out=runner)
            np.minimum(best, row, out=best)
            lab[closer] = j
        first[start:stop] = best
        second[start:stop] = runner
    return labels, np.sqrt(first), np.sqrt(second)


class _Bounds:
    """Assignments of weighted points with Hamerly's bounds and running cluster sums."""

    def __init__(self, x, w, centers):
        self.x, self.w = x, w
        self.x2 = _row_norms2(x)
        # Weighted coordinates, one contiguous row per axis (for bincount).
        self.wx = np.ascontiguousarray(x.T) * w
        self.centers = np.array(centers, dtype=np.float64)
        self.k = self.centers.shape[0]
        self._full()

    def _full(self):
        self.labels, self.upper, self.lower = _nearest_two(self.x, self.centers)
        self.sums = np.stack(
            [np.bincount(self.labels, weights=wx, minlength=self.k) for wx in self.wx], axis=1
        )
        self.mass = np.bincount(self.labels, weights=self.w, minlength=self.k)

    def means(self):
        """The weighted means of the clusters; empty clusters are reseeded (returns None then)."""
        # Counted, not read off the running mass, which keeps rounding residue when
        # weights are not whole numbers.
        empty = np.bincount(self.labels, minlength=self.k) == 0
        if empty.any():
            # Move each empty centre onto the point that costs the most where it is (the
            # lowest index among equal costs, as the C code does).
            diff = np.ascontiguousarray((self.x - self.centers[self.labels]).T)
            cost = self.w * _squared_distances(diff, np.zeros((1, self.x.shape[1])))[0]
            far = np.argsort(-cost, kind="stable")[: int(empty.sum())]
            self.centers[np.flatnonzero(empty)] = self.x[far]
            self._full()
            return None
        return self.sums / self.mass[:, np.newaxis]

    def reorder(self, order: np.ndarray, inverse: np.ndarray) -> None:
        """Renumber the clusters: centre ``order[i]`` becomes centre ``i``."""
        self.centers = self.centers[order]
        self.labels = inverse[self.labels]
        self.sums, self.mass = self.sums[order], self.mass[order]

    def move(self, new_centers) -> int:
        """Move the centres and reassign exactly the points that may change; count changes."""
        shift = np.sqrt(((new_centers - self.centers) ** 2).sum(axis=1))
        self.centers = np.array(new_centers, dtype=np.float64)
        if self.k == 1:
            return 0
        # A point tied between two centres must be re-examined, so that ties break exactly
        # as a full nearest-centre search breaks them: hence >=, and every term of the
        # bounds loosened a little, as they are updated in floating point (lower - shift
        # can cancel, with a rounding error relative to the terms, not the result).
        self.upper += shift[self.labels]
        self.upper *= 1.0 + _LOOSEN
        top = np.argsort(shift)[-2:]
        self.lower *= 1.0 - _LOOSEN
        self.lower -= np.where(self.labels == top[-1], shift[top[0]], shift[top[-1]]) * (
            1.0 + _LOOSEN
        )
        cc = ((self.centers[:, np.newaxis, :] - self.centers[np.newaxis]) ** 2).sum(axis=2)
        np.fill_diagonal(cc, np.inf)
        half_gap = 0.5 * np.sqrt(cc.min(axis=1)) * (1.0 - _LOOSEN)
        bound = np.maximum(half_gap[self.labels], self.lower)
        cand = np.flatnonzero(self.upper >= bound)
        if cand.size == 0:
            return 0
        own = self.centers[self.labels[cand]]
        self.upper[cand] = np.sqrt(_row_norms2(self.x[cand] - own))
        cand = cand[self.upper[cand] >= bound[cand]]
        if cand.size == 0:
            return 0
        new, up, low = _nearest_two(self.x[cand], self.centers)
        old = self.labels[cand]
        moved = new != old
        self.labels[cand], self.upper[cand], self.lower[cand] = new, up, low
        if moved.any():
            idx, src, dst = cand[moved], old[moved], new[moved]
            for d, wx in enumerate(self.wx):
                self.sums[:, d] -= np.bincount(src, weights=wx[idx], minlength=self.k)
                self.sums[:, d] += np.bincount(dst, weights=wx[idx], minlength=self.k)
            self.mass -= np.bincount(src, weights=self.w[idx], minlength=self.k)
            self.mass += np.bincount(dst, weights=self.w[idx], minlength=self.k)
        return int(moved.sum())

    def inertia(self) -> float:
        """Weighted squared error, from the running sums: sum w|x|^2 - 2 c.S + m|c|^2."""
        if not hasattr(self, "_wx2"):
            self._wx2 = float(self.w @ self.x2)
        return _lloyd_kernel.inertia_from_sums(self._wx2, self.centers, self.sums, self.mass)


def _stage(progress, start: float, width: float):
    """Per-iteration callback for a run that spans [start, start + width] of the fit."""
    if progress is None:
        return None

    def step(n_iter: int, max_iter: int):
        progress("fit", start + width * min(1.0, n_iter / max_iter))

    return step


def _lloyd(state: _Bounds, max_iter, tol_abs, step=None):
    """Lloyd's iterations from the state's centres, until converged or ``max_iter``."""
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        means = state.means()
        if means is None:
            continue
        shift2 = float(((means - state.centers) ** 2).sum())
        changed = state.move(means)
        if step is not None:
            step(n_iter, max_iter)
        if changed == 0 or shift2 <= tol_abs:
            converged = True
            break
    return state, n_iter, converged
