"""Make the documentation's screenshots of the widget in a real napari window.

Run under a display; a virtual one is fine::

    xvfb-run -a python docs/scripts/make_screenshots.py

Writes into ``docs/images/``:

- ``widget.png``: the whole napari window, the widget docked, after a run at K = 8 on the
  immunohistochemistry sample, with the class table and the report (opened) filled in;
- ``sweep_grid.png``: the whole window after a sweep over K = 2, 3, 6, 16 in grid view, with
  the sweep table in the widget;
- ``he_window.png`` and ``he_classes.png``: the H&E walkthrough (docs/he-walkthrough.md) on
  the generated H&E-like sample at 0.5 µm per pixel: automatic tissue mask, K = 4 in the
  ``hed`` space, the two pale-stroma classes merged, the classes named; the whole window,
  and the dock alone with its class table.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "images"


def _wait(app, widget, timeout=120.0):
    start = time.perf_counter()
    while widget.running and time.perf_counter() - start < timeout:
        app.processEvents()
        time.sleep(0.01)
    if widget.running:
        raise RuntimeError("the quantization did not finish in time")
    _settle(app)


def _settle(app, seconds=0.5):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def _widen(viewer, dock, app, width=560):
    """Give the dock room for the class table's columns (a user drags its edge)."""
    from qtpy.QtCore import Qt

    viewer.window._qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
    _settle(app, 0.3)


def _point_at(viewer, layer, pixel, app):
    """Put the cursor over ``pixel`` of ``layer``: napari's status bar shows its class."""
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(layer.data_to_world(pixel))
    _settle(app, 0.3)


def _close_toasts(viewer, app):
    """Close notification pop-ups (napari's Qt-binding notice) so they stay out of shots."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    _settle(app, 0.6)


def main() -> None:
    warnings.filterwarnings("ignore", message=".*System theme detection.*")
    import napari
    from qtpy.QtWidgets import QApplication

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-kmeans-vq")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    (source,) = viewer.open_sample("napari-kmeans-vq", "ihc")
    dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-kmeans-vq", "K-Means colour quantization"
    )
    _widen(viewer, dock, app)

    widget.n_colors.value = 8
    widget.run()
    _wait(app, widget)
    widget.report_toggle.setChecked(True)  # the bits, folded under the class table
    labels = next(layer for layer in viewer.layers if layer.name.endswith("labels"))
    # Point at a pixel so the status bar shows the cluster's features as a user would see.
    viewer.layers.selection.active = labels
    viewer.reset_view()
    _close_toasts(viewer, app)
    viewer.screenshot(str(OUT / "widget.png"), canvas_only=False, flash=False)

    for layer in viewer.layers:
        layer.visible = layer is source
    widget.sweep.value = "2, 3, 6, 16"
    widget.run_sweep(layer=source)
    _wait(app, widget)
    # The grid shows every visible layer: keep the source and the sweep only.
    for layer in viewer.layers:
        role = layer.metadata.get("napari_kmeans_vq", {}).get("role")
        layer.visible = layer is source or role == "sweep"
    viewer.reset_view()
    _close_toasts(viewer, app)
    viewer.screenshot(str(OUT / "sweep_grid.png"), canvas_only=False, flash=False)
    viewer.close()

    he_walkthrough(napari, app)
    for name in NAMES:
        print(OUT / name)


NAMES = ("widget.png", "sweep_grid.png", "he_window.png", "he_classes.png")


def he_walkthrough(napari, app) -> None:
    """The steps of docs/he-walkthrough.md, in the GUI's own widgets."""
    import numpy as np

    viewer = napari.Viewer(show=True, title="napari-kmeans-vq")
    viewer.window._qt_window.resize(1500, 950)
    (source,) = viewer.open_sample("napari-kmeans-vq", "stain_patches")
    source.scale, source.units = (0.5, 0.5), "um"
    dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-kmeans-vq", "K-Means colour quantization"
    )
    _widen(viewer, dock, app)
    widget.mask.value = "auto"
    widget.color_space.value = "hed"
    widget.n_colors.value = 4
    widget.run()
    _wait(app, widget)
    widget.merge_classes([3, 4])
    for label, name in enumerate(["nuclei", "dense stroma", "loose stroma"], start=1):
        widget.rename_class(label, name)
    labels = next(layer for layer in viewer.layers if layer.name.endswith("labels"))
    viewer.layers.selection.active = labels
    labels.opacity = 0.8
    viewer.reset_view()
    # The status bar names the class under the pointer: the middle of a nucleus.
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(labels.data == 1)
    _point_at(viewer, labels, np.unravel_index(np.argmax(depth), depth.shape), app)
    _close_toasts(viewer, app)
    viewer.screenshot(str(OUT / "he_window.png"), canvas_only=False, flash=False)
    # The dock alone, down to the folded report's button.
    from qtpy.QtCore import QPoint, QRect

    toggle = widget.report_toggle
    bottom = toggle.mapTo(dock, QPoint(0, toggle.height())).y() + 10
    dock.grab(QRect(0, 0, dock.width(), bottom)).save(str(OUT / "he_classes.png"))
    viewer.close()


if __name__ == "__main__":
    main()
