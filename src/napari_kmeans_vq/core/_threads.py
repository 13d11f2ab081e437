"""How many threads the compiled code may use, per calling thread.

The C passes (Lloyd's iterations, the per-pixel lookups) split heavy work between two
threads. A caller that shares the cores with a thread that must stay responsive (napari's
widget runs the engine in a worker while napari draws) keeps them to one.
"""

from __future__ import annotations

import contextlib
import threading

_local = threading.local()


@contextlib.contextmanager
def one_thread():
    """In this block, and in the calling thread only, the C code keeps to one thread."""
    previous = thread_limit()
    _local.threads = 1
    try:
        yield
    finally:
        _local.threads = previous


def thread_limit() -> int:
    """Threads the C code may use for the calling thread: 2, or 1 in :func:`one_thread`."""
    return getattr(_local, "threads", 2)
