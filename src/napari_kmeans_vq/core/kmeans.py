"""Weighted k-means: k-means++ seeding and Lloyd's algorithm on weighted points.

The points are an image's distinct colours and the weights their pixel counts, so the
objective is exactly the all-pixel one. Every pass over the points runs in the compiled
kernels (``_kmeans.pyx``); this module decides which passes to make:

* **coarse to fine**: with many points, the seedings are drawn and converge on a summary of
  the points (the weighted means of the occupied cells of a grid), and only the best of
  them go on to convergence on every point, so the result is a local optimum of Lloyd's
  algorithm on all the data, not on the summary;
* **local search** (Lattanzi and Sohler 2019, "A better k-means++ algorithm via local
  search"): the best optimum of the seedings is improved by swaps, each of a centre for a
  point drawn as k-means++ draws, kept when Lloyd's iterations from it reach a lower cost.
  Best-of-n restarts only sample Lloyd's local optima, whose costs spread over a few per
  cent; the swaps move from one optimum to a better one;
* **Hamerly's bounds** (Hamerly 2010, "Making k-means even faster"): each point keeps an
  upper bound on the distance to its centre and a lower bound on the distance to any
  other; only points whose bounds overlap are searched again. The labels are always those
  of a full search, ties to the lower centre index;
* **one knob**: ``effort`` (1 to 10) sets the seedings, the summary's size, the swaps and
  how many coarse optima are finished on every point (see :class:`Plan`).

Integer points (8- and 16-bit colours) with whole weights keep exact int64 cluster sums,
and so does their summary (each cell carries its colours' integer sums), so the same
input and seed give the same centres and labels, bit for bit, on any CPU and with any
number of threads; float points sum in a fixed order for the same reason.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import _kmeans
from ._threads import resolve, team

DEFAULT_EFFORT = 5
MAX_EFFORT = 10


@dataclass(frozen=True)
class Plan:
    """The internal numbers of a fit, derived from ``effort`` and K.

    Attributes
    ----------
    n_init : int
        Seedings (k-means++), each run to convergence on the summary:
        ``ceil(2 * effort * min(1, (16 / K) ** 0.75))``, at least 2. Restarts matter most
        with few clusters; with many, their optima differ less, each costs more, and the
        swaps that follow improve the best of them.
    summary : int
        About how many points stand for the data in the coarse stage:
        ``effort * max(4096, 16 K)``.
    swaps : int
        Local-search steps on the best coarse optimum: ``ceil(effort * min(8, K / 4))``.
        Each costs about a short Lloyd run on the summary; with few clusters Lloyd's
        optima are few and the restarts find the best.
    finish : int
        Best coarse optima run to convergence on every point: ``1 + effort // 6``. The
        swaps leave the best coarse optimum far ahead of the others.
    """

    n_init: int
    summary: int
    swaps: int
    finish: int

    @classmethod
    def from_effort(cls, effort: int, n_clusters: int, n_init: int | None = None) -> Plan:
        effort = check_effort(effort)
        if n_init is None:
            n_init = max(2, math.ceil(2 * effort * min(1.0, (16 / n_clusters) ** 0.75)))
        return cls(
            n_init=int(n_init),
            summary=effort * max(4096, 16 * n_clusters),
            swaps=math.ceil(effort * min(8.0, n_clusters / 4)),
            finish=1 + effort // 6,
        )


def check_effort(effort) -> int:
    """``effort`` must be an integer from 1 to 10."""
    if isinstance(effort, bool) or not isinstance(effort, int | np.integer):
        raise TypeError(f"effort must be an integer from 1 to {MAX_EFFORT}, got {effort!r}.")
    if not 1 <= effort <= MAX_EFFORT:
        raise ValueError(f"effort must be from 1 to {MAX_EFFORT}, got {effort}.")
    return int(effort)


@dataclass(frozen=True)
class KMeansResult:
    """The outcome of :func:`weighted_kmeans`.

    Attributes
    ----------
    centers : ndarray, shape (K, D)
    labels : ndarray of int32, shape (M,)
        Index of the nearest centre of each point (ties to the lower index).
    inertia : float
        Sum of weight times squared distance to the assigned centre.
    n_iter : int
        Lloyd iterations of the best run on every point.
    n_init : int
        Seedings made.
    converged : bool
        Whether the best run stopped before ``max_iter``.
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    n_init: int
    converged: bool
    _run: _Run | None = field(default=None, repr=False, compare=False)

    def reorder(self, order: np.ndarray) -> KMeansResult:
        """This result with the centres in ``order`` (a permutation)."""
        inverse = np.argsort(order).astype(np.int32)
        if self._run is not None:
            self._run.reorder(order, inverse)
        return KMeansResult(
            self.centers[order],
            inverse[self.labels],
            self.inertia,
            self.n_iter,
            self.n_init,
            self.converged,
            self._run,
        )

    def relabel(self, centers: np.ndarray) -> np.ndarray:
        """Labels of the points for centres moved a little (e.g. rounded): one pass with
        Hamerly's bounds, equal to a full search."""
        return self._run.move(np.asarray(centers, dtype=np.float64) * self._run.scale)


class _Run:
    """Lloyd's iterations on weighted points from given centres, with Hamerly's bounds.

    ``labels`` are always the nearest centres of ``centers``. Integer points (uint8,
    uint16), and float points given with integer ``rows`` (what each adds to its cluster's
    sums and weight: the summary's cells), keep exact int64 cluster sums, updated only for
    points that change cluster; other float points' sums are recomputed in point order
    after each pass.
    """

    def __init__(self, x, w, centers, n_threads, scale=1.0, guess=None, rows=None, swap=None):
        self.x, self.w, self.scale = x, w, scale
        self.centers = np.array(centers, dtype=np.float64, order="C")
        k, d = self.centers.shape
        # float points that stand for integer ones (the summary's cell means) carry their
        # int64 sums and weights: exact cluster sums, as for integer points
        self.point_rows = rows
        self.rows = np.empty((0, d + 1), dtype=np.int64) if rows is None else rows
        self.exact = x.dtype != np.float64 or rows is not None
        m = x.shape[0]
        self.threads = team(n_threads, m)
        self.search_threads = team(n_threads, m * k)
        self.geometry_threads = team(n_threads, k * k)
        self.labels = np.empty(m, dtype=np.int32)
        self.upper, self.lower = np.empty(m), np.empty(m)
        self.delta = np.zeros((self.search_threads if self.exact else 1, k, d + 1), dtype=np.int64)
        width = min(k - 1, _NEIGHBOURS)
        self.nbr, self.gap = np.empty((k, width), dtype=np.int32), np.empty((k, width))
        self.shift, self.half_gap = np.empty(k), np.empty(k)
        # The centres' neighbour lists cost K * K; with many more centres than a pass over
        # the points can pay for, they are kept while the centres move little, and the
        # searches widen their bounds by how far the centres have moved since (``slack``).
        self.always = k * k <= 4 * m
        self.drift, self.slack = np.zeros(k), np.zeros(k)
        self._geometry(self.centers, rebuild=True)
        if swap is not None:
            # (a run whose centre ``swapped`` these centres replace: see nearest_after_swap)
            before, swapped = swap
            _kmeans.nearest_after_swap(
                x,
                self.centers,
                swapped,
                before.labels,
                before.lower,
                self.nbr,
                self.gap,
                self.labels,
                self.upper,
                self.lower,
                self.search_threads,
            )
            self._sum()
            return
        if guess is not None:
            self.labels[:] = guess
        self._full(guess is not None)

    def _geometry(self, new, rebuild=False):
        rebuild = rebuild or self.always
        if not rebuild:
            _kmeans.geometry(
                self.centers, new, self.shift, self.half_gap, self.nbr, self.gap, False, 1
            )
            self.drift += self.shift
            self.slack = self.drift + self.drift.max()
            rebuild = self.slack.max() > _STALE * self.typical_gap
        if rebuild:
            _kmeans.geometry(
                self.centers,
                new,
                self.shift,
                self.half_gap,
                self.nbr,
                self.gap,
                True,
                self.geometry_threads,
            )
            if not self.always:
                self.drift[:], self.slack[:] = 0.0, 0.0
                self.typical_gap = float(np.median(self.half_gap))

    def _full(self, guess=False):
        """Search every point (from the centre in ``labels`` with ``guess``), and sum the
        clusters afresh."""
        self._search(guess)
        self._sum()

    def exact_bounds(self):
        """Make ``upper`` and ``lower`` the exact distances to the nearest and the second
        nearest centre (the labels, already the nearest, stay)."""
        self._search(True)

    def _search(self, guess: bool):
        """A full nearest-centre search of every point, setting labels and exact bounds."""
        _kmeans.nearest(
            self.x,
            self.centers,
            self.labels,
            self.upper,
            self.lower,
            self.nbr,
            self.gap,
            self.slack,
            guess,
            self.search_threads,
        )

    def _sum(self):
        k, d = self.centers.shape
        self.sums, self.mass = np.empty((k, d)), np.empty(k)
        _kmeans.cluster_sums(
            self.x, self.w, self.labels, self.sums, self.mass, self.rows, self.threads
        )
        if self.exact:
            self.total = np.empty((k, d + 1), dtype=np.int64)
            self.total[:, :d] = self.sums  # whole numbers below 2**53: exact
            self.total[:, d] = self.mass
        self._inertia = None

    def move(self, new_centers: np.ndarray) -> np.ndarray:
        """Move the centres and reassign the points that may change; returns the labels."""
        self._move(np.ascontiguousarray(new_centers, dtype=np.float64))
        return self.labels.copy()

    def _move(self, new: np.ndarray) -> int:
        self._geometry(new)
        self.centers = new
        changed = _kmeans.move(
            self.x,
            self.w,
            new,
            self.shift,
            self.half_gap,
            self.nbr,
            self.gap,
            self.slack,
            self.labels,
            self.upper,
            self.lower,
            self.rows,
            self.delta,
            self.search_threads,
        )
        if self.exact:
            _kmeans.apply_delta(self.delta, self.total)
            d = new.shape[1]
            self.sums = self.total[:, :d].astype(np.float64)
            self.mass = self.total[:, d].astype(np.float64)
        elif changed:
            _kmeans.cluster_sums(
                self.x, self.w, self.labels, self.sums, self.mass, self.rows, self.threads
            )
        self._inertia = None
        return changed

    def _reseed(self, empty: np.ndarray) -> None:
        """Move each empty cluster's centre onto the point that costs the most where it is
        (the lowest index among equal costs)."""
        cost = np.empty(self.x.shape[0])
        _kmeans.reseed_costs(self.x, self.w, self.centers, self.labels, cost, self.threads)
        far = np.argsort(-cost, kind="stable")[: int(empty.sum())]
        new = self.centers.copy()
        new[np.flatnonzero(empty)] = self.x[far]
        self._geometry(new, rebuild=True)
        self.centers = new
        self._full()

    def iterate(self, max_iter: int, tol_abs: float, step=None, gain_tol=None) -> tuple[int, bool]:
        """Iterate until no label changes, the summed squared centre shift is at most
        ``tol_abs`` (or, with ``gain_tol``, the update's decrease of the cost, the sum of
        cluster weight times squared shift, is at most ``gain_tol``), or ``max_iter``;
        returns (iterations, converged)."""
        for n_iter in range(1, max_iter + 1):
            means = np.empty_like(self.centers)
            # (sums added in a fixed order: the same stop on every machine)
            empty, shift2, gain = _kmeans.update(self.sums, self.mass, self.centers, means)
            if empty:
                self._reseed(~(self.mass > 0))
                continue
            done = shift2 <= tol_abs if gain_tol is None else gain <= gain_tol
            changed = self._move(means)
            if step is not None:
                step(n_iter, max_iter)
            if changed == 0 or done:
                return n_iter, True
        return max_iter, False

    def inertia(self) -> float:
        if self._inertia is None:
            mass = np.empty(self.centers.shape[0])
            self._inertia = _kmeans.weighted_error(
                self.x, self.w, self.centers, self.labels, mass, self.threads
            )
        return self._inertia

    def reorder(self, order, inverse):
        """Renumber the clusters: centre ``order[i]`` becomes centre ``i``."""
        self._geometry(self.centers[order], rebuild=True)  # (the neighbour lists, renumbered)
        self.centers = self.centers[order]
        self.labels[:] = inverse[self.labels]
        self.sums, self.mass = self.sums[order], self.mass[order]
        if self.exact:
            self.total = self.total[order]


def weighted_kmeans(
    points: np.ndarray,
    weights: np.ndarray,
    n_clusters: int,
    *,
    init: str | np.ndarray = "k-means++",
    n_init: int | None = None,
    effort: int = DEFAULT_EFFORT,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | np.random.Generator | None = 0,
    progress=None,
    n_threads: int | None = None,
) -> KMeansResult:
    """Cluster weighted points with k-means++ seeding and Lloyd's algorithm.

    Parameters
    ----------
    points : ndarray, shape (M, D)
        Distinct points; must number at least ``n_clusters``. uint8 and uint16 points with
        whole weights are clustered as they are (exact integer sums); others as float64.
    weights : ndarray, shape (M,)
        Positive weights (pixel counts).
    n_clusters : int
        K.
    init : "k-means++" or ndarray of shape (K, D)
        Seeding method, or the initial centres themselves (one run, on every point: the
        plain Lloyd's algorithm of the tutorial, :func:`.tutorial.lloyd`).
    n_init : int, optional
        Seedings; default from ``effort`` (see :class:`Plan`).
    effort : int, 1 to 10
        Speed against quality (see :class:`Plan`).
    max_iter : int
        Most Lloyd iterations per run.
    tol : float
        Stop a run when the summed squared centre shift falls to ``tol`` times the mean
        per-axis weighted variance of the points (scikit-learn's convention); 0 runs until
        no assignment changes. With k-means++ seeding, the final run on every point stops
        instead when an iteration's update lowers the cost by at most ``tol / 20`` of it:
        on all the points, the centres can creep in small steps through a long plateau
        before a cluster reorganises, and a shift threshold stops there (up to about 1%
        above the optimum reached). Labels are always those of the final centres.
    random_state : int, Generator or None
        Seed for the seeding.
    progress : callable, optional
        Called as ``progress("fit", fraction_done)`` after every Lloyd iteration; an
        exception it raises (to cancel) propagates.
    n_threads : int, optional
        Threads for the compiled passes (default: the available cores); the result does
        not depend on it.

    Returns
    -------
    KMeansResult
    """
    threads = resolve(n_threads)
    x, w, scale = _prepare(points, weights)
    if x.shape[0] < n_clusters:
        raise ValueError(f"need at least {n_clusters} distinct points, got {x.shape[0]}")
    moments = np.empty(1 + 2 * x.shape[1])
    _kmeans.moments(x, w, moments, team(threads, x.shape[0]))
    d = x.shape[1]
    mean = moments[1 : 1 + d] / moments[0]
    variance = np.maximum(moments[1 + d :] / moments[0] - mean * mean, 0.0)
    tol_abs = float(tol) * float(variance.mean())
    if not isinstance(init, str):
        centers = np.array(init, dtype=np.float64) * scale
        if centers.shape != (n_clusters, d):
            raise ValueError(f"init: expected shape {(n_clusters, d)}, got {centers.shape}")
        run = _Run(x, w, centers, threads, scale)
        n_iter, converged = run.iterate(max_iter, tol_abs, _stage(progress, 0.0, 1.0))
        return _result(run, n_iter, 1, converged)
    plan = Plan.from_effort(effort, n_clusters, n_init)
    rng = np.random.default_rng(random_state)
    summary = _summary(x, w, plan.summary, threads)
    if summary is not None and summary[0].shape[0] < 4 * n_clusters:
        summary = None  # a few crowded cells (an outlier stretched the grid) cannot seed K
    if summary is None:
        sx, sw, cell, rows = np.asarray(x, dtype=np.float64), w, None, None
    else:
        sx, sw, cell, rows = summary
    coarse_share = 0.5 if cell is not None else 0.9
    share = coarse_share / (plan.n_init + plan.swaps)
    points = sx if cell is not None else x
    # Each seeding's random numbers are drawn here, in turn: the seedings themselves can
    # then run side by side and still be those of one generator used in order.
    draws = [rng.random(_plusplus_draws(n_clusters)) for _ in range(plan.n_init)]

    def seeding(uniforms, threads):
        start = _plusplus(sx, sw, n_clusters, uniforms, threads)
        run = _Run(points, sw, start, threads, scale, rows=rows)
        n_iter, converged = run.iterate(max_iter, tol_abs)
        return run.inertia(), run, n_iter, converged

    done = _side_by_side(seeding, draws, threads, _stage(progress, 0.0, plan.n_init * share))
    runs = sorted(((r[0], i, *r[1:]) for i, r in enumerate(done)), key=lambda r: (r[0], r[1]))
    _, _, run, n_iter, converged = runs[0]
    run = _local_search(
        run, plan.swaps, rng, max_iter, tol_abs, threads, progress, plan.n_init * share, share
    )
    runs[0] = (run.inertia(), 0, run, n_iter, converged)
    if cell is None:
        n_iter, converged = run.iterate(
            max_iter, 0.0, _stage(progress, 0.9, 0.1), _FINAL_GAIN * tol * run.inertia()
        )
        return _result(run, n_iter, plan.n_init, converged)
    # Fine: the best coarse optima (distinct ones) go on to convergence on every point,
    # each point's search starting from its cell's centre.
    starts = []
    for _, _, run, _, _ in runs:
        if len(starts) == plan.finish:
            break
        if not any(_same_centers(run.centers, other.centers) for other in starts):
            starts.append(run)
    share = 0.5 / len(starts)
    best = None
    for i, coarse in enumerate(starts):
        run = _Run(x, w, coarse.centers, threads, scale, guess=coarse.labels[cell])
        n_iter, converged = run.iterate(
            max_iter,
            0.0,
            _stage(progress, 0.5 + i * share, share),
            _FINAL_GAIN * tol * run.inertia(),
        )
        if best is None or run.inertia() < best[0].inertia():
            best = (run, n_iter, converged)
    return _result(best[0], best[1], plan.n_init, best[2])


def _local_search(run, swaps, rng, max_iter, tol_abs, threads, progress, start, share):
    """``run`` improved by ``swaps`` steps of k-means++ local search, each followed by
    Lloyd's iterations: draw a point with probability proportional to weight times squared
    distance to its centre, swap it for the centre whose swap costs least, iterate, and
    keep the result if its cost is lower."""
    k = run.centers.shape[0]
    exact = False  # whether run's bounds are its exact distances (a rejected swap keeps them)
    for step in range(swaps if k > 1 else 0):
        if not exact:
            run.exact_bounds()
            exact = True
        drawn = _kmeans.draw_far(run.w, run.upper, rng.random())
        if drawn < 0:
            break  # every point is on a centre
        point = np.array(run.x[drawn], dtype=np.float64)
        cost = np.empty(k)
        _kmeans.swap_costs(
            run.x, run.w, run.labels, run.upper, run.lower, point, cost, run.threads
        )
        centers = run.centers.copy()
        swapped = int(np.argmin(cost))
        centers[swapped] = point
        trial = _Run(
            run.x, run.w, centers, threads, run.scale, rows=run.point_rows, swap=(run, swapped)
        )
        trial.iterate(max_iter, tol_abs, _stage(progress, start + step * share, share))
        if trial.inertia() < run.inertia():
            run, exact = trial, False
    return run


def _side_by_side(work, items, threads, step=None) -> list:
    """``[work(item, threads) for item in items]``, the items run at once on up to
    ``threads`` threads, the threads shared among them (each item's result is the same
    with any number). ``step``, if given, is called in this thread as each result is in;
    an exception it raises stops the items not started."""
    width = max(1, min(threads, len(items)))
    out = []

    def collect(results):
        for result in results:
            out.append(result)
            if step is not None:
                step(len(out), len(items))

    if width == 1:
        collect(work(item, threads) for item in items)
        return out
    with ThreadPoolExecutor(width) as pool:
        futures = [pool.submit(work, item, max(1, threads // width)) for item in items]
        try:
            collect(future.result() for future in futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return out


def _result(run: _Run, n_iter: int, n_init: int, converged: bool) -> KMeansResult:
    s = run.scale
    return KMeansResult(
        centers=run.centers / s,
        labels=run.labels.copy(),
        inertia=run.inertia() / s / s,  # (s * s may underflow)
        n_iter=n_iter,
        n_init=n_init,
        converged=converged,
        _run=run,
    )


def _prepare(points, weights):
    """Points as the kernels take them, weights as float64, and the power-of-two scale.

    uint8 and uint16 points with whole weights whose sums stay below 2**53 are kept (exact
    int64 sums); anything else becomes float64. Float points whose magnitudes would
    overflow (or underflow) squared distances are scaled by a power of two, which is exact.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 1:
        raise ValueError(f"points must be (M, D) with D >= 1, got shape {points.shape}")
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if w.shape != (points.shape[0],):
        raise ValueError(f"weights: expected {points.shape[0]}, got shape {w.shape}")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError("weights must be positive and finite")
    scale = 1.0
    if points.dtype in (np.uint8, np.uint16):
        total = float(w.sum())
        if np.array_equal(w, np.floor(w)) and total * float(np.iinfo(points.dtype).max) < 2.0**53:
            return np.ascontiguousarray(points), w, scale
    x = np.ascontiguousarray(points, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("points must be finite (no NaN or inf)")
    if x.size:
        top = float(np.abs(x).max())
        # Squared distances of D coordinates up to 2**e stay below 2**(2e + 5): keep the
        # magnitudes within 2**±400, far from float64's limits of 2**±1022.
        if top > 2.0**400 or 0.0 < top < 2.0**-400:
            # (the scale itself must be finite: subnormal magnitudes need up to 2**1074)
            scale = math.ldexp(1.0, min(-math.frexp(top)[1], 1000))
            x = x * scale
    return x, w, scale


def _same_centers(a: np.ndarray, b: np.ndarray) -> bool:
    """The same set of centres (up to order and a relative 1e-9)."""
    sa, sb = np.sort(a, axis=0), np.sort(b, axis=0)
    return bool(np.all(np.abs(sa - sb) <= 1e-9 * (1.0 + np.abs(sb))))


def _stage(progress, start: float, width: float):
    """Per-iteration callback for a run that spans [start, start + width] of the fit."""
    if progress is None:
        return None

    def step(n_iter: int, max_iter: int):
        progress("fit", start + width * min(1.0, n_iter / max_iter))

    return step


def kmeans_plusplus(
    points: np.ndarray,
    weights: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    n_threads: int | None = None,
) -> np.ndarray:
    """Greedy weighted k-means++ seeding (Arthur and Vassilvitskii 2007).

    Each new centre is the best of ``2 + ln K`` candidates (as scikit-learn does) drawn
    with probability proportional to weight times squared distance to the nearest centre
    so far.
    """
    x = np.ascontiguousarray(points, dtype=np.float64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    uniforms = rng.random(_plusplus_draws(n_clusters))
    return _plusplus(x, w, n_clusters, uniforms, resolve(n_threads))


def _plusplus_trials(n_clusters: int) -> int:
    return 2 + int(np.log(n_clusters))


def _plusplus_draws(n_clusters: int) -> int:
    """The uniform numbers a seeding of K centres takes: one for the first centre and
    each candidate of the others."""
    return 1 + (n_clusters - 1) * _plusplus_trials(n_clusters)


def _plusplus(x, w, n_clusters, uniforms, threads) -> np.ndarray:
    trials = _plusplus_trials(n_clusters)
    centers = np.empty((n_clusters, x.shape[1]))
    _kmeans.plusplus(x, w, uniforms, trials, centers, team(threads, x.shape[0] * trials))
    return centers


def assign(points: np.ndarray, centers: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    """Index of the nearest centre of each point (ties go to the lower index)."""
    x, _, scale = _prepare(points, np.ones(np.asarray(points).shape[0]))
    c = np.ascontiguousarray(centers, dtype=np.float64) * scale
    m = x.shape[0]
    labels = np.empty(m, dtype=np.int32)
    if m:
        none = np.empty((len(c), 0), dtype=np.int32), np.empty((len(c), 0)), np.zeros(len(c))
        threads = team(resolve(n_threads), m * len(c))
        _kmeans.nearest(x, c, labels, np.empty(m), np.empty(m), *none, False, threads)
    return labels.astype(np.intp)


def cluster_sums(
    points: np.ndarray,
    weights: np.ndarray | None,
    labels: np.ndarray,
    n_clusters: int,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's weighted sum of its points (K, D) and its weight (K,) (weights None:
    1 each). 8- and 16-bit points with whole weights are summed exactly; others in float64,
    in point order."""
    x = np.asarray(points)
    m = x.shape[0]
    w = np.ones(m) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    if x.dtype not in (np.uint8, np.uint16) or not np.array_equal(w, np.floor(w)):
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x if x.ndim == 2 else x.reshape(m, -1 if m else 1))
    sums = np.zeros((n_clusters, x.shape[1]))
    mass = np.zeros(n_clusters)
    if m:
        labels = np.ascontiguousarray(labels, dtype=np.int32)
        none = np.empty((0, x.shape[1] + 1), dtype=np.int64)
        _kmeans.cluster_sums(x, w, labels, sums, mass, none, team(resolve(n_threads), m))
    return sums, mass


def weighted_error(
    points: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    n_threads: int | None = None,
) -> tuple[float, np.ndarray]:
    """Sum over points of weight times squared distance to the centre they are labelled
    with, and the total weight of each centre's points."""
    x = np.asarray(points)
    if x.dtype not in (np.uint8, np.uint16):
        x = np.ascontiguousarray(x, dtype=np.float64)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    c = np.ascontiguousarray(centers, dtype=np.float64)
    mass = np.empty(c.shape[0])
    threads = team(resolve(n_threads), x.shape[0])
    error = _kmeans.weighted_error(
        x, w, c, np.ascontiguousarray(labels, dtype=np.int32), mass, threads
    )
    return error, mass


# The final run stops once an iteration lowers the cost by at most this times tol of it.
_FINAL_GAIN = 1 / 20
# Each centre keeps this many nearest other centres for the searches that start from it
# (any number gives the same labels; more makes the geometry dearer, fewer the searches).
_NEIGHBOURS = 64
# Neighbour lists are measured again once a centre may have come this share of the median
# nearest-centre distance closer to another (with many centres only: see _Run).
_STALE = 0.1
# The grid summary holds at most this many cells (its occupancy count is an int64 array).
_SUMMARY_MAX_CELLS = 1 << 22


def _summary(x: np.ndarray, w: np.ndarray, target: int, threads: int):
    """About ``target`` weighted points that stand for ``x``: occupied grid cells' weighted
    means and weights, each point's cell, and (integer ``x``) each cell's int64 sums and
    weight, (cells, D + 1), else None; None when ``x`` is small enough already or the
    cells would not be much fewer than the points."""
    m, dim = x.shape
    if m <= target:
        return None
    # column by column: numpy reduces an (M, 3) array over axis 0 much more slowly
    low = np.array([x[:, j].min() for j in range(dim)], dtype=np.float64)
    span = np.array([x[:, j].max() for j in range(dim)], dtype=np.float64) - low
    limit = max(2, int(_SUMMARY_MAX_CELLS ** (1.0 / dim)))
    cells = min(limit, max(2, math.ceil(target ** (1.0 / dim))))
    keys = np.empty(m, dtype=np.int64)
    threads = team(threads, m)
    while True:
        factor = np.divide(cells, span, out=np.zeros(dim), where=span > 0)
        flags = np.zeros(cells**dim, dtype=np.uint8)
        _kmeans.grid_keys(x, low, factor, cells, keys, flags, threads)
        occupied = np.flatnonzero(flags)
        if len(occupied) >= target // 2 or cells >= limit:
            break
        # occupied cells grow about as the square of the cells per axis (colours lie near
        # a surface): aim at target / 2 in one step, growing by at least a quarter
        grow = math.sqrt((target // 2) / max(len(occupied), 1))
        cells = min(limit, max(cells + 1, int(cells * max(grow, 1.25))))
    if len(occupied) >= m // 2:
        return None
    remap = np.zeros(cells**dim, dtype=np.int32)  # (at most 2**22 cells)
    remap[occupied] = np.arange(len(occupied))
    n = len(occupied)
    sums, total = np.empty((n, dim)), np.empty(n)
    cell = remap[keys]
    # each cell's sums: those of a cluster of its points
    _kmeans.cluster_sums(x, w, cell, sums, total, np.empty((0, dim + 1), np.int64), threads)
    rows = None
    if x.dtype != np.float64:
        # integer colours (whole counts): whole sums below 2**53, exact; as int64 they
        # keep the summary's cluster sums exact
        rows = np.empty((n, dim + 1), dtype=np.int64)
        rows[:, :dim] = sums
        rows[:, dim] = total
    return sums / total[:, np.newaxis], total, cell, rows


def prepare() -> None:
    """Kept for callers that load the engine before timing a fit (it loads on import)."""
