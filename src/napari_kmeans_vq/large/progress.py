"""Progress and cancelling for dask computations run on the local schedulers."""

from __future__ import annotations

import contextlib


class Cancelled(RuntimeError):
    """Raised out of a dask computation stopped by :func:`dask_progress`'s ``should_stop``."""


def dask_progress(on_progress=None, should_stop=None):
    """A context manager reporting progress of local dask computations, and stopping them.

    For GUIs: wrap the calls (``quantize_lazy``, ``write_labels``, ``.compute()``) in
    ``with dask_progress(report, cancelled):`` on a worker thread. ``on_progress(done,
    total)`` is called after each task with the computation's task counts;
    ``should_stop()`` is polled before each task and, when true, the computation stops
    with :class:`Cancelled`. Works with dask's local schedulers (threads, processes,
    synchronous); on a ``distributed`` client use its futures and ``Client.cancel``.
    """
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _start_state(self, dsk, state):
            self._state = state

        def _pretask(self, key, dsk, state):
            if should_stop is not None and should_stop():
                raise Cancelled("computation cancelled")

        def _posttask(self, key, result, dsk, state, worker_id):
            if on_progress is not None:
                done = len(state["finished"])
                left = sum(len(state[k]) for k in ("ready", "waiting", "running"))
                on_progress(done, done + left)

    return _Progress()


def stage(progress, stage: str):
    """A dask_progress reporting ``progress(stage, fraction)``, or a no-op without one."""
    if progress is None:
        return contextlib.nullcontext()
    return dask_progress(lambda done, total: progress(stage, done / max(total, 1)))
