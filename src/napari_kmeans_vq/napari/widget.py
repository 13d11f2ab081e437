"""The napari dock widget: quantize an image layer to K colours, in a worker thread.

A thin shell. The numerics are :func:`napari_kmeans_vq.quantize` (with its ``mask``,
:func:`~napari_kmeans_vq.core.tissue.tissue_mask` and ``min_region``); the layer tuples,
the class table, merges and the report's rows come from
:mod:`napari_kmeans_vq.napari.layers`; the real file sizes from
:func:`napari_kmeans_vq.io.size_report`. A mask drawn in napari (a labels or shapes layer)
is rasterised here by napari itself (``Shapes.to_masks``). Each run is one napari
``thread_worker`` that yields the layer tuples (the main thread adds or updates the layers
in one step), then measures the files and returns their sizes. Progress shows in napari's
activity dock.

Cancel sets a flag that the engine's ``progress(stage, fraction)`` callback checks: the
callback raises and the engine stops where it is; between steps the worker checks the
flag itself. Signals from a run that is no longer current are ignored, so a cancelled run,
or one whose dock or viewer was closed, adds nothing.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels, Layer, Shapes
from napari.utils import cancelable_progress
from napari.utils.notifications import notification_manager, show_error, show_warning
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .._limits import MAX_FIT_COLORS
from ..core.codebook import Codebook
from ..core.colorspace import COLOR_SPACES
from ..core.tissue import DEFAULT_THRESHOLD
from ..large import is_lazy_input
from .inputs import (
    IN_MEMORY_PIXELS,
    InputError,
    check_k,
    check_source,
    mask_from_layer,
    spatial_shape,
)
from .jobs import Layers, Relay, Reporter, Result, single_job, sweep_job
from .layers import (
    _SPATIAL,
    CURVE_METRICS,
    METADATA_KEY,
    class_table_for,
    class_table_view,
    curve_points,
    curve_target,
    is_lazy_quantization,
    layer_snapshot,
    merge_classes,
    merge_names,
    parse_k_list,
    quantization_layer_data,
    report_rows,
    sweep_table,
)
from .plot import CurvePlot

if TYPE_CHECKING:
    import napari

# (the checks live in .inputs; re-exported for scripts that know them from here)
__all__ = ["InputError", "QuantizeWidget", "check_k", "check_source", "mask_from_layer"]


def _html_table(header: list[str] | None, rows: list) -> str:
    """Rows of text as a compact HTML table; the first column names rows without a header."""
    cells = []
    if header:
        cells.append("<tr>" + "".join(f"<th align='right'>{h}&nbsp;</th>" for h in header))
    for row in rows:
        tds = [
            f"<td align='{'left' if i == 0 and not header else 'right'}'>"
            f"{html.escape(str(c))}&nbsp;</td>"
            for i, c in enumerate(row)
        ]
        cells.append("<tr>" + "".join(tds) + "</tr>")
    return "<table cellspacing='0' cellpadding='1'>" + "".join(cells) + "</table>"


class _RunProgress(cancelable_progress):
    """napari's progress bar, whose Cancel button (activity dock) stops the run at once.
    napari's own class calls ``cancel_callback`` only while it iterates; a run is no loop."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class _CloseWatch(QObject):
    """Sees napari close the dock: it takes the widget out (parent None), not deletes it."""

    def __init__(self, on_close):
        super().__init__()
        self._on_close = on_close

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            self._on_close()
        return False


@dataclass(eq=False)
class _Run:
    """One run in flight: what it quantizes, how to stop it, how far it got."""

    id: int
    source: Layer
    title: str
    reporter: Reporter
    snapshot: object = None  # the source's plain copy the worker reads
    channel_axis: int | None = -1
    worker: object = None
    progress: _RunProgress | None = None
    started: float = field(default_factory=time.perf_counter)
    layers_at: float | None = None  # when a single run's layers went in
    stage: str = ""
    percent: int = 0
    names: list | None = None  # class names that come with an applied codebook

    @property
    def stop(self) -> threading.Event:
        return self.reporter.stop


@dataclass(eq=False)
class _Classes:
    """The class table's state: the last single run's result, and the names given."""

    q: object  # Quantization, or LazyQuantization (no merges then)
    source: Layer
    snapshot: object  # the source's placement at the run: areas come from its scale
    channel_axis: int | None
    names: list  # str, or None for a class not named yet


def _swatch(hex_colour: str) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(hex_colour))
    return QIcon(pixmap)


class QuantizeWidget(Container):
    """Dock widget: quantize an image layer to K colours with k-means.

    *Run* adds (re-run on the same source: updates in place) a reconstruction image layer
    and a labels layer coloured with the palette, fills the class table (one row per class:
    colour, editable name, share, area, mean stains) and reports the bits and the real file
    sizes, folded under the table. *Run sweep* adds one reconstruction per K and shows them
    in napari's grid view, with a comparison table. A mask (a labels or shapes layer, or
    the automatic tissue mask) limits the segmentation to its pixels; *min region* merges
    smaller connected regions into their neighbours.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Injected by napari when the widget is opened from the Plugins menu.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self.image = create_widget(annotation=Image, label="image")
        self.image.tooltip = "Image layer to quantize: RGB, RGBA or single-channel."
        self.n_colors = SpinBox(value=16, min=1, max=MAX_FIT_COLORS, label="K (colours)")
        self.n_colors.tooltip = "Codebook size K: each pixel becomes a ceil(log2 K)-bit index."
        self.auto_k = CheckBox(value=False, text="choose K for a PSNR target", label="")
        self.auto_k.tooltip = (
            "Run picks the smallest K whose reconstruction reaches the target PSNR (and K - 1 "
            "does not), fitting every K tried on one colour histogram; the K tried show in "
            "the curve."
        )
        self.target_psnr = FloatSpinBox(
            value=35.0, min=5.0, max=100.0, step=0.5, label="target PSNR (dB)"
        )
        self.target_psnr.tooltip = "The quality 'choose K' aims for (K up to 256)."
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self.seed.tooltip = "Seed of the k-means++ seeding: the same seed, the same result."
        # (the custom "stains" space needs vectors, which the panel does not ask for)
        spaces = [space for space in COLOR_SPACES if space not in ("stains",)]
        self.color_space = ComboBox(choices=spaces, value="rgb", label="colour space")
        self.color_space.tooltip = (
            "Where colours are clustered: RGB; CIELAB or Oklab (perceptual); optical "
            "density; H&E or H-DAB stain amounts (colour deconvolution)."
        )
        self.n_init = SpinBox(value=0, min=0, max=100, label="restarts")
        self.n_init.tooltip = "Seedings to try, keeping the best (n_init); 0 = automatic."
        self.mask = ComboBox(choices=self._mask_choices, label="mask")
        self.mask.tooltip = (
            "Pixels to segment: all ('none'); the labelled pixels of a labels layer or the "
            "inside of a shapes layer's shapes, drawn over the image; or the tissue found "
            "automatically (bright glass left out). The others get label 0 and count nowhere."
        )
        self.tissue_threshold = FloatSpinBox(
            value=DEFAULT_THRESHOLD, min=0.0, max=3.0, step=0.01, label="tissue threshold"
        )
        self.tissue_threshold.tooltip = (
            "Automatic mask: optical density, summed over R, G and B, above which a pixel is "
            "tissue. Raise it (0.2-0.3) to leave out faint tissue or dust, lower it for pale "
            "stains."
        )
        self.min_region = SpinBox(value=0, min=0, max=10**8, label="min region (px)")
        self.min_region.tooltip = (
            "Spatial clean-up: connected regions smaller than this many pixels take their "
            "neighbours' majority class; 0 = off."
        )
        self.fit_level = SpinBox(value=0, min=0, max=0, label="fit level")
        self.fit_level.tooltip = "Multiscale images: the level the codebook is fitted on."
        self.sweep = LineEdit(value="2, 3, 6, 16", label="sweep K")
        self.sweep.tooltip = "K values for 'Run sweep', compared side by side in grid view."
        self.run_button = PushButton(text="Run")
        self.sweep_button = PushButton(text="Run sweep")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        buttons = Container(
            widgets=[self.run_button, self.sweep_button, self.cancel_button],
            layout="horizontal",
            labels=False,
            label="",
        )
        buttons.margins = (0, 0, 0, 0)
        self.apply_button = PushButton(text="Apply codebook…")
        self.apply_button.tooltip = (
            "Load a saved codebook file and apply it to the image without refitting: the "
            "same colours and classes as the images it came from."
        )
        self.status = Label(value="Ready.", label="")
        self.report = Label(value="")
        widgets = [self.image, self.n_colors, self.auto_k, self.target_psnr, self.seed]
        widgets += [self.color_space, self.n_init]
        masking = [self.mask, self.tissue_threshold, self.min_region]
        self.extend([*widgets, *masking, self.fit_level, self.sweep, buttons, self.apply_button])
        self.append(self.status)
        # Text wraps, and the report scrolls, rather than widen the dock after a run
        # (magicgui makes labels Fixed: as wide as their text).
        preferred = QSizePolicy.Policy.Preferred
        for label in (self.status.native, self.report.native):
            label.setWordWrap(True)
            label.setSizePolicy(preferred, preferred)
        self.report.native.setTextFormat(Qt.TextFormat.RichText)
        self.report.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.report.native.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.native.layout().addWidget(self._make_curve_panel())
        self.native.layout().addWidget(self._make_class_panel())
        # The bit report, folded under the class table: a button opens it.
        self.report_toggle = QToolButton()
        self.report_toggle.setText("Bits and files")
        self.report_toggle.setCheckable(True)
        self.report_toggle.setAutoRaise(True)
        self.report_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.report_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.report_toggle.setToolTip("The bit accounting, J, PSNR and the real file sizes.")
        self._report_scroll = scroll = QScrollArea()
        scroll.setWidget(self.report.native)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        scroll.setVisible(False)
        self.report_toggle.toggled.connect(self._fold_report)
        # While the report is folded this takes the dock's spare height, so the controls
        # keep their spacing.
        self._spare = QWidget()
        self._spare.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        self.native.layout().addWidget(self.report_toggle)
        self.native.layout().addWidget(scroll)
        self.native.layout().addWidget(self._spare)

        self.last_result: dict | None = None  # what the report shows, for scripts
        self._curve_source = None  # a sweep's rows, or an auto-K result
        # Output layer id -> (its run's codebook, class names): "apply the codebook of".
        self._layer_codebooks: dict[str, tuple] = {}
        self.sweep_rows: list[dict] = []
        self._last_q = None
        self._classes: _Classes | None = None
        self._filling = False  # the class table is being filled: edits are not renames
        self._run: _Run | None = None
        self._runs = 0
        self._closed = False
        self._grid_hidden: list[Layer] = []  # layers hidden while the sweep's grid is on
        self._grid_named: list[Layer] = []  # sweep layers whose names the grid shows
        # The runs' progress, delivered on the main thread: ``progressed(run, stage,
        # percent)`` and, for a lazy image, ``counted(run, stage, done, total)`` per dask
        # task; public so that others (a status bar, a test) may follow a run.
        self.relay = Relay()
        self.relay.progressed.connect(self._on_progress)
        self.relay.counted.connect(self._on_counted)
        self._close_watch = _CloseWatch(self._close)
        self.native.installEventFilter(self._close_watch)
        # A bound method, which PyQt holds weakly: a partial would keep the widget alive.
        self.native.destroyed.connect(self._on_destroyed)
        viewer.canvas.grid.events.enabled.connect(self._on_grid_toggled)
        self.run_button.changed.connect(lambda: self.run())
        self.sweep_button.changed.connect(lambda: self.run_sweep())
        self.cancel_button.changed.connect(self.cancel)
        self.apply_button.changed.connect(lambda: self.apply_codebook())
        self.image.changed.connect(self._on_image_changed)
        self.mask.changed.connect(self._on_mask_changed)
        self.auto_k.changed.connect(self._on_auto_changed)
        self._on_image_changed()
        self._on_mask_changed()
        self._on_auto_changed()

    def _make_curve_panel(self) -> QWidget:
        """The quality-against-K curve (hidden until a sweep or a K search)."""
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 4, 0, 0)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        self.curve_title = QLabel("Quality against K")
        self.curve_metric = QComboBox()
        self.curve_metric.addItems(list(CURVE_METRICS))
        self.curve_metric.setToolTip("What the curve shows against K.")
        self.curve_metric.currentTextChanged.connect(lambda _: self._draw_curve())
        row.addWidget(self.curve_title)
        row.addStretch(1)
        row.addWidget(self.curve_metric)
        self.curve = CurvePlot()
        self.curve.picked.connect(self.run_picked)
        layout.addLayout(row)
        layout.addWidget(self.curve)
        panel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        panel.setVisible(False)
        self._curve_panel = panel
        return panel

    def _make_class_panel(self) -> QWidget:
        """The class table (hidden until a run) with its Merge and Export buttons."""
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 4, 0, 0)
        self.class_title = QLabel("Classes")
        self.class_title.setWordWrap(True)
        self.class_view = view = QTableWidget(0, 0)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        view.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        view.verticalHeader().setVisible(False)
        view.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        view.setToolTip(
            "One row per class. Double-click a name to rename the class; select rows "
            "(Ctrl/Shift-click) to merge them."
        )
        view.itemChanged.connect(self._on_class_edited)
        view.itemSelectionChanged.connect(self._set_class_buttons)
        self.merge_button = QPushButton("Merge selected")
        self.merge_button.setToolTip(
            "Merge the selected classes into one: the lowest label, its colour the "
            "pixel-weighted mean of theirs."
        )
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Write the class table to a CSV file.")
        self.save_codebook_button = QPushButton("Save codebook…")
        self.save_codebook_button.setToolTip(
            "Save this result's codebook (its colours, colour space and the class names) "
            "to apply to other images with 'Apply codebook…'."
        )
        self.merge_button.clicked.connect(lambda: self.merge_classes())
        self.export_button.clicked.connect(lambda: self.export_classes())
        self.save_codebook_button.clicked.connect(lambda: self.save_codebook())
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.merge_button)
        row.addWidget(self.export_button)
        row.addWidget(self.save_codebook_button)
        layout.addWidget(self.class_title)
        layout.addWidget(view)
        layout.addLayout(row)
        panel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        panel.setVisible(False)
        self._class_panel = panel
        return panel

    # -- public actions ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from Run until the run ends (its files measured), or is cancelled."""
        return self._run is not None

    @property
    def worker(self):
        """The running worker, or None."""
        return self._run.worker if self._run is not None else None

    def run(self, layer: Layer | None = None, n_colors: int | None = None):
        """Quantize ``layer`` (default: the one chosen) at K colours (default: the field's).

        Returns the started worker, or None when the input was refused (the widget and a
        notification say why).
        """
        auto = n_colors == "auto" or (n_colors is None and self.auto_k.value)
        try:
            source, image, options = self._prepare(layer)
            if auto:
                k = "auto"
                options["target_psnr"] = float(self.target_psnr.value)
            else:
                k = check_k(self.n_colors.value if n_colors is None else n_colors)
        except InputError as err:
            return self._refuse(str(err))
        path = getattr(getattr(source, "source", None), "path", None)
        axis = options["channel_axis"]
        text = f"auto (PSNR {options['target_psnr']:g} dB)" if auto else str(k)
        return self._start(single_job, source, text, image, k, options, path, channel_axis=axis)

    def run_picked(self, k: int):
        """Run at K = ``k`` (a point clicked on the curve): the K field follows."""
        self.auto_k.value = False
        self.n_colors.value = int(k)
        return self.run(n_colors=int(k))

    def _ask_save_path(self, title: str, default: str, file_filter: str) -> str | None:
        """A path from napari's save dialog, or None when it is cancelled."""
        path, _ = QFileDialog.getSaveFileName(self.native, title, default, file_filter)
        return path or None

    def save_codebook(self, path=None):
        """Write the last result's codebook, with the class table's names, to ``path``
        (None: ask with a file dialog). Returns the path written, or None."""
        from ..io.codebook import save_codebook

        c = self._classes
        if c is None:
            return self._refuse("No codebook yet: press Run first.")
        if path is None:
            path = self._ask_save_path(
                "Save the codebook",
                f"{c.source.name} K{c.q.n_colors}.codebook.json",
                "Codebook files (*.json)",
            )
            if path is None:
                return None
        colors = [row["color"] for row in self.class_table.rows]
        try:
            written = save_codebook(
                c.q.codebook, path, names=self.class_names, colors=colors, overwrite=True
            )
        except (OSError, ValueError) as err:
            return self._refuse(f"Cannot save the codebook to {path}: {err}")
        self._set_status(f"Codebook (K = {c.q.n_colors}) saved to {written}.")
        return Path(written)

    def apply_codebook(self, codebook=None, layer: Layer | None = None):
        """Apply a codebook to ``layer`` (default: the one chosen) without refitting.

        ``codebook`` is a file path (None: ask with a file dialog), a fitted
        :class:`~napari_kmeans_vq.Codebook`, or an output layer of this panel (its run's
        codebook). The run goes as Run's does (mask and min region apply), with the class
        names that came with the file. Returns the started worker, or None.
        """
        names = None
        if codebook is None:
            codebook, _ = QFileDialog.getOpenFileName(
                self.native, "Apply a codebook", "", "Codebook files (*.json);;All files (*)"
            )
            if not codebook:
                return None
        if isinstance(codebook, Layer):
            found = self._layer_codebooks.get(str(codebook.unique_id))
            if found is None:
                return self._refuse(
                    f"'{codebook.name}' is not a result of this panel: choose a "
                    "reconstruction or labels layer it made, or a codebook file."
                )
            codebook, names = found
        elif not isinstance(codebook, Codebook):
            from ..io import KVQError
            from ..io.codebook import read_codebook

            try:
                read = read_codebook(codebook)
            except (OSError, KVQError, ValueError) as err:
                return self._refuse(f"Cannot read the codebook {codebook}: {err}")
            codebook, names = read.codebook, list(read.names)
        if not codebook.is_fitted:
            return self._refuse("The codebook is not fitted: fit or load one first.")
        try:
            source, image, options = self._prepare(layer, codebook.color_space.lower())
        except InputError as err:
            return self._refuse(str(err))
        for fitted in ("random_state", "color_space", "n_init"):
            options.pop(fitted, None)
        options["codebook"] = codebook
        path = getattr(getattr(source, "source", None), "path", None)
        axis = options["channel_axis"]
        text = f"{codebook.n_colors_} (codebook)"
        worker = self._start(
            single_job, source, text, image, None, options, path, channel_axis=axis
        )
        if self._run is not None:
            self._run.names = list(names) if names is not None else None
        return worker

    def run_sweep(self, layer: Layer | None = None, ks: str | list[int] | None = None):
        """Quantize at every K of the sweep field (or ``ks``): one reconstruction per K."""
        try:
            source, image, options = self._prepare(layer)
            try:
                values = parse_k_list(self.sweep.value if ks is None else ks)
            except ValueError as err:
                raise InputError(f"{err}.") from None
        except InputError as err:
            return self._refuse(str(err))
        return self._start(sweep_job, source, ", ".join(map(str, values)), image, values, options)

    def cancel(self) -> None:
        """Stop the run in flight. Before its layers are in, nothing is added."""
        run = self._run
        if run is not None and run.layers_at is None:
            self._end(run, "Cancelled; nothing was added.")
        elif run is not None:
            self._end(run, "Cancelled measuring the files; the layers stay.")
            self._show_sizes({"skipped": "cancelled"})

    # -- the class table -----------------------------------------------------------------

    @property
    def class_table(self):
        """The last run's class table with the names given
        (:class:`~napari_kmeans_vq.core.classes.ClassTable`), or None before a run."""
        c = self._classes
        if c is None:
            return None
        return class_table_for(c.q, names=c.names, source_layer=c.snapshot)

    @property
    def class_names(self) -> list[str]:
        """The classes' names, in label order (``"class 3"`` for one not named)."""
        table = self.class_table
        return [] if table is None else table.column("name")

    def rename_class(self, label: int, name: str) -> None:
        """Name class ``label`` (1 .. K); an empty name gives back its default name.

        The name goes to the table, to the labels layer's ``features`` (``name``) and to
        ``names`` and ``classes`` in both output layers' metadata.
        """
        c = self._classes
        if c is None:
            return self._refuse("No classes yet: press Run first.")
        if not 1 <= int(label) <= len(c.names):
            return self._refuse(f"There is no class {label}: classes are 1 to {len(c.names)}.")
        c.names[int(label) - 1] = str(name).strip() or None
        self._sync_class_layers()
        # Only the name's cell changes (the table is not refilled: an edit may be ending).
        item = self.class_view.item(int(label) - 1, 1)
        if item is not None:
            self._filling = True
            try:
                item.setText(self.class_names[int(label) - 1])
                self.class_view.resizeColumnToContents(1)
                self.class_view.resizeRowToContents(int(label) - 1)
            finally:
                self._filling = False

    def merge_classes(self, labels=None):
        """Merge classes (default: the rows selected) into one; returns the new result.

        The merged class takes the lowest label (the labels above move down) and, as its
        colour, the pixel-weighted mean of the merged colours; the labels and the
        reconstruction layers are updated in place, and J, the bits and the table follow
        (see :func:`napari_kmeans_vq.napari.layers.merge_classes`). None when refused.
        """
        c = self._classes
        if self._run is not None:
            return self._refuse(
                "A run is still going (quantizing, or measuring its files): merge when it is "
                "done, or press Cancel."
            )
        if c is None:
            return self._refuse("No classes yet: press Run first.")
        if labels is None:
            rows = self.class_view.selectionModel().selectedRows()
            labels = sorted(index.row() + 1 for index in rows)
        if c.source not in self._viewer.layers:
            return self._refuse(f"'{c.source.name}' is no longer in the viewer: run again.")
        try:
            q = merge_classes(c.q, labels, c.source.data, channel_axis=c.channel_axis)
        except (ValueError, TypeError) as err:
            return self._refuse(f"Cannot merge: {err}")
        chosen = q.info["merges"][-1]
        c.q, c.names = q, merge_names(c.names, chosen)
        outputs = self._outputs(c.source)
        tuples = quantization_layer_data(
            q, source_layer=c.snapshot, channel_axis=c.channel_axis, names=c.names
        )
        for data, meta, kind in tuples:
            self._put(outputs.get(meta["metadata"][METADATA_KEY]["role"], []), data, meta, kind)
        self._last_q = q
        seconds = None if self.last_result is None else self.last_result.get("seconds")
        sizes = {"skipped": "classes merged after the run"}
        self.last_result = {
            "report": q.report.to_dict(),
            "distortion": q.distortion,
            "psnr": q.psnr,
            "n_colors": q.n_colors,
            "seconds": seconds,
            "storage": sizes,
        }
        self.report.value = _html_table(None, report_rows(q, seconds, sizes))
        self._fill_class_table()
        merged = ", ".join(map(str, chosen))
        self._set_status(f"Merged classes {merged} into class {chosen[0]}: K = {q.n_colors}.")
        return q

    def export_classes(self, path=None):
        """Write the class table as CSV to ``path`` (None: ask with a file dialog).

        Returns the path written, or None (no table yet, the dialog cancelled, or the
        file could not be written: the status line says why).
        """
        table = self.class_table
        if table is None:
            return self._refuse("No class table yet: press Run first.")
        if path is None:
            path = self._ask_save_path(
                "Export the class table",
                f"{self._classes.source.name} classes.csv",
                "CSV files (*.csv)",
            )
            if path is None:
                return None
        try:
            table.to_csv(path)
        except OSError as err:
            return self._refuse(f"Cannot write the class table to {path}: {err}")
        self._set_status(f"Class table written to {path}.")
        return Path(path)

    # -- a run ---------------------------------------------------------------------------

    def _prepare(self, layer, color_space: str | None = None):
        if self._run is not None and self._run.layers_at is None:
            raise InputError("A quantization is running; wait for it or press Cancel.")
        if layer is None:
            layer = self.image.value or self._viewer.layers.selection.active
        data, channel_axis = check_source(layer, color_space or self.color_space.value)
        options = {
            "random_state": int(self.seed.value),
            "color_space": self.color_space.value,
            "n_init": "auto" if self.n_init.value == 0 else int(self.n_init.value),
            "channel_axis": channel_axis,
        }
        options.update(self._mask_options(layer, data, channel_axis))
        if isinstance(data, list):
            level = int(self.fit_level.value) if layer is self.image.value else 0
            options["fit_level"] = min(level, len(data) - 1)
        return layer, data, options

    def _mask_options(self, layer, data, channel_axis) -> dict:
        """``mask``, ``tissue_threshold`` and ``min_region`` for the run, or an InputError."""
        choice, options = self.mask.value, {}
        shape = spatial_shape(data, channel_axis)
        if choice == "auto":
            if channel_axis is None:
                raise InputError(
                    f"The automatic tissue mask needs an RGB image; '{layer.name}' has one "
                    "channel. Choose mask 'none', or a labels or shapes layer."
                )
            options["tissue_threshold"] = float(self.tissue_threshold.value)
        elif isinstance(choice, Layer):
            if choice not in self._viewer.layers:
                raise InputError(f"The mask layer '{choice.name}' is no longer in the viewer.")
            options["mask"] = mask_from_layer(choice, layer, shape)
        if self.min_region.value > 0:
            options["min_region"] = int(self.min_region.value)
        lazy = isinstance(data, list) or is_lazy_input(data)
        if options and lazy and (isinstance(data, list) or np.prod(shape) > IN_MEMORY_PIXELS):
            what = "a multiscale image" if isinstance(data, list) else "larger than 2^25 pixels"
            raise InputError(
                f"A mask and a min region need the image in memory, and '{layer.name}' is "
                f"{what}. Choose mask 'none' and min region 0 for it, or quantize a crop."
            )
        return options

    def _start(self, job, source, k_text, *args, channel_axis=-1):
        """Run ``job(*args, snapshot, reporter)`` in a worker thread for ``source``."""
        if self._run is not None:  # only its file sizes are pending: this run replaces them
            self._end(self._run, "")
            self._show_sizes({"skipped": "a new run started"})
        self._runs += 1
        reporter = Reporter(self._runs, threading.Event(), self.relay)
        run = _Run(self._runs, source, f"'{source.name}' at K = {k_text}", reporter)
        # The worker reads a plain copy of the source layer, never the live one.
        run.snapshot, run.channel_axis = layer_snapshot(source), channel_axis
        self._run = run
        self._set_status(f"Quantizing {run.title}…")
        self._set_buttons(quantizing=True)
        run.worker = job(*args, run.snapshot, reporter)
        run.worker.yielded.connect(partial(self._on_yielded, run))
        run.worker.returned.connect(partial(self._on_returned, run))
        run.worker.errored.connect(partial(self._on_errored, run))
        run.worker.finished.connect(partial(self._on_finished, run))
        run.worker.warned.connect(partial(self._on_warned, run))
        # napari's progress bar; making it processes events, so a cancel may come first.
        run.progress = _RunProgress(
            total=100, desc=f"K-means {run.title}", cancel_callback=partial(self._cancel, run)
        )
        if self._run is run:
            run.worker.start()
        else:
            run.progress.close()
        return run.worker

    def _cancel(self, run: _Run) -> None:
        if run is self._run:
            self.cancel()

    def _end(self, run: _Run, message: str, *, error: bool = False) -> None:
        """Finish ``run``: stop its worker, close its progress bar, make the widget idle."""
        if run is not self._run:
            return
        self._run = None
        run.stop.set()  # the engine raises at its next progress report
        run.worker.quit()  # the worker stops at its next yield
        if run.progress is not None:
            run.progress.close()
        if not self._closed:
            if message:
                self._set_status(message, error=error)
            self._set_buttons(quantizing=False)

    def _on_destroyed(self, *_) -> None:
        self._close(deleted=True)

    def _close(self, *, deleted: bool = False) -> None:
        """The dock was closed, or the widget deleted with its viewer: stop the run.

        A deleted widget touches no Qt object; napari closes its progress bars itself.
        """
        if self._closed:
            return
        if self._run is not None and not deleted:
            self._end(self._run, "")
        elif self._run is not None:
            self._run.stop.set()
            self._run.worker.quit()
            self._run = None
        self._closed = True
        self._viewer.canvas.grid.events.enabled.disconnect(self._on_grid_toggled)

    # -- the worker's signals, delivered on the main thread ------------------------------

    def _current(self, run: _Run) -> bool:
        """Whether ``run`` may still change the viewer (not cancelled, closed or orphaned)."""
        if self._closed or run is not self._run:
            return False
        if run.source not in self._viewer.layers:  # closing a viewer removes every layer
            self._end(run, f"'{run.source.name}' is no longer in the viewer; nothing added.")
            return False
        return True

    def _on_progress(self, run_id: int, stage: str, percent: int) -> None:
        run = self._run
        if self._closed or run is None or run.id != run_id:
            return
        if run.layers_at is not None and stage != "sizes":
            return  # measuring the files encodes blocks too: the status stays on measuring
        run.stage, run.percent = stage, percent
        # napari's bar processes pending events when its value or text changes, so that
        # comes last: a nested event may end the run.
        if stage == "sizes":
            self._set_status(f"Layers added: {run.title}. Measuring the files…")
            run.progress.total = 0  # an indeterminate bar
            run.progress.set_description(f"{run.title}: measuring the files")
        else:
            self._set_status(f"Quantizing {run.title}: {stage} {percent}%")
            if percent > run.progress.n:
                run.progress.update(percent - run.progress.n)

    def _on_counted(self, run_id: int, stage: str, done: int, total: int) -> None:
        """A lazy image's run, task by task: the status line says how far the stage got."""
        run = self._run
        if self._closed or run is None or run.id != run_id or run.layers_at is not None:
            return
        what = {"histogram": "counting colours", "encode": "encoding"}.get(stage, stage)
        self._set_status(f"Quantizing {run.title}: {what}, {done:,} of {total:,} blocks' tasks")

    def _on_yielded(self, run: _Run, item) -> None:
        if not isinstance(item, Layers) or not self._current(run):
            return
        self._leave_grid()
        outputs = self._outputs(run.source)
        q = item.quantization
        names = run.names if run.names is not None and len(run.names) == q.n_colors else None
        for data, meta, kind in item.tuples:
            role = meta["metadata"][METADATA_KEY]["role"]
            layer = self._put(outputs.get(role, []), data, meta, kind)
            self._layer_codebooks[str(layer.unique_id)] = (q.codebook, names)
        run.layers_at = time.perf_counter()
        seconds = run.layers_at - run.started
        self._last_q = q
        self.last_result = {
            "report": q.report.to_dict(),
            "distortion": q.distortion,
            "psnr": q.psnr,
            "n_colors": q.n_colors,
            "seconds": seconds,
            "storage": None,
        }
        self.report.value = _html_table(None, [*report_rows(q, seconds), ("files", "measuring…")])
        self._classes = _Classes(
            q, run.source, run.snapshot, run.channel_axis, list(names or [None] * q.n_colors)
        )
        self._fill_class_table()
        if names is not None:
            self._sync_class_layers()
        if curve_points(q):
            self.show_curve(q)
        elif self._curve_source is not None:
            self._draw_curve(current=q.n_colors)
        self._keep_source_chosen(run.source)
        self._set_buttons(quantizing=False, measuring=True)

    def _on_returned(self, run: _Run, result: Result | None) -> None:
        if not self._current(run):
            return
        if result is None:  # the job saw the cancel first (the activity dock's button)
            self._end(run, "Cancelled; nothing was added.")
        elif result.refused is not None:
            self._end(run, f"Cannot quantize: {result.refused}", error=True)
            show_error(f"Cannot quantize: {result.refused}")
        elif result.failed is not None:
            self._on_errored(run, result.failed)
        elif result.sizes is not None:
            outputs = self._outputs(run.source)
            for layer in [*outputs.get("reconstruction", []), *outputs.get("labels", [])]:
                tag = {**layer.metadata[METADATA_KEY], "storage": result.sizes}
                layer.metadata = {**layer.metadata, METADATA_KEY: tag}
            self._show_sizes(result.sizes)
            q = self._last_q
            inside = getattr(q, "mask", None)
            where = "" if inside is None else f", inside the mask ({100 * inside.mean():.1f}%)"
            self._end(run, f"Done: '{run.source.name}' at K = {q.n_colors}{where}.")
        else:
            self._show_sweep(run.source, result.tuples, result.rows)
            n = len(result.rows)
            self._end(run, f"Sweep done: {n} reconstructions of '{run.source.name}'.")

    def _on_errored(self, run: _Run, err: Exception) -> None:
        # A bug or an environment problem, not the input: the notification carries the
        # traceback, the widget says what stopped.
        if run is self._run and not self._closed:
            what = "Quantization" if run.layers_at is None else "Measuring the files"
            self._end(run, f"{what} failed ({type(err).__name__}): {err}", error=True)
            notification_manager.receive_error(type(err), err, err.__traceback__)

    def _on_warned(self, run: _Run, args: tuple) -> None:
        # The engine's warnings (such as fewer distinct colours than K), caught by the worker.
        if run is self._run and not self._closed:
            show_warning(str(args[0]))

    def _on_finished(self, run: _Run) -> None:
        # Ended without a result: napari asked the worker to quit (its viewer closing).
        if run is self._run and not self._closed:
            self._end(run, "Stopped." if run.layers_at is None else "Stopped measuring the files.")

    # -- layers --------------------------------------------------------------------------

    def _outputs(self, source) -> dict[str, list[Layer]]:
        """This widget's output layers for ``source``, by role."""
        found: dict[str, list[Layer]] = {}
        for layer in self._viewer.layers:
            tag = layer.metadata.get(METADATA_KEY) if isinstance(layer.metadata, dict) else None
            if isinstance(tag, dict) and tag.get("source_id") == str(source.unique_id):
                found.setdefault(tag.get("role"), []).append(layer)
        return found

    def _put(self, old: list[Layer], data, meta: dict, kind: str) -> Layer:
        """Update the first of ``old`` in place, or replace them all with a new layer."""
        if old and _update_in_place(old[0], data, meta, kind):
            return old[0]
        for layer in old:
            self._viewer.layers.remove(layer)
        return self._viewer.add_layer(Layer.create(data, meta, kind))

    def _show_sizes(self, sizes: dict) -> None:
        if self.last_result is not None and not self._closed:
            self.last_result["storage"] = sizes
            rows = report_rows(self._last_q, self.last_result["seconds"], sizes)
            self.report.value = _html_table(None, rows)

    def _show_sweep(self, source, tuples, rows) -> None:
        """Add or update one layer per K, drop the last sweep's others, show them in a grid."""
        old = {
            layer.metadata[METADATA_KEY].get("n_colors_requested"): layer
            for layer in self._outputs(source).get("sweep", [])
        }
        new_ks = [m["metadata"][METADATA_KEY].get("n_colors_requested") for _, m, _ in tuples]
        for k in set(old) - set(new_ks):
            self._viewer.layers.remove(old[k])
        layers = [
            self._put([old[k]] if k in old else [], data, meta, kind)
            for k, (data, meta, kind) in zip(new_ks, tuples, strict=True)
        ]
        self.sweep_rows = rows
        self.show_curve(rows)
        self.report.value = _html_table(*sweep_table(rows))
        self.report_toggle.setChecked(True)  # the table is the sweep's result
        self._keep_source_chosen(source)
        # The grid shows every visible layer: only the sweep's, each tile named with its K,
        # the camera reset so each tile shows its whole image.
        for layer in self._viewer.layers:
            if layer in layers:
                layer.visible = layer.name_overlay.visible = True
                self._grid_named.append(layer)
            elif layer.visible:
                layer.visible = False
                self._grid_hidden.append(layer)
        self._viewer.canvas.grid.enabled = True
        self._viewer.reset_view(layers=layers)

    def _leave_grid(self) -> None:
        """A single run's layers overlay their source: leave the sweep's grid view."""
        if self._grid_hidden or self._grid_named:
            self._viewer.canvas.grid.enabled = False  # _on_grid_toggled restores

    def _on_grid_toggled(self, event) -> None:
        """Grid view turned off (by the user or a run): show what the sweep hid."""
        if event.value:
            return
        for layer in self._grid_hidden:
            if layer in self._viewer.layers:
                layer.visible = True
        for layer in self._grid_named:
            layer.name_overlay.visible = False
        self._grid_hidden, self._grid_named = [], []

    def _keep_source_chosen(self, source) -> None:
        # napari selects new layers; the next run should still quantize the source.
        if self.image.value is not source:
            self.reset_choices()
            if source in self.image.choices:
                self.image.value = source

    # -- widget state --------------------------------------------------------------------

    def _refuse(self, message: str) -> None:
        self._set_status(message, error=True)
        show_error(message)

    def _set_status(self, message: str, *, error: bool = False) -> None:
        self.status.value = message
        self.status.native.setStyleSheet("color: #e5534b;" if error else "")

    def _set_buttons(self, *, quantizing: bool, measuring: bool = False) -> None:
        # While only the files are measured, Run is on: a new run drops that measurement.
        self.run_button.enabled = self.sweep_button.enabled = not quantizing
        self.apply_button.enabled = not quantizing
        self.cancel_button.enabled = quantizing or measuring
        self._set_class_buttons()

    def _set_class_buttons(self) -> None:
        c = self._classes
        selected = len(self.class_view.selectionModel().selectedRows())
        in_memory = c is not None and not is_lazy_quantization(c.q)
        self.merge_button.setEnabled(in_memory and self._run is None and selected >= 2)
        self.export_button.setEnabled(c is not None)
        self.save_codebook_button.setEnabled(c is not None)

    def _fold_report(self, shown: bool) -> None:
        arrow = Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        self.report_toggle.setArrowType(arrow)
        self._report_scroll.setVisible(shown)
        self._spare.setVisible(not shown)

    def _mask_choices(self, _widget=None) -> list[tuple[str, object]]:
        """'none', 'automatic (tissue)', then the viewer's labels and shapes layers (not
        this widget's outputs)."""
        choices: list[tuple[str, object]] = [("none", "none"), ("automatic (tissue)", "auto")]
        for layer in self._viewer.layers:
            ours = isinstance(layer.metadata, dict) and METADATA_KEY in layer.metadata
            if isinstance(layer, Labels | Shapes) and not ours:
                choices.append((layer.name, layer))
        return choices

    def _on_mask_changed(self, *_) -> None:
        """The tissue threshold shows only for the automatic mask."""
        auto = self.mask.value == "auto"
        self.tissue_threshold.enabled = self.tissue_threshold.visible = auto

    def _fill_class_table(self) -> None:
        """Show the class table: swatch and label, name (editable), share, area, stains."""
        table, view = self.class_table, self.class_view
        header, cells = class_table_view(table)
        selectable = Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        self._filling = True
        try:
            view.clearContents()
            view.setColumnCount(len(header))
            view.setRowCount(len(cells))
            view.setHorizontalHeaderLabels(header)
            for r, (texts, row) in enumerate(zip(cells, table.rows, strict=True)):
                for col, text in enumerate(texts):
                    item = QTableWidgetItem(text)
                    item.setFlags(
                        selectable | Qt.ItemFlag.ItemIsEditable if col == 1 else selectable
                    )
                    if col == 0:
                        item.setIcon(_swatch(row["color"]))
                        item.setToolTip(f"label {row['label']}, colour {row['color']}")
                    elif col > 1:
                        item.setTextAlignment(right)
                    view.setItem(r, col, item)
            view.resizeColumnsToContents()
            view.resizeRowsToContents()
            self._fit_class_view()
        finally:
            self._filling = False
        c = self._classes
        inside = getattr(c.q, "mask", None)
        where = "" if inside is None else ", inside the mask"
        physical = any(h.startswith("area (") and "pixels" not in h for h in header)
        area = "" if physical else "; areas in pixels (the layer has no physical scale)"
        labels = self._outputs(c.source).get("labels")
        name = labels[0].name if labels else c.source.name
        self.class_title.setText(f"Classes of '{name}'{where}{area}")
        self._class_panel.setVisible(True)
        self._set_class_buttons()

    def _fit_class_view(self, most_rows: int = 12) -> None:
        """As tall as its rows (up to ``most_rows``, then it scrolls)."""
        view = self.class_view
        shown = min(view.rowCount(), most_rows)
        height = view.horizontalHeader().sizeHint().height() + 2 * view.frameWidth()
        height += sum(view.rowHeight(r) for r in range(shown))
        height += view.horizontalScrollBar().sizeHint().height()  # room for it, if needed
        view.setFixedHeight(height)

    def _on_class_edited(self, item: QTableWidgetItem) -> None:
        if not self._filling and item.column() == 1:
            self.rename_class(item.row() + 1, item.text())

    def _sync_class_layers(self) -> None:
        """The names to the labels layer's features and to both layers' metadata."""
        c = self._classes
        table = self.class_table
        names, rows = table.column("name"), [dict(row) for row in table.rows]
        outputs = self._outputs(c.source)
        for layer in outputs.get("labels", []):
            features = layer.features
            if len(features) == len(names):
                features = features.copy()
                features["name"] = names
                layer.features = features
        for layer in [*outputs.get("reconstruction", []), *outputs.get("labels", [])]:
            tag = {**layer.metadata[METADATA_KEY], "names": names, "classes": rows}
            layer.metadata = {**layer.metadata, METADATA_KEY: tag}

    def show_curve(self, source) -> None:
        """Show the quality-against-K curve of a sweep's rows or of an auto-K result."""
        self._curve_source = source
        current = None if isinstance(source, list | tuple) else source.n_colors
        self._draw_curve(current=current)

    @property
    def curve_metric_name(self) -> str:
        return self.curve_metric.currentText()

    def _draw_curve(self, current=None) -> None:
        source = self._curve_source
        points = curve_points(source) if source is not None else []
        if not points:
            self._curve_panel.setVisible(False)
            return
        metric = self.curve_metric.currentText()
        key = CURVE_METRICS[metric]
        if current is None:
            current = self.curve.current
        self.curve.set_curve(
            [(p["K"], p[key]) for p in points],
            metric,
            target=curve_target(source, key),
            current=current,
        )
        what = "the sweep" if isinstance(source, list | tuple) else "the K search"
        self.curve_title.setText(f"Quality against K ({what}); click a point to run it")
        self._curve_panel.setVisible(True)

    def _on_auto_changed(self, *_) -> None:
        """The target shows, and K is greyed, while K is chosen for a target."""
        auto = bool(self.auto_k.value)
        self.target_psnr.enabled = self.target_psnr.visible = auto
        self.n_colors.enabled = not auto

    def _on_image_changed(self, *_) -> None:
        """Offer the fit level only for multiscale sources, bounded by their levels."""
        layer = self.image.value
        n_levels = len(layer.data) if isinstance(layer, Image) and layer.multiscale else 1
        self.fit_level.max = max(n_levels - 1, 0)
        self.fit_level.enabled = self.fit_level.visible = n_levels > 1


def _update_in_place(layer: Layer, data, meta: dict, kind: str) -> bool:
    """Give an existing output layer new data and attributes; False when it cannot be."""
    expected = {"image": Image, "labels": Labels}[kind]
    multiscale = bool(meta.get("multiscale"))
    if not isinstance(layer, expected) or bool(layer.multiscale) != multiscale:
        return False
    old_ndim = layer.data[0].ndim if layer.multiscale else np.ndim(layer.data)
    if old_ndim != (data[0].ndim if multiscale else np.ndim(data)):
        return False
    if kind == "image" and layer.rgb != meta.get("rgb", False):
        return False
    if kind == "labels":
        layer.colormap = meta["colormap"]  # colours first, so new labels never show old ones
    layer.data = data
    for attr in ("features", "metadata", "name"):
        if attr in meta:
            setattr(layer, attr, meta[attr])
    # Each spatial or display change re-slices the layer: set only what really changed.
    display = ("contrast_limits", "colormap") if kind == "image" else ()
    for attr in (a for a in (*display, *_SPATIAL) if a in meta):
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
    if isinstance(new, str):  # a colormap against its name
        return getattr(current, "name", current) == new
    try:
        return bool(np.array_equal(np.asarray(current, float), np.asarray(new, float)))
    except (TypeError, ValueError):
        return tuple(map(str, current)) == tuple(map(str, new))
