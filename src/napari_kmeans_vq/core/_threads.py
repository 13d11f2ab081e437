"""How many threads the compiled engine uses, and what it was built with.

One mechanism: OpenMP, in the Cython kernels. Every fit, encode and histogram takes an
``n_threads``; None means the default, the cores this process may run on
(``os.sched_getaffinity`` where available, else ``os.cpu_count()``), never more than
OpenMP's own limit, which ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits`` set.
The result never depends on the number of threads (see ``_kmeans.pyx``).

A caller that shares the cores with a thread that must stay responsive (napari's widget
runs the engine in a worker while napari draws) keeps its calls to one thread with
:func:`one_thread`.
"""

from __future__ import annotations

import contextlib
import os
import threading

from . import _colors, _kmeans
from .validation import check_positive_int

_local = threading.local()
# A thread of a parallel pass gets at least this much work (points, or points x centres):
# starting and joining a team costs more than a few chunks of points, and far more when
# the cores are shared with other processes (a thread waiting for a time slice holds up
# the whole pass).
WORK_PER_THREAD = 1 << 15


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads used when ``n_threads`` is None: the available cores, within OpenMP's limit
    for the calling thread (``OMP_NUM_THREADS``, ``threadpoolctl``)."""
    return max(1, min(available_cores(), _kmeans.max_threads()))


def resolve(n_threads=None) -> int:
    """The threads a call may use: ``n_threads`` (None: :func:`default_threads`), at most
    one inside :func:`one_thread`."""
    n = default_threads() if n_threads is None else check_positive_int(n_threads, "n_threads")
    return min(n, thread_limit())


def team(threads: int, work: int) -> int:
    """Threads for one pass of ``work`` units: at most ``threads``, at least one, and no
    more than one per WORK_PER_THREAD units."""
    return max(1, min(threads, work // WORK_PER_THREAD))


@contextlib.contextmanager
def one_thread():
    """In this block, and in the calling thread only, the engine keeps to one thread."""
    previous = getattr(_local, "threads", None)
    _local.threads = 1
    try:
        yield
    finally:
        _local.threads = previous


def thread_limit() -> int:
    """The most threads a call from this thread may use: 1 in :func:`one_thread`, else
    the available cores."""
    limit = getattr(_local, "threads", None)
    return available_cores() if limit is None else limit


def engine_info() -> dict:
    """What the compiled engine is: compiler, OpenMP version, default threads, cores.

    Returns
    -------
    dict
        ``compiler`` (e.g. ``"gcc 12.2.0"``), ``openmp`` (OpenMP version as yyyymm, or
        None when built without it), ``threads`` (what a call with ``n_threads=None``
        uses in this thread now), ``cores`` (available to the process), ``sanitizers``
        (True for an AddressSanitizer build) and ``modules`` (the extension files).
    """
    compiler, asan = _kmeans.compiler()
    openmp = _kmeans.openmp_version()
    return {
        "compiler": compiler,
        "openmp": openmp or None,
        "threads": resolve(None),
        "cores": available_cores(),
        "sanitizers": asan,
        "modules": [_kmeans.__file__, _colors.__file__],
    }


def describe() -> str:
    """One line for ``--version``: the engine's build and its threads."""
    info = engine_info()
    omp = f"OpenMP {info['openmp']}" if info["openmp"] else "no OpenMP"
    n = info["threads"]
    return f"engine: Cython, {info['compiler']}, {omp}, {n} thread{'s' * (n != 1)}"
