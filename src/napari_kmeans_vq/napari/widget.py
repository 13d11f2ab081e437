"""The napari dock widget: quantize an image layer to K colours, in a worker thread.

A thin shell around :mod:`napari_kmeans_vq.layers`: the worker thread runs
:func:`~napari_kmeans_vq.quantize` and builds the layer-data tuples; the main thread only
adds or updates layers, so napari stays responsive while the engine works.

Multiscale (pyramid) and dask- or zarr-backed layers go through
:func:`~napari_kmeans_vq.chunked.quantize_lazy`: the codebook is fitted block by block (on
full resolution, or on the level chosen under "fit level"), and the outputs are lazy dask
layers, multiscale when the source is, that napari computes tile by tile as it draws them.

The worker also encodes the result in memory to report the real bytes of a ``.kvq`` file and
an indexed PNG (and the source file's own size), beside the formula's bits.
"""

from __future__ import annotations

import contextlib
import gc
import html
import math
import os
import threading
import time
import warnings
from types import SimpleNamespace

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer

from ..core._threads import one_thread
from ..core.kmeans import prepare
from ..core.quantize import quantize
from ..io import size_report
from ..large import dask_progress, is_lazy_input, quantize_lazy
from .layers import (
    _SPATIAL,
    METADATA_KEY,
    is_lazy_quantization,
    parse_k_list,
    quantization_layer_data,
    sweep_item,
    sweep_row,
)

__all__ = ["QuantizeWidget"]

MAX_COLORS = 65536
# Lazy results up to this many full-resolution pixels are encoded in the worker for the
# real-bytes report (and, when not multiscale, handed to napari as numpy arrays); larger
# ones stay lazy and their file sizes are not measured.
IN_MEMORY_PIXELS = 1 << 25


class InputError(ValueError):
    """A user's mistake: shown as a notification, never as a traceback."""


def _snapshot(layer: Layer) -> SimpleNamespace:
    """The source layer's name, identity and placement, read on the main thread.

    The worker thread builds the layer tuples from this copy, so it never touches a live
    napari object.
    """
    snap = {"name": layer.name, "unique_id": layer.unique_id}
    try:
        path = layer.source.path
    except Exception:  # layers made in scripts have no source file
        path = None
    snap["source_path"] = str(path) if path else None
    for attr in (*_SPATIAL, "contrast_limits"):
        try:
            value = getattr(layer, attr)
        except Exception:
            continue
        snap[attr] = np.array(value) if isinstance(value, np.ndarray) else value
    try:
        snap["affine"] = np.array(layer.affine.affine_matrix)
    except Exception:
        snap.pop("affine", None)
    colormap = getattr(layer, "colormap", None)
    if colormap is not None and not getattr(layer, "rgb", False):
        snap["colormap"] = SimpleNamespace(name=getattr(colormap, "name", None))
    return SimpleNamespace(**snap)


def check_source(layer, color_space: str):
    """Check that a layer can be quantized; return its pixels and the channel axis.

    The pixels are a numpy array, the layer's own dask or zarr array (left lazy), or for a
    multiscale layer the list of its levels, full resolution first.

    Raises
    ------
    InputError
        With a message that says what is wrong and what to do.
    """
    if layer is None:
        raise InputError(
            "No image layer to quantize. Open an image (File > Open, or File > Open Sample > "
            "K-Means Colour Quantization) and choose it under 'image'."
        )
    if not isinstance(layer, Image):
        kind = layer.__class__.__name__  # plugins get proxies; __class__ is the layer's
        raise InputError(
            f"'{layer.name}' is a {kind} layer, not an image. Choose an image layer (RGB, "
            "RGBA or single-channel) under 'image'."
        )
    if layer.rgb:
        channel_axis = -1
    else:
        if color_space == "lab":
            raise InputError(
                f"'{layer.name}' has no colour axis (it is a single-channel image), and Lab "
                "clustering needs RGB colours. Choose colour space 'rgb', or an RGB layer."
            )
        channel_axis = None
    if layer.multiscale:
        data = list(layer.data)  # napari's MultiScaleData: its levels, nothing read
        dtype = np.dtype(data[0].dtype)
    else:
        data = layer.data if is_lazy_input(layer.data) else np.asarray(layer.data)
        dtype = np.dtype(data.dtype)
    if dtype.kind not in "uif":
        raise InputError(
            f"'{layer.name}' holds {dtype} values; the quantizer needs integer or "
            "floating-point pixels. Convert the image, or choose another layer."
        )
    return data, channel_axis


def check_k(k) -> int:
    """K as an int in 1 .. 65,536, or an :class:`InputError` saying so."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_COLORS:
        raise InputError(f"K = {k!r} is out of range: choose a whole number from 1 to 65536.")
    return int(k)


_warmed = threading.Event()
_warm_lock = threading.Lock()


def _warm_up():
    """Do off napari's thread the one-off work of a session's first run.

    napari imports pandas lazily, the first time a layer gets features: on the main thread
    that import alone freezes napari for about half a second. The first labels layer of a
    session builds vispy's dash patterns for its polygon outline, about 90 ms of pure
    Python; vispy caches them (``lru_cache``), so building one atlas here fills the cache.
    The engine's compiled kernel is loaded too. Runs once; a run that starts while the
    warm-up is under way waits for it.
    """
    with _warm_lock:
        if _warmed.is_set():
            return
        import pandas  # noqa: F401

        prepare()
        try:
            from vispy.visuals.line.dash_atlas import DashAtlas
        except ImportError:  # another vispy layout: napari just pays the cost itself
            pass
        else:
            DashAtlas()
        _warmed.set()


def _warm_up_in_background():
    """Start the warm-up when the dock opens, so that it is usually done before Run.

    Importing creates enough objects to trigger a full garbage collection, which froze
    napari for 130-150 ms in the middle of the warm-up: the objects that exist are held
    out of full collections while it lasts, as during a run.
    """
    if _warmed.is_set() or _warm_lock.locked():
        return

    def warm():
        held = _hold_gc()
        try:
            with contextlib.suppress(Exception):  # a run warms up again and reports errors
                _warm_up()
        finally:
            if held:
                _release_gc()

    threading.Thread(target=warm, name="napari-kmeans-vq warm-up", daemon=True).start()


_gc_lock = threading.Lock()
_gc_holders = 0


def _hold_gc() -> bool:
    """Keep the objects that exist now out of Python's full collections until released.

    A full collection walks all of napari's objects and holds the GIL for 100 ms or more,
    freezing napari whichever thread triggers it. Holds nest (the warm-up, runs); the last
    release unfreezes, so nothing leaks: garbage among the frozen objects is only collected
    later. If someone else has frozen objects, nothing is held (returns False) and their
    freeze is left alone.
    """
    global _gc_holders
    with _gc_lock:
        if _gc_holders == 0 and gc.get_freeze_count() > 0:
            return False
        gc.freeze()
        _gc_holders += 1
        return True


def _release_gc() -> None:
    global _gc_holders
    with _gc_lock:
        _gc_holders -= 1
        if _gc_holders == 0:
            gc.unfreeze()


# Milliseconds between the main-thread steps that add a run's layers.
_STEP_GAP_MS = 5

# The file sizes of a single run have not arrived yet.
_PENDING = object()


class _Cancelled(Exception):
    """Raised inside the engine's progress callback to stop a cancelled run."""


# Share of a run's progress bar that each engine stage takes.
_STAGE_SPAN = {"histogram": (0.0, 0.1), "fit": (0.1, 0.85), "encode": (0.85, 1.0)}


class _RunControl:
    """The engine's progress callback: records how far it got, and stops it on cancel.

    The worker thread writes, the main thread reads (a float and a flag: no lock needed).
    """

    def __init__(self):
        self.abort = threading.Event()
        self.fraction = 0.0

    def __call__(self, stage: str, fraction: float):
        if self.abort.is_set():
            raise _Cancelled
        start, stop = _STAGE_SPAN.get(stage, (0.0, 1.0))
        self.fraction = start + (stop - start) * fraction


def _quantize(image, k, options, control):
    """The engine call: eager for numpy pixels, block by block for lazy ones.

    The engine's C passes keep to one thread here, leaving a core to napari's drawing.
    Measured on 2 cores (2048 x 2048, K = 16, four runs each): napari's longest pause on a
    first run 74-83 ms with one thread, 77-96 ms with two; the engine took 0.12-0.13 s
    against 0.13-0.16 s.
    """
    options = dict(options)
    fit_level = options.pop("fit_level", 0)
    with one_thread():
        if is_lazy_input(image):
            return quantize_lazy(image, k, fit_level=fit_level, progress=control, **options)
        return quantize(image, k, progress=control, **options)


def source_file_bytes(path) -> int | None:
    """Size of the source layer's file (or of all files in a directory store), or None."""
    if not path:
        return None
    try:
        if os.path.isfile(path):
            return os.path.getsize(path)
        if os.path.isdir(path):  # a zarr store
            return sum(
                os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(path)
                for name in names
            )
    except OSError:
        return None
    return None


def _compute(arrays, control):
    """Compute dask arrays in the worker, reporting "encode" progress; cancel stops it."""
    import dask

    report = lambda done, total: control("encode", done / max(total, 1))  # noqa: E731
    with dask_progress(report, control.abort.is_set):
        return dask.compute(*arrays)


def _storage_sizes(q, labels, scalar: bool, input_bytes: int | None) -> dict:
    """Formula bits and real encoded bytes (``storage.size_report``) plus the source file."""
    with warnings.catch_warnings():
        # alpha kept outside the palette is not stored: the sizes are the palette's.
        warnings.simplefilter("ignore", UserWarning)
        report = size_report(labels, q.palette, scalar=scalar, input_bytes=input_bytes)
    report["formula"] = {**report["formula"], **q.report.to_dict()}
    return report


def _single_job(image, k, options, source, control):
    """Worker: quantize and build the two layer tuples; then measure the files.

    The layer tuples are yielded (the main thread adds them at once), and the file sizes,
    which take longer than the fit on a large image, are returned after them.
    """
    _warm_up()
    yield 0
    q = _quantize(image, k, options, control)
    yield 1  # a cancellation point: quit() takes effect here
    channel_axis = options.get("channel_axis", -1)
    big = is_lazy_quantization(q) and q.report.n_pixels > IN_MEMORY_PIXELS
    if is_lazy_quantization(q) and not big and not getattr(q, "multiscale", False):
        # Small enough: encoded here, so napari gets numpy layers and never computes.
        q = q.with_arrays(*_compute([q.labels, q.reconstruction], control))
    control("encode", 1.0)
    layers = quantization_layer_data(q, source_layer=source, channel_axis=channel_axis)
    yield {"layers": layers, "quantization": q, "prebuilt": _prebuilt_layers(layers)}

    input_bytes = source_file_bytes(getattr(source, "source_path", None))
    if big:
        return {
            "storage": {
                "skipped": f"{q.report.n_pixels:,} pixels: too large to encode in memory; "
                "write OME-Zarr labels instead",
                "input_bytes": input_bytes,
            }
        }
    labels = q.labels
    if getattr(q, "multiscale", False):
        # napari draws the levels lazily; only full resolution is encoded, for its size.
        (labels,) = _compute([q.levels[0]], control)
    return {"storage": _storage_sizes(q, labels, channel_axis is None, input_bytes)}


def _sweep_job(image, ks, options, source, control):
    """Worker: one quantization per K, each one a cancellation point."""
    _warm_up()
    layers, rows = [], []
    for done, k in enumerate(ks):
        yield done
        q = _quantize(image, k, options, control)
        layers.append(sweep_item(q, source_layer=source, options=options))
        rows.append(sweep_row(q))
    yield len(ks)
    return {"layers": layers, "rows": rows, "prebuilt": _prebuilt_layers(layers)}


def _prebuilt_layers(tuples) -> list[Layer | None]:
    """The napari layers of ``tuples``, hidden; built here so napari's thread only adds them.

    A layer model is plain Python (no Qt), so building it in the worker is safe; it saves
    the main thread 5-15 ms per layer. A layer that fails to build here is built there.
    """
    made = []
    for data, meta, kind in tuples:
        try:
            made.append(Layer.create(data, {**meta, "visible": False}, kind))
        except Exception:  # the main thread retries and reports
            made.append(None)
    return made


def _fmt_bits(bits: int) -> str:
    return f"{bits:,} bits ({bits / 8 / 1024:,.1f} KiB)"


def _fmt_psnr(psnr: float | None) -> str:
    if psnr is None or not math.isfinite(psnr):
        return "inf (lossless)"
    return f"{psnr:.2f} dB"


def storage_rows(sizes: dict | None) -> list[tuple[str, str]]:
    """The report panel's rows of real bytes: the files, and the source file.

    Values stay short: the panel's width sets the dock's, and so how much canvas is left.
    """
    if not sizes:
        return []
    rows = []
    if "skipped" in sizes:
        rows.append(("files", "not measured (too large)"))
    else:
        files, raw = sizes["files"], sizes["raw_bytes"]
        kvq = files["kvq_deflated"]
        rows.append((".kvq file", f"{kvq:,} B, {100 * kvq / raw:.1f}% of raw"))
        rows.append((".kvq packed", f"{files['kvq_raw']:,} B, before deflate"))
        png = files.get("png")
        if png is not None:
            rows.append(("PNG file", f"{png:,} B, {100 * png / raw:.1f}% of raw"))
        else:
            rows.append(("PNG file", "none (2D, K <= 256 only)"))
    source = sizes.get("input_bytes")
    if source:
        rows.append(("source file", f"{source:,} B"))
        if "files" in sizes:
            share = 100 * sizes["files"]["kvq_deflated"] / source
            rows.append((".kvq / source", f"{share:.1f}%"))
    return rows


def report_rows(q, seconds: float | None = None, sizes: dict | None = None):
    """The report panel's rows for one quantization (and its real file sizes)."""
    r = q.report
    k_asked = q.info.get("n_colors_requested", q.n_colors)
    k_text = f"{q.n_colors}" if k_asked == q.n_colors else f"{q.n_colors} (asked {k_asked})"
    rows = [
        ("pixels", f"{r.n_pixels:,}"),
        ("K", k_text),
        ("original", _fmt_bits(r.original_bits)),
        ("index", f"{_fmt_bits(r.index_bits)}, {r.bits_per_index}/pixel"),
        ("codebook", _fmt_bits(r.codebook_bits)),
        ("total", _fmt_bits(r.total_bits)),
        ("ratio", f"{r.ratio:.4f} ({100 * r.ratio:.1f}% of original)"),
        ("saving", f"{100 * r.saving:.1f}%"),
    ]
    rows += storage_rows(sizes)
    if r.entropy_bits is not None:
        rows.append(("entropy bound", f"{r.entropy_bits:,.0f} bits"))
    rows += [
        ("J (MSE)", f"{q.distortion:.3f}"),
        ("PSNR", _fmt_psnr(q.psnr)),
        ("engine time", f"{q.info.get('seconds', float('nan')):.3f} s"),
    ]
    if seconds is not None:
        rows.append(("run to layers", f"{seconds:.3f} s"))
    info = getattr(q, "info", {}) or {}
    if info.get("n_levels", 1) > 1:
        rows.append(
            ("fit", f"{info.get('fit')}, level {info.get('fit_level')} of {info['n_levels']}")
        )
    return rows


def _html_table(header: list[str] | None, rows: list[list[str]]) -> str:
    cells = []
    if header:
        cells.append("<tr>" + "".join(f"<th align='right'>{h}</th>" for h in header) + "</tr>")
    for row in rows:
        cells.append(
            "<tr>"
            + "".join(
                f"<td align='{'left' if i == 0 and not header else 'right'}'>"
                f"{html.escape(str(c))}&nbsp;&nbsp;</td>"
                for i, c in enumerate(row)
            )
            + "</tr>"
        )
    return "<table cellspacing='0' cellpadding='1'>" + "".join(cells) + "</table>"


class QuantizeWidget(Container):
    """Dock widget: quantize an image layer to K colours with k-means.

    Adds (or, on a re-run on the same source, updates) a reconstruction image layer and a
    cluster-labels layer coloured with the palette; a sweep over several K adds one
    reconstruction per K and turns on napari's grid view. The engine runs in a worker
    thread; Cancel discards its result.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Injected by napari when the widget is opened from the Plugins menu.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        _warm_up_in_background()
        self.image = create_widget(
            annotation=Image,
            label="image",
            options={"tooltip": "Image layer to quantize: RGB, RGBA or single-channel."},
        )
        self.n_colors = SpinBox(
            value=16,
            min=1,
            max=MAX_COLORS,
            label="K (colours)",
            tooltip="Codebook size K, 1 to 65536. Each pixel is stored as a "
            "ceil(log2 K)-bit index into K colours.",
        )
        self.seed = SpinBox(
            value=0,
            min=0,
            max=2**31 - 1,
            label="seed",
            tooltip="Random seed for k-means++ seeding; the same seed gives the same result.",
        )
        self.color_space = ComboBox(
            choices=["rgb", "lab"],
            value="rgb",
            label="colour space",
            tooltip="Where colours are clustered: 'rgb' (as the seed tutorial does) or "
            "'lab' (CIELAB, perceptual; the classic recipe for stain segmentation). The "
            "palette and the error are always in the image's own colours.",
        )
        self.n_init = SpinBox(
            value=0,
            min=0,
            max=100,
            label="restarts",
            tooltip="k-means seedings to try, keeping the best (n_init); 0 = automatic.",
        )
        self.fit_level = SpinBox(
            value=0,
            min=0,
            max=0,
            label="fit level",
            tooltip="Multiscale images: the resolution level the codebook is fitted on "
            "(0 = full resolution, exact; higher levels are faster). Every level is then "
            "encoded with that one codebook.",
        )
        self.sweep = LineEdit(
            value="2, 3, 6, 16",
            label="sweep K",
            tooltip="K values for 'Run sweep', separated by commas: one reconstruction "
            "each, side by side in grid view, and a comparison table.",
        )
        self.run_button = PushButton(text="Run", tooltip="Quantize the image at K colours.")
        self.sweep_button = PushButton(
            text="Run sweep", tooltip="Quantize at every K in 'sweep K' and compare."
        )
        self.cancel_button = PushButton(
            text="Cancel", enabled=False, tooltip="Stop the run; nothing is added."
        )
        buttons = Container(
            widgets=[self.run_button, self.sweep_button, self.cancel_button],
            layout="horizontal",
            labels=False,
            label="",
        )
        buttons.margins = (0, 0, 0, 0)
        # Always shown (empty when idle): showing and hiding it would resize the dock, and
        # the canvas with it, forcing a redraw in the middle of a run.
        self.progress = ProgressBar(value=0, min=0, max=1, label="")
        self.progress.native.setTextVisible(False)
        self.status = Label(value="Ready.", label="")
        self.report = Label(value="", label="")
        self.report.native.setTextFormat(1)  # Qt.RichText
        self.report.native.setTextInteractionFlags(
            self.report.native.textInteractionFlags() | 1  # selectable, to copy numbers
        )
        self.extend(
            [
                self.image,
                self.n_colors,
                self.seed,
                self.color_space,
                self.n_init,
                self.fit_level,
                self.sweep,
                buttons,
                self.progress,
                self.status,
                self.report,
            ]
        )
        self.run_button.changed.connect(lambda: self.run())
        self.sweep_button.changed.connect(lambda: self.run_sweep())
        self.cancel_button.changed.connect(self.cancel)
        self.image.changed.connect(self._on_image_changed)
        self._on_image_changed()

        self.worker = None
        self._applying = False
        self.last_result: dict | None = None  # what the report panel shows, for scripts
        self.sweep_rows: list[dict] = []
        self._run_id = 0
        self._cancelled: set[int] = set()
        # When napari closes the dock (or the viewer), a run still in flight must not touch
        # the deleted Qt widgets or the closed viewer when its result arrives.
        self._closed = False
        self._gc_frozen = False
        self._hidden: list[Layer] = []  # added by this run, shown by a later step
        self.native.destroyed.connect(self._on_destroyed)
        self._control = _RunControl()
        self._sizes = None
        self._layers_done = False
        self._last_q = None
        self._poll = QTimer()
        self._poll.setInterval(100)
        self._poll.timeout.connect(self._show_progress)

    # -- public actions ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from Run until the layers are in the viewer (or the run was cancelled)."""
        return self.worker is not None or self._applying

    def run(self, layer: Layer | None = None, n_colors: int | None = None):
        """Quantize ``layer`` (default: the one chosen in the widget) at K colours.

        Returns the started worker, or None when the input was refused (a notification
        then says why).
        """
        try:
            source, image, options = self._prepare(layer)
            k = check_k(self.n_colors.value if n_colors is None else n_colors)
        except InputError as err:
            show_error(str(err))
            return None
        return self._start(_single_job, image, k, options, source, mode="single")

    def run_sweep(self, layer: Layer | None = None, ks: str | list[int] | None = None):
        """Quantize at every K of the sweep field (or ``ks``); one reconstruction per K."""
        try:
            source, image, options = self._prepare(layer)
            try:
                values = parse_k_list(self.sweep.value if ks is None else ks)
            except ValueError as err:
                raise InputError(f"{err}.") from None
        except InputError as err:
            show_error(str(err))
            return None
        return self._start(_sweep_job, image, values, options, source, mode="sweep")

    def cancel(self):
        """Stop the running worker; its result, if it arrives, is thrown away."""
        if self.worker is None or self._applying:
            return
        self._cancelled.add(self._run_id)
        self._control.abort.set()  # stops the engine at its next progress report
        self.worker.quit()
        self.status.value = "Cancelled; nothing was added."
        self._idle()

    # -- internals -----------------------------------------------------------------------

    def _on_image_changed(self, *_):
        """Offer the fit level only for multiscale sources, bounded by their levels."""
        layer = self.image.value
        n_levels = len(layer.data) if isinstance(layer, Image) and layer.multiscale else 1
        self.fit_level.max = max(n_levels - 1, 0)
        self.fit_level.enabled = n_levels > 1
        self.fit_level.visible = n_levels > 1

    def _prepare(self, layer):
        if self.running:
            raise InputError("A quantization is already running; wait for it or press Cancel.")
        if layer is None:
            layer = self.image.value
            if layer is None:
                layer = self._viewer.layers.selection.active
        data, channel_axis = check_source(layer, self.color_space.value)
        options = {
            "random_state": int(self.seed.value),
            "color_space": self.color_space.value,
            "n_init": "auto" if self.n_init.value == 0 else int(self.n_init.value),
            "channel_axis": channel_axis,
        }
        if isinstance(data, list):
            level = int(self.fit_level.value) if layer is self.image.value else 0
            options["fit_level"] = min(level, len(data) - 1)
        return layer, data, options

    def _start(self, job, image, what, options, source, *, mode):
        self._run_id += 1
        run_id = self._run_id
        snapshot = _snapshot(source)
        started = time.perf_counter()
        self._control = control = _RunControl()
        self._layers_done = False
        self._gc_hold()
        worker = create_worker(job, image, what, options, snapshot, control, _ignore_errors=True)
        worker.returned.connect(
            lambda result: self._on_returned(run_id, mode, source, result, started)
        )
        worker.yielded.connect(lambda step: self._on_yielded(run_id, mode, source, step, started))
        worker.errored.connect(lambda err: self._on_errored(run_id, source, err))
        worker.finished.connect(lambda: self._on_finished(run_id))
        self.worker = worker
        self.run_button.enabled = self.sweep_button.enabled = False
        self.cancel_button.enabled = True
        total = len(what) if mode == "sweep" else 0
        if total:
            self.progress.min, self.progress.max, self.progress.value = 0, total, 0
            self.progress.native.setFormat("%v of %m K done")
        else:
            # The engine reports its progress; the bar follows it from the main thread.
            self.progress.min, self.progress.max, self.progress.value = 0, 100, 0
            self.progress.native.setFormat("%p%")
            self._poll.start()
        self.progress.native.setTextVisible(True)
        k_text = ", ".join(map(str, what)) if mode == "sweep" else str(what)
        self.status.value = f"Quantizing '{source.name}' at K = {k_text}…"
        worker.start()
        return worker

    def _current(self, run_id: int) -> bool:
        return not self._closed and run_id == self._run_id and run_id not in self._cancelled

    def _on_destroyed(self, *_):
        self._closed = True
        self._gc_release()
        self._poll.stop()
        self._control.abort.set()
        if self.worker is not None:
            self.worker.quit()

    def _show_progress(self):
        if self.worker is not None and not self._applying:
            self.progress.value = int(100 * self._control.fraction)

    def _on_yielded(self, run_id, mode, source, step, started):
        if not self._current(run_id):
            return
        if mode == "sweep":
            self.progress.value = step
        elif isinstance(step, dict):  # the layers are ready; the file sizes follow
            self._apply_single(run_id, source, step, started)

    def _on_errored(self, run_id, source, err):
        if not self._current(run_id) or isinstance(err, _Cancelled):
            return
        if self._applying and self._sizes is _PENDING:
            # The layers are in; only measuring the files failed.
            show_warning(f"The file sizes could not be measured ({type(err).__name__}): {err}")
            self._sizes_arrived(run_id, source, None)
            return
        # Errors from the engine are about the input (its ValueError/TypeError messages name
        # the parameter); anything else is a bug, reported the same way but labelled.
        if isinstance(err, ValueError | TypeError):
            show_error(f"Cannot quantize: {err}")
        else:
            show_error(f"Quantization failed ({type(err).__name__}): {err}")
        self.status.value = "Failed; nothing was added."

    def _on_finished(self, run_id):
        # A returned result is still being applied step by step; that chain ends the run.
        if self._closed:
            self.worker = None
            return
        if run_id == self._run_id and not self._applying:
            self._idle()

    def _gc_hold(self):
        """Keep the objects that exist at Run out of full collections until idle (a run
        creates enough objects to trigger one; see :func:`_hold_gc`)."""
        if not self._gc_frozen:
            self._gc_frozen = _hold_gc()

    def _gc_release(self):
        if self._gc_frozen:
            self._gc_frozen = False
            _release_gc()

    def _idle(self):
        self._gc_release()
        self._poll.stop()
        self.worker = None
        self._applying = False
        self.run_button.enabled = self.sweep_button.enabled = True
        self.cancel_button.enabled = False
        self.progress.min, self.progress.max, self.progress.value = 0, 1, 0
        self.progress.native.setTextVisible(False)

    def _on_returned(self, run_id, mode, source, result, started):
        if not self._current(run_id):
            return  # cancelled or superseded: discard
        if mode == "single":
            self._sizes_arrived(run_id, source, result.get("storage"))
            return
        # From here the run is committed: adding layers is quick main-thread work, done one
        # layer per event-loop turn so napari keeps drawing and answering in between.
        self._applying = True
        self.cancel_button.enabled = False
        self.status.value = "Adding layers…"
        steps = self._sweep_steps(source, result["layers"], result["prebuilt"])
        steps.append(lambda: self._report_sweep(result["rows"]))
        steps.append(lambda: self._select(source))
        steps.append(self._idle)
        self._run_steps(run_id, steps)

    def _apply_single(self, run_id, source, payload, started):
        """Add the two layers (committing the run); the report's file sizes come later."""
        self._applying = True
        self.cancel_button.enabled = False
        self.status.value = "Adding layers…"
        self._sizes = _PENDING
        self._layers_done = False
        q = payload["quantization"]
        steps = self._single_steps(source, payload["layers"], payload["prebuilt"])
        steps.append(lambda: self._report_single(source, q, started))
        steps.append(lambda: self._select(source))
        steps.append(lambda: self._layers_added(run_id, source))
        self._run_steps(run_id, steps)

    def _layers_added(self, run_id, source):
        self._layers_done = True
        self.status.value = "Measuring the files…"
        if self._sizes is not _PENDING:
            self._finish_single(source)

    def _sizes_arrived(self, run_id, source, sizes):
        if not self._applying:
            return
        self._sizes = sizes
        if self._layers_done:
            self._finish_single(source)

    def _finish_single(self, source):
        """Store the real file sizes in both layers' metadata and the panel; end the run."""
        sizes = self._sizes
        if sizes is not None and source in self._viewer.layers:
            for role in ("reconstruction", "labels"):
                for layer in self._outputs(source).get(role, []):
                    tag = {**layer.metadata[METADATA_KEY], "storage": sizes}
                    layer.metadata = {**layer.metadata, METADATA_KEY: tag}
        if self.last_result is not None:
            self.last_result["storage"] = sizes
            rows = report_rows(self._last_q, self.last_result["seconds"], sizes)
            self.report.value = _html_table(None, [list(r) for r in rows])
        self.status.value = f"Done: '{source.name}' at K = {self._last_q.n_colors}."
        self._idle()

    def _run_steps(self, run_id, steps):
        if self._closed or run_id != self._run_id or not steps:
            return
        try:
            steps.pop(0)()
        except Exception as err:  # napari refused a layer: say so, keep the widget usable
            show_error(f"Could not add the layers ({type(err).__name__}): {err}")
            self.status.value = "Failed while adding layers."
            self._idle()
            return
        if steps:
            # A short delay, not 0: a zero timer can run before napari's pending timers
            # and paints, so consecutive steps would add up to one long freeze.
            QTimer.singleShot(_STEP_GAP_MS, lambda: self._run_steps(run_id, steps))

    def _report_single(self, source, q, started):
        seconds = time.perf_counter() - started
        self._last_q = q
        self.last_result = {
            "report": q.report.to_dict(),
            "distortion": q.distortion,
            "psnr": q.psnr,
            "n_colors": q.n_colors,
            "seconds": seconds,
            "storage": None,
        }
        rows = [*report_rows(q, seconds), ("files", "measuring…")]
        self.report.value = _html_table(None, [list(r) for r in rows])
        if q.n_colors < q.info.get("n_colors_requested", q.n_colors):
            show_warning(
                f"'{source.name}' has only {q.n_colors} distinct colours, so K = "
                f"{q.n_colors} was used."
            )

    def _report_sweep(self, rows):
        self.sweep_rows = rows
        self.report.value = _sweep_table(rows)
        self.status.value = f"Sweep done: {len(rows)} reconstructions, in grid view."

    def _outputs(self, source) -> dict[str, list[Layer]]:
        """This widget's output layers for ``source``, by role."""
        found: dict[str, list[Layer]] = {}
        source_id = str(source.unique_id)
        for layer in self._viewer.layers:
            tag = layer.metadata.get(METADATA_KEY) if isinstance(layer.metadata, dict) else None
            if isinstance(tag, dict) and tag.get("source_id") == source_id:
                found.setdefault(tag.get("role"), []).append(layer)
        return found

    def _put(self, old: list[Layer], data, meta, kind, prebuilt: Layer | None = None) -> None:
        """Update the first of ``old`` in place, or replace them all with a new layer.

        A new layer goes in hidden and is shown by a later step (:meth:`_reveal`): napari
        builds a layer's visuals and controls when it is added, but slices and uploads
        its data when it becomes visible; one event-loop turn for each halves the freeze.
        """
        if old and _update_in_place(old[0], data, meta, kind):
            return
        for layer in old:
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        layer = prebuilt or Layer.create(data, {**meta, "visible": False}, kind)
        self._viewer.add_layer(layer)
        if meta.get("visible", True):
            self._hidden.append(layer)

    def _reveal(self):
        """Show the next layer that :meth:`_put` added hidden (if it is still there)."""
        if self._hidden:
            layer = self._hidden.pop(0)
            if layer in self._viewer.layers:
                layer.visible = True

    def _single_steps(self, source, tuples, prebuilt) -> list:
        existing = self._outputs(source)
        self._hidden = []
        steps = []
        for (data, meta, kind), made in zip(tuples, prebuilt, strict=True):
            old = existing.get(meta["metadata"][METADATA_KEY]["role"], [])
            steps.append(lambda o=old, d=data, m=meta, k=kind, h=made: self._put(o, d, m, k, h))
        steps += [self._reveal] * len(tuples)
        return steps

    def _sweep_steps(self, source, tuples, prebuilt) -> list:
        self._hidden = []
        old = {
            layer.metadata[METADATA_KEY].get("n_colors_requested"): layer
            for layer in self._outputs(source).get("sweep", [])
        }
        new_ks = {
            meta["metadata"][METADATA_KEY].get("n_colors_requested") for _, meta, _ in tuples
        }
        steps = [
            lambda layer=layer: self._viewer.layers.remove(layer)
            for k, layer in old.items()
            if k not in new_ks
        ]
        for (data, meta, kind), made in zip(tuples, prebuilt, strict=True):
            k = meta["metadata"][METADATA_KEY].get("n_colors_requested")
            previous = [old[k]] if k in old else []
            steps.append(
                lambda p=previous, d=data, m=meta, t=kind, h=made: self._put(p, d, m, t, h)
            )
        steps += [self._reveal] * len(tuples)
        steps.append(lambda: setattr(self._viewer.grid, "enabled", True))
        return steps

    def _select(self, source):
        # Keep the source chosen for the next run; napari selects newly added layers.
        if source in self._viewer.layers and self.image.value is not source:
            self.reset_choices()
            if source in self.image.choices:
                self.image.value = source


def _update_in_place(layer: Layer, data, meta: dict, kind: str) -> bool:
    """Give an existing output layer new data and attributes; False when it cannot be."""
    expected = {"image": Image, "labels": Labels}[kind]
    if not isinstance(layer, expected) or layer.multiscale or meta.get("multiscale"):
        return False  # multiscale outputs are replaced: napari cannot swap pyramids in place
    if np.ndim(layer.data) != np.ndim(data):
        return False
    if kind == "image" and layer.rgb != meta.get("rgb", False):
        return False
    if kind == "labels":
        layer.colormap = meta["colormap"]  # colours first, so new labels never show old ones
    layer.data = data
    for attr in ("features", "metadata", "name"):
        if attr in meta:
            setattr(layer, attr, meta[attr])
    # Each spatial or contrast change re-slices the layer: set only what really changed.
    for attr in ("contrast_limits", *_SPATIAL):
        if attr not in meta:
            continue
        try:
            if not _same(getattr(layer, attr), meta[attr]):
                setattr(layer, attr, meta[attr])
        except Exception:  # an attribute this napari cannot set stays as it was
            continue
    return True


def _same(current, new) -> bool:
    """Whether a layer attribute already has a value (arrays, tuples, transforms, units)."""
    current = getattr(current, "affine_matrix", current)
    new = getattr(new, "affine_matrix", new)
    try:
        return bool(np.array_equal(np.asarray(current, float), np.asarray(new, float)))
    except (TypeError, ValueError):
        return tuple(map(str, current)) == tuple(map(str, new))


def _sweep_table(rows: list[dict]) -> str:
    header = ["K", "bits", "ratio", "J", "PSNR", "time"]
    body = [
        [
            str(r["K"]),
            f"{r['total_bits']:,}",
            f"{r['ratio']:.4f}",
            f"{r['J']:.2f}",
            _fmt_psnr(r["psnr"]),
            f"{r['seconds']:.2f} s" if r.get("seconds") is not None else "",
        ]
        for r in rows
    ]
    return _html_table(header, body)
