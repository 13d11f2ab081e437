"""Lloyd's iterations, k-means++ seeding and the coarse stage's grid summary in compiled
code: the C extension ``_ckmeans``.

A whole run of Lloyd's iterations is one call, with Hamerly's bounds; the GIL is released
meanwhile, so napari stays responsive. Heavy passes run on two threads, each over a fixed
half of the points. The C code mirrors :class:`.kmeans._Bounds` (same stopping rule, ties
to the lower index, empty clusters moved onto the costliest point) and gives the same
result.

The extension is built when the package is installed from source. Where it could not be
built (no C compiler), :func:`available` is False and :mod:`.kmeans` keeps to its numpy
path.
"""

from __future__ import annotations

import weakref

import numpy as np

from . import _scratch
from ._threads import thread_limit

try:
    from . import _ckmeans
except ImportError:  # installed without a C compiler
    _ckmeans = None

# The C code keeps the cluster sums in this many slots (SLOTS in _ckmeans.c).
_SUM_SLOTS = 8


def available() -> bool:
    """Whether the compiled kernel was built."""
    return _ckmeans is not None


def assign(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Nearest centre of each point (ties to the lower index), as int32."""
    if x.shape[0] == 0:
        return np.empty(0, dtype=np.int32)
    run = KernelRun(x, np.ones(x.shape[0]), centers)
    return run.labels.copy()  # the run's own labels are reused once it is gone


def weighted_error(x, w, centers, labels) -> tuple[float, np.ndarray]:
    """Sum of weight times squared distance to the labelled centre, and each centre's
    total weight."""
    c = np.ascontiguousarray(centers, dtype=np.float64)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    mass = np.zeros(c.shape[0])
    return _ckmeans.error(x, w, c, labels, mass, x.shape[0], *c.shape), mass


def integral(x: np.ndarray, w: np.ndarray) -> bool:
    """Whether points and weights are integers with weighted sums below 2**52: then
    :class:`KernelRun` keeps its cluster sums up to date instead of recomputing them,
    with the same result bit for bit (integer sums are exact in any order)."""
    return bool(_ckmeans.integral(x, w, *x.shape))


def moments(x: np.ndarray, w: np.ndarray, exact: bool = False) -> np.ndarray:
    """[sum w, sum w x (D), sum w x**2 (D)], each summed in point order. ``x`` may be
    uint8 (8-bit colours) for ``exact`` points (see :func:`integral`)."""
    out = np.empty(1 + 2 * x.shape[1])
    _ckmeans.moments(x, w, out, *x.shape, _exact_mode(x, exact))
    return out


def _exact_mode(x: np.ndarray, exact: bool) -> int:
    """The C calls' ``exact`` argument: 0, 1 (exact), or 2 (exact, ``x`` uint8)."""
    if x.dtype == np.uint8:
        if not exact:
            raise ValueError("uint8 points are read only for exact problems")
        return 2
    return int(bool(exact))


def inertia_from_sums(wx2: float, centers, sums, mass) -> float:
    """Weighted squared error from cluster sums: sum w|x|^2 - 2 c.S + m|c|^2 (clipped at
    0). Exact when every term is an integer below 2**53; otherwise close enough to rank
    runs (its rounding is relative to sum w|x|^2, not to the error). Exact runs in C and
    the numpy path both rank by it (they agree when sum w|x|^2 is below 2**53: it is
    then exact on both)."""
    c = centers
    value = wx2 - 2 * float((c * sums).sum()) + float(mass @ (c * c).sum(1))
    return max(value, 0.0)


# Below this, sums of integer terms are exact with room to spare (see KernelRun.error).
_EXACT_LIMIT = 2.0**50


def seed(x, w, uniforms, centers, trials) -> None:
    """:func:`.kmeans.kmeans_plusplus` in C, into ``centers`` (K, D)."""
    k, d = centers.shape
    _ckmeans.seed(x, w, uniforms, centers, x.shape[0], d, k, trials)


def grid_summary(x, w, cells, limit, target, max_cells, values=None, exact=False):
    """:func:`.kmeans._summary`'s grid in C: (means, totals), or None when the occupied
    cells number at least half the points. ``values``: the same points as uint8 (8-bit
    colours), read instead of ``x``: a byte per coordinate, not eight, same result.
    ``exact``: points and weights are exact (see :func:`integral`), so the cells' sums may
    be added up on two threads, with the same result."""
    m, d = x.shape
    points = x if values is None else np.ascontiguousarray(values)
    as_bytes = int(values is not None)
    keys = _scratch.take(m, np.int32)  # a temporary: no fresh pages (see _scratch)
    try:
        n = _ckmeans.grid_cells(
            points, keys, m, d, cells, limit, target, max_cells, thread_limit(), as_bytes
        )
        if n == 0:
            return None
        means, total = np.empty((n, d)), np.empty(n)
        _ckmeans.grid_means(
            points, w, keys, means, total, m, d, n, as_bytes, thread_limit(), int(exact)
        )
        return means, total
    finally:
        _scratch.give(keys)


class KernelRun:
    """Lloyd's iterations on weighted points from given centres.

    ``x`` (M, D) and ``w`` (M,) must be C-contiguous float64 (``x`` may be uint8 for exact
    problems: see below). ``labels`` are always the
    nearest centres of ``centers`` (the state a caller can trust), and :meth:`inertia`
    is their weighted squared error. ``exact``: :func:`integral` holds for ``x`` and
    ``w`` (then a pass touches the sums only for points that change cluster).

    ``labels`` (and the bounds) live in memory that later runs reuse once this one is
    collected: copy them to keep them. ``wx2``: sum w|x|^2 of exact points, if the
    caller has it; :meth:`inertia` then comes from the sums, with no pass over the points.

    Exact points may also be given as uint8 (8-bit colours, C-contiguous): the C code
    then reads a byte per coordinate, with the same result, and no float64 copy is made.
    """

    def __init__(self, x: np.ndarray, w: np.ndarray, centers: np.ndarray, exact=False, wx2=None):
        self.x, self.w = x, w
        self.centers = np.array(centers, dtype=np.float64, order="C")
        m = x.shape[0]
        k, d = self.centers.shape
        if x.shape[1] != d:
            raise ValueError(f"centers have {d} coordinates, points {x.shape[1]}")
        # Scratch memory, given back when the run is collected (see _scratch).
        self.labels = _scratch.take(m, np.int32)
        self._upper, self._lower = _scratch.take(m, np.float64), _scratch.take(m, np.float64)
        weakref.finalize(self, _scratch.give, self.labels, self._upper, self._lower)
        self._sums = np.empty(_SUM_SLOTS * k * (d + 1))
        self._args = (x, w, self.centers, self.labels, self._upper, self._lower, self._sums)
        self._shape, self._exact = (m, k, d), _exact_mode(x, exact)
        self._wx2 = wx2
        _ckmeans.assign(*self._args, *self._sizes())
        self._inertia = None

    def iterate(self, max_iter: int, tol_abs: float, step=None) -> tuple[int, bool]:
        """Iterate until no label changes, the squared centre shift is at most
        ``tol_abs``, or ``max_iter``; returns (iterations, converged).

        With ``step``, one iteration per call, then ``step(n_iter, max_iter)``: a progress
        report, or an exception that cancels.
        """
        self._inertia = None
        if step is None:
            return _ckmeans.iterate(*self._args, *self._sizes(), max_iter, tol_abs)
        for n_iter in range(1, max_iter + 1):
            _, converged = _ckmeans.iterate(*self._args, *self._sizes(), 1, tol_abs)
            step(n_iter, max_iter)
            if converged:
                return n_iter, True
        return max_iter, False

    def reorder(self, order: np.ndarray, inverse: np.ndarray) -> None:
        """Renumber the clusters: centre ``order[i]`` becomes centre ``i`` (in place, as
        the C calls hold these arrays)."""
        _, k, d = self._shape
        self.centers[:] = self.centers[order]
        self.labels[:] = inverse[self.labels]
        sums = self._sums.reshape(_SUM_SLOTS, k, d + 1)
        sums[:] = sums[:, order]
        self._inertia = None

    def move(self, centers: np.ndarray) -> np.ndarray:
        """Labels for centres moved a little (e.g. rounded): only points whose bounds
        leave doubt are searched again. Returns a copy of the new labels."""
        new = np.ascontiguousarray(centers, dtype=np.float64)
        if new.shape != self.centers.shape:
            raise ValueError(f"centers: expected shape {self.centers.shape}, got {new.shape}")
        _ckmeans.move(*self._args, *self._sizes(), new)
        self._inertia = None
        return self.labels.copy()

    def _sizes(self) -> tuple:
        """(m, k, d, threads, exact) for the C calls; threads as the calling thread may
        use now (a run made in a pool thread may be finished by the caller)."""
        return (*self._shape, thread_limit(), self._exact)

    def _cluster_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Each cluster's weighted sum (K, D) and weight (K,), from the C code's slots."""
        _, k, d = self._shape
        # Exact problems only: integer sums come out the same in any order.
        total = self._sums.reshape(_SUM_SLOTS, k, d + 1).sum(axis=0)
        return total[:, :d], total[:, d]

    def _sum_of_squares(self) -> float:
        if self._wx2 is None:
            self._wx2 = float(moments(self.x, self.w, True)[1 + self._shape[2] :].sum())
        return self._wx2

    def inertia(self) -> float:
        """Weighted squared error of the labels. For exact problems, from the running
        sums (no pass over the points; the numpy path computes it the same way)."""
        if self._inertia is None:
            if self._exact:
                sums, mass = self._cluster_sums()
                self._inertia = inertia_from_sums(self._sum_of_squares(), self.centers, sums, mass)
            else:
                self._inertia = _ckmeans.error(
                    self.x, self.w, self.centers, self.labels, None, *self._shape
                )
        return self._inertia

    def error(self) -> tuple[float, np.ndarray] | None:
        """(weighted squared error, each cluster's weight) of the labels, exactly, from the
        running sums: for exact problems whose centres are integers too (a rounded
        palette after :meth:`move`) and whose terms stay below 2**50. None otherwise (then
        :func:`weighted_error` makes a pass)."""
        c = self.centers
        if not self._exact or not np.array_equal(c, np.round(c)):
            return None
        sums, mass = self._cluster_sums()
        wx2 = self._sum_of_squares()
        if max(wx2, float(mass.sum()) * float((c * c).sum(1).max())) >= _EXACT_LIMIT:
            return None
        return inertia_from_sums(wx2, c, sums, mass), mass
