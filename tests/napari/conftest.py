"""The napari tests' viewer and docked widget (napari's ``make_napari_viewer`` fixture)."""

from __future__ import annotations

import pytest

PLUGIN = "napari-kmeans-vq"
WIDGET = "K-Means colour quantization"


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def docked(viewer):
    """The plugin's widget docked in the viewer: (dock widget, QuantizeWidget)."""
    return viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)


@pytest.fixture
def widget(docked):
    return docked[1]
