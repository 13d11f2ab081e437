"""Make the documentation's screenshots of the widget in a real napari window.

Run under a display; a virtual one is fine::

    xvfb-run -a python docs/scripts/make_screenshots.py

Writes into ``docs/images/``:

- ``widget.png``: the whole napari window, the widget docked, after a run at K = 8 on the
  immunohistochemistry sample, with the report panel filled in;
- ``canvas_labels.png``: the canvas alone, showing the cluster-labels layer (the palette
  colours) over the source;
- ``sweep_grid.png``: the whole window after a sweep over K = 2, 3, 6, 16 in grid view, with
  the sweep table in the widget.
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
    _, widget = viewer.window.add_plugin_dock_widget(
        "napari-kmeans-vq", "K-Means colour quantization"
    )
    _settle(app)

    widget.n_colors.value = 8
    widget.run()
    _wait(app, widget)
    labels = next(layer for layer in viewer.layers if layer.name.endswith("labels"))
    # Point at a pixel so the status bar shows the cluster's features as a user would see.
    viewer.layers.selection.active = labels
    viewer.reset_view()
    _close_toasts(viewer, app)
    viewer.screenshot(str(OUT / "widget.png"), canvas_only=False, flash=False)

    for layer in viewer.layers:
        layer.visible = layer is labels or layer is source
    labels.opacity = 1.0
    _settle(app)
    viewer.screenshot(str(OUT / "canvas_labels.png"), canvas_only=True, flash=False)

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
    for name in ("widget.png", "canvas_labels.png", "sweep_grid.png"):
        print(OUT / name)


if __name__ == "__main__":
    main()
