"""What a run does in napari's worker thread: quantize, hand over the layers, measure files.

Each job is a napari ``thread_worker`` generator: it yields the layer tuples (the main
thread adds them in one step), then returns the file sizes or a sweep's table. Progress
goes to the main thread through a queued Qt signal; a cancelled run stops inside the
engine, whose progress callback raises, and returns None.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass

from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal

from .. import quantize
from ..core._threads import one_thread
from ..core.tissue import tissue_mask
from ..io import size_report
from ..large import Cancelled, dask_progress, is_lazy_input
from .inputs import IN_MEMORY_PIXELS
from .layers import is_lazy_quantization, quantization_layer_data, sweep_item, sweep_row

# Share of a quantization's progress bar that each engine stage takes.
_STAGES = {"histogram": (0.0, 0.1), "fit": (0.1, 0.85), "encode": (0.85, 1.0)}


class Stop(Exception):
    """Raised in the engine's progress callback to stop a cancelled run. Not a
    RuntimeError: superqt takes those for a deleted worker and skips its signals."""


class Relay(QObject):
    """Carries progress from the worker thread to the main thread (a queued Qt signal)."""

    progressed = Signal(int, str, int)  # run id, stage, percent
    counted = Signal(int, str, int, int)  # run id, stage, dask tasks done, in all


class Reporter:
    """The engine's ``progress(stage, fraction)`` callback, in the worker thread: raises
    :class:`Stop` once the run is cancelled, and relays each new whole percent."""

    def __init__(self, run_id: int, stop: threading.Event, relay: Relay):
        self.run_id, self.stop, self.relay = run_id, stop, relay
        self.span = (0.0, 1.0)  # the part of the bar this quantization fills (sweeps)
        self.stopped_in: str | None = None  # the stage the engine was stopped in
        self.stage = ""  # the stage reported last
        self.counts: list[tuple[str, int, int]] = []  # (stage, done, total) relayed
        self._last = None

    def __call__(self, stage: str, fraction: float) -> None:
        if self.stop.is_set():
            self.stopped_in = stage
            raise Stop
        self.stage = stage
        start, end = _STAGES.get(stage, (0.0, 1.0))
        low, high = self.span
        percent = int(100 * (low + (high - low) * (start + (end - start) * fraction)))
        if (stage, percent) != self._last:
            self._last = (stage, percent)
            self.send(stage, percent)

    def send(self, stage: str, percent: int) -> None:
        self.relay.progressed.emit(self.run_id, stage, percent)

    def tasks(self, done: int, total: int) -> None:
        """A lazy image's progress task by task (a block read, counted or encoded), as
        dask reports it; relayed so that a slide's run shows each block it gets through."""
        if self.stop.is_set():
            self.stopped_in = self.stage
            raise Stop
        self.counts.append((self.stage, done, total))
        self.relay.counted.emit(self.run_id, self.stage, done, total)

    def watching(self, image):
        """``dask_progress`` relaying each task for a lazy image; nothing for an array."""
        if not is_lazy_input(image):
            return contextlib.nullcontext()
        return dask_progress(self.tasks)


@dataclass
class Layers:  # yielded: the layer tuples of a single run
    quantization: object
    tuples: list


@dataclass
class Result:  # returned: the file sizes, a sweep's layers, or what went wrong
    sizes: dict | None = None
    tuples: list | None = None
    rows: list | None = None
    refused: Exception | None = None  # the engine's refusal of the input
    failed: Exception | None = None  # anything else: a bug, memory...


def _inputs(image, options, reporter):
    """The image and the options for :func:`quantize`: a lazy image computed when a mask or
    min region needs it in memory; the automatic tissue mask made."""
    options = dict(options)
    threshold = options.pop("tissue_threshold", None)
    in_memory = threshold is not None or "mask" in options or options.get("min_region")
    if in_memory and is_lazy_input(image):
        (image,) = _compute([image], reporter)
    if threshold is not None:
        options["mask"] = tissue_mask(image, threshold, channel_axis=options["channel_axis"])
        if not options["mask"].any():
            raise ValueError(
                f"the automatic tissue mask at threshold {threshold:g} selects no pixels (the "
                "image looks like bare glass): lower the tissue threshold."
            )
    return image, options


def _quantize(image, k, options, reporter):
    """The engine, kept to one thread: the other core stays with napari's drawing."""
    options = dict(options)
    if not is_lazy_input(image):
        options.pop("fit_level", None)
    with one_thread(), reporter.watching(image):
        return quantize(image, k, progress=reporter, **options)


def _compute(arrays, reporter):
    """Compute dask arrays as the "encode" stage; a cancel stops them between blocks."""
    import dask

    def report(done, total):
        reporter("encode", done / max(total, 1))
        reporter.tasks(done, total)

    with dask_progress(report, reporter.stop.is_set):
        return dask.compute(*arrays)


def _file_bytes(path) -> int | None:
    """Size of the source's file (or of all files of a directory store), or None."""
    try:
        if path and os.path.isdir(path):
            walk = os.walk(path)
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in walk for f in fs)
        return os.path.getsize(path) if path else None
    except OSError:
        return None


def _measure(q, source_path, scalar: bool, reporter) -> dict:
    """The real bytes of a .kvq file and an indexed PNG of ``q``, encoded in memory."""
    input_bytes = _file_bytes(source_path)
    if is_lazy_quantization(q) and q.report.n_pixels > IN_MEMORY_PIXELS:
        return {"skipped": "too large to encode in memory", "input_bytes": input_bytes}
    with warnings.catch_warnings():
        # An alpha channel kept out of the palette is not stored; the sizes are the
        # palette's, which is what the report means.
        warnings.simplefilter("ignore", UserWarning)
        if not is_lazy_quantization(q):
            return size_report(q, input_bytes=input_bytes)
        (labels,) = _compute([q.levels[0]], reporter)  # multiscale: full resolution
        return size_report(labels, q.palette, scalar=scalar, input_bytes=input_bytes)


@thread_worker(ignore_errors=True)
def single_job(image, k, options, source_path, source, reporter):
    """Quantize and yield the layer tuples; then measure the files, return their sizes."""
    channel_axis = options.get("channel_axis", -1)
    try:
        image, options = _inputs(image, options, reporter)
        q = _quantize(image, k, options, reporter)
        small = is_lazy_quantization(q) and q.report.n_pixels <= IN_MEMORY_PIXELS
        if small and not q.multiscale:  # napari gets numpy layers, never computes blocks
            q = q.with_arrays(*_compute([q.labels, q.reconstruction], reporter))
        tuples = quantization_layer_data(q, source_layer=source, channel_axis=channel_axis)
    except (Stop, Cancelled):
        return None
    except (ValueError, TypeError) as err:  # the engine's refusals name the problem
        return Result(refused=err)
    except Exception as err:  # returned, not raised: superqt drops a RuntimeError's signals
        return Result(failed=err)
    yield Layers(q, tuples)
    if reporter.stop.is_set():  # superqt also stops at the yield once quit() is called
        return None
    reporter.send("sizes", 0)
    try:
        return Result(sizes=_measure(q, source_path, channel_axis is None, reporter))
    except (Stop, Cancelled):
        return None
    except Exception as err:  # the layers are in: say why the sizes are missing
        return Result(sizes={"skipped": f"{type(err).__name__}: {err}"})


@thread_worker(ignore_errors=True)
def sweep_job(image, ks, options, source, reporter):
    """One quantization per K; the layer tuples and the table come back together."""
    tuples, rows = [], []
    try:
        image, options = _inputs(image, options, reporter)
    except (Stop, Cancelled):
        return None
    except (ValueError, TypeError) as err:
        return Result(refused=err)
    except Exception as err:
        return Result(failed=err)
    for i, k in enumerate(ks):
        reporter.span = (i / len(ks), (i + 1) / len(ks))
        try:
            q = _quantize(image, k, options, reporter)
        except (Stop, Cancelled):
            return None
        except (ValueError, TypeError) as err:
            return Result(refused=err)
        except Exception as err:
            return Result(failed=err)
        tuples.append(sweep_item(q, source_layer=source, options=options))
        rows.append(sweep_row(q))
        yield None  # a cancellation point between K
    return Result(tuples=tuples, rows=rows)
