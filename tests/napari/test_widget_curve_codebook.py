"""The widget's quality-against-K curve, K chosen for a PSNR target, and codebook files."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt

from napari_kmeans_vq import Codebook, quantize
from napari_kmeans_vq.napari.layers import CURVE_METRICS, METADATA_KEY, curve_points, sweep_row
from napari_kmeans_vq.napari.plot import CurvePlot

pytestmark = pytest.mark.napari

PLUGIN = "napari-kmeans-vq"


@pytest.fixture
def patches(viewer):
    (source,) = viewer.open_sample(PLUGIN, "stain_patches")
    return source


def wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)


def outputs(viewer, role):
    return [
        layer
        for layer in viewer.layers
        if layer.metadata.get(METADATA_KEY, {}).get("role") == role
    ]


def test_curve_points_from_a_sweep_and_from_a_k_search(ihc_crop):
    rows = [sweep_row(quantize(ihc_crop, k)) for k in (6, 2, 3)]
    points = curve_points(rows)
    assert [p["K"] for p in points] == [2, 3, 6]
    assert [p["psnr"] for p in points] == sorted(p["psnr"] for p in points)
    q = quantize(ihc_crop, "auto", target_psnr=28)
    auto = curve_points(q)
    assert [p["K"] for p in auto] == sorted(q.info["auto"]["tried"])
    assert {"J", "psnr", "bits_per_pixel"} <= set(auto[0])
    assert curve_points(quantize(ihc_crop, 4)) == []


def test_plot_click_picks_the_nearest_point(qtbot):
    plot = CurvePlot()
    qtbot.addWidget(plot)
    plot.resize(300, 170)
    plot.show()
    picked = []
    plot.picked.connect(picked.append)
    plot.set_curve([(2, 20.0), (4, 25.0), (8, 29.0), (16, float("inf"))], "PSNR (dB)", target=27)
    assert [k for k, _ in plot.points] == [2, 4, 8]  # inf left out
    p = plot.point_position(4).toPoint()
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=p)
    assert picked == [4]
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=p + type(p)(0, 60))
    assert picked == [4]  # nowhere near a point
    plot.grab()  # paints without error


def test_sweep_shows_the_curve_and_a_click_runs_that_k(viewer, widget, qtbot, patches):
    assert widget._curve_panel.isHidden()
    widget.run_sweep(ks="2, 4, 8")
    wait(qtbot, widget)
    assert not widget._curve_panel.isHidden()
    assert [k for k, _ in widget.curve.points] == [2, 4, 8]
    for metric, key in CURVE_METRICS.items():
        widget.curve_metric.setCurrentText(metric)
        assert [v for _, v in widget.curve.points] == [r[key] for r in widget.sweep_rows]
    widget.curve.resize(300, 170)
    pos = widget.curve.point_position(4).toPoint()
    qtbot.mouseClick(widget.curve, Qt.MouseButton.LeftButton, pos=pos)
    wait(qtbot, widget)
    assert widget.n_colors.value == 4
    (labels,) = outputs(viewer, "labels")
    assert labels.metadata[METADATA_KEY]["n_colors"] == 4
    assert widget.curve.current == 4


def test_auto_k_for_a_psnr_target(viewer, widget, qtbot, patches):
    widget.auto_k.value = True
    assert not widget.target_psnr.native.isHidden() and not widget.n_colors.enabled
    widget.target_psnr.value = 30.0
    assert widget.run() is not None
    wait(qtbot, widget)
    (labels,) = outputs(viewer, "labels")
    tag = labels.metadata[METADATA_KEY]
    k = tag["n_colors"]
    assert tag["psnr"] >= 30
    assert quantize(patches.data, k - 1).psnr < 30
    assert tag["info"]["auto"]["target"] == {"psnr": 30.0}
    # The search's curve, with its target and the chosen K.
    widget.curve_metric.setCurrentText("PSNR (dB)")
    assert not widget._curve_panel.isHidden() and widget.curve.current == k
    assert k in [kk for kk, _ in widget.curve.points]


def test_save_and_apply_a_codebook(viewer, widget, qtbot, patches, tmp_path):
    widget.run(n_colors=5)
    wait(qtbot, widget)
    widget.rename_class(1, "nuclei")
    path = widget.save_codebook(tmp_path / "cohort.codebook.json")
    data = json.loads(path.read_text())
    assert data["classes"][0]["name"] == "nuclei" and len(data["classes"]) == 5
    fitted = widget._classes.q

    # Another image: the saved codebook applied without refitting, names carried over.
    other = viewer.add_image(np.ascontiguousarray(patches.data[::-1]), rgb=True, name="other")
    assert widget.apply_codebook(path, layer=other) is not None
    wait(qtbot, widget)
    q = widget._classes.q
    assert q.info["codebook"] == "applied"
    np.testing.assert_array_equal(q.palette, fitted.palette)
    np.testing.assert_array_equal(q.labels, fitted.codebook.encode(other.data))
    assert widget.class_names[0] == "nuclei"
    labels = [
        layer
        for layer in outputs(viewer, "labels")
        if layer.metadata[METADATA_KEY].get("source_id") == str(other.unique_id)
    ]
    assert labels and labels[0].features["name"].iloc[0] == "nuclei"

    # The codebook of a result layer, and a Codebook object, apply the same way.
    assert widget.apply_codebook(labels[0], layer=patches) is not None
    wait(qtbot, widget)
    np.testing.assert_array_equal(widget._classes.q.labels, fitted.labels)
    assert widget.apply_codebook(Codebook(3).fit(patches.data), layer=other) is not None
    wait(qtbot, widget)
    assert widget._classes.q.n_colors == 3


def test_codebook_mistakes_are_refused(viewer, widget, qtbot, patches, tmp_path):
    assert widget.save_codebook(tmp_path / "x.json") is None
    assert "Run first" in widget.status.value
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert widget.apply_codebook(bad) is None
    assert "Cannot read the codebook" in widget.status.value
    grey = Codebook(2, channel_axis=None).fit(patches.data[..., 0])
    assert widget.apply_codebook(grey, layer=patches) is not None
    wait(qtbot, widget)
    assert "Cannot quantize" in widget.status.value
    assert widget.apply_codebook(patches) is None  # not a result layer
    assert not outputs(viewer, "labels")
