"""The napari widget, through the plugin manifest, in a real viewer (needs a display: xvfb).

Runs, sweeps, cancels and closes the dock or the viewer mid-run under the Qt binding the
venv has (PyQt6). Long runs are cancelled once the engine reports progress, never after a
fixed wait.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Image, Labels
from napari.utils.notifications import notification_manager

from napari_kmeans_vq import bit_report, quantize
from napari_kmeans_vq._limits import MAX_FIT_COLORS
from napari_kmeans_vq.io import save
from napari_kmeans_vq.napari import jobs as jobs_module
from napari_kmeans_vq.napari import widget as widget_module
from napari_kmeans_vq.napari.layers import METADATA_KEY

pytestmark = pytest.mark.napari

PLUGIN = "napari-kmeans-vq"
WIDGET = "K-Means colour quantization"


def run_and_wait(qtbot, widget, **kwargs):
    worker = widget.run(**kwargs)
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    return worker


def outputs(viewer, role):
    return [
        layer
        for layer in viewer.layers
        if layer.metadata.get(METADATA_KEY, {}).get("role") == role
    ]


@pytest.fixture
def errors():
    """Notifications of error or warning severity shown during the test."""
    start = len(notification_manager.records)

    def new():
        return [
            n
            for n in notification_manager.records[start:]
            if str(n.severity) in ("error", "warning")
        ]

    return new


@pytest.fixture
def noise(viewer):
    """2048 x 2048 random colours (about 4 million distinct): a fit that takes seconds."""
    rng = np.random.default_rng(0)
    return viewer.add_image(rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8), name="big")


@pytest.fixture
def held_sizes(monkeypatch):
    """Hold the file-size measurement until the test sets the returned event."""
    gate = threading.Event()
    measure = jobs_module.size_report

    def held(*args, **kwargs):
        gate.wait(30)
        return measure(*args, **kwargs)

    monkeypatch.setattr(jobs_module, "size_report", held)
    yield gate
    gate.set()


def wait_for_stage(qtbot, widget, stages, timeout=60_000):
    """Wait until the running engine reports one of ``stages`` (on the main thread)."""
    qtbot.waitUntil(
        lambda: widget._run is not None and widget._run.stage in stages, timeout=timeout
    )
    return widget._run


def test_manifest_run_makes_two_exact_layers(viewer, widget, qtbot):
    (source,) = viewer.open_sample(PLUGIN, "ihc")
    before = source.data.copy()
    assert widget.image.value is source
    assert widget.status.value == "Ready."
    widget.n_colors.value = 8
    run_and_wait(qtbot, widget)

    (recon,) = outputs(viewer, "reconstruction")
    (labels,) = outputs(viewer, "labels")
    assert isinstance(recon, Image) and recon.rgb and recon.data.dtype == np.uint8
    assert recon.visible and labels.visible
    assert isinstance(labels, Labels) and labels.data.dtype == np.uint8
    assert recon.data.shape == source.data.shape
    assert labels.data.shape == source.data.shape[:2]
    assert recon.name == "immunohistochemistry K=8 reconstruction"
    assert labels.name == "immunohistochemistry K=8 labels"
    assert widget.image.value is source  # the next run quantizes the source again

    summary = labels.metadata[METADATA_KEY]
    palette = np.array(summary["palette"], dtype=np.uint8)
    assert palette.shape == (8, 3)
    assert labels.data.min() == 1 and labels.data.max() == 8
    np.testing.assert_array_equal(recon.data, palette[labels.data - 1])

    # Colours in the labels layer are exactly the palette (as float32 in [0, 1]).
    colour_dict = labels.colormap.color_dict
    for i, colour in enumerate(palette):
        expected = np.append(colour / 255, 1.0).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(colour_dict[i + 1], np.float32), expected)
    rendered = labels.colormap.map(np.arange(1, 9, dtype=labels.data.dtype))
    np.testing.assert_allclose(rendered[:, :3], palette / 255, atol=1e-6)

    # Bits by the formulas: 24 N original, N ceil(log2 K) index, 24 K codebook.
    n = 512 * 512
    report = summary["report"]
    assert report["original_bits"] == 24 * n
    assert report["index_bits"] == n * 3
    assert report["codebook_bits"] == 24 * 8
    assert report["total_bits"] == n * 3 + 24 * 8
    expected = bit_report(n, 8).to_dict()
    assert {k: report[k] for k in expected if k != "entropy_bits"} == {
        k: v for k, v in expected.items() if k != "entropy_bits"
    }
    assert recon.metadata[METADATA_KEY]["report"] == report
    assert summary["seed"] == 0 and summary["color_space"] == "rgb"
    assert widget.last_result["report"]["total_bits"] == report["total_bits"]

    # The panel: classes, bits, compression ratio, J and PSNR.
    panel = widget.report.value
    assert "786,624 bits" in panel and "3/pixel" in panel
    assert "0.1250 (12.5% of original)" in panel
    assert f"{labels.metadata[METADATA_KEY]['distortion']:.3f}" in panel
    assert f"{summary['psnr']:.2f} dB" in panel
    assert ".kvq file" in panel
    assert widget.status.value.startswith("Done")

    # Hovering shows the cluster: features indexed by label value.
    features = labels.features
    assert list(features["index"]) == list(range(1, 9))
    assert features["pixels"].sum() == n
    np.testing.assert_array_equal(
        features["pixels"], np.bincount(labels.data.ravel(), minlength=9)[1:]
    )
    assert source.data.tobytes() == before.tobytes()


def test_second_run_updates_in_place(viewer, widget, qtbot):
    source = viewer.add_image(
        np.ascontiguousarray(viewer.open_sample(PLUGIN, "ihc")[0].data[:96, :128]),
        name="crop",
        scale=(0.5, 0.25),
        translate=(10, 20),
    )
    widget.image.value = source
    widget.n_colors.value = 4
    run_and_wait(qtbot, widget)
    n_layers = len(viewer.layers)
    (recon,), (labels,) = outputs(viewer, "reconstruction"), outputs(viewer, "labels")
    for layer in (recon, labels):
        np.testing.assert_array_equal(layer.scale, source.scale)
        np.testing.assert_array_equal(layer.translate, source.translate)

    widget.n_colors.value = 300  # past 255 clusters: uint16 labels
    widget.color_space.value = "lab"
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert outputs(viewer, "reconstruction") == [recon]
    assert outputs(viewer, "labels") == [labels]
    assert labels.name == "crop K=300 labels" and recon.name == "crop K=300 reconstruction"
    assert labels.data.dtype == np.uint16
    summary = labels.metadata[METADATA_KEY]
    assert summary["color_space"] == "lab" and summary["n_colors"] == 300
    palette = np.array(summary["palette"], dtype=np.uint8)
    np.testing.assert_array_equal(recon.data, palette[labels.data - 1])
    np.testing.assert_allclose(
        np.asarray(labels.colormap.color_dict[300])[:3], palette[299] / 255, atol=1e-7
    )
    assert len(labels.features) == 300


def cancel_mid_run(widget, qtbot, stages=("fit",)):
    """Start a long run, cancel it once the engine reports one of ``stages``, and wait
    until the worker is gone."""
    worker = widget.run(n_colors=64)
    run = wait_for_stage(qtbot, widget, stages)
    assert widget.cancel_button.enabled
    widget.cancel()
    assert not widget.running and widget.run_button.enabled and not widget.cancel_button.enabled
    assert "Cancelled" in widget.status.value
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(50)
    return run


def test_cancelled_run_adds_nothing(viewer, widget, qtbot, noise):
    widget.image.value = noise
    n_layers = len(viewer.layers)
    run = cancel_mid_run(widget, qtbot)
    assert len(viewer.layers) == n_layers
    # The engine itself stopped: its progress callback raised during the fit.
    assert run.reporter.stopped_in == "fit"
    assert run.progress.disable  # napari's progress bar is closed

    # napari is still usable: a next run on a small image works.
    small = viewer.add_image(np.ascontiguousarray(noise.data[:32, :32]), name="small")
    widget.image.value = small
    widget.n_colors.value = 3
    run_and_wait(qtbot, widget)
    assert [layer.name for layer in outputs(viewer, "labels")] == ["small K=3 labels"]


def test_activity_dock_cancel_button_cancels(viewer, widget, qtbot, noise):
    widget.image.value = noise
    n_layers = len(viewer.layers)
    worker = widget.run(n_colors=64)
    run = wait_for_stage(qtbot, widget, ("fit",))
    run.progress.cancel()  # what the Cancel button next to napari's progress bar does
    assert not widget.running and "Cancelled" in widget.status.value
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(50)
    assert len(viewer.layers) == n_layers


def test_progress_is_napari_progress(viewer, widget, qtbot, noise):
    from napari.utils import progress

    widget.image.value = noise
    worker = widget.run(n_colors=64)
    run = wait_for_stage(qtbot, widget, ("fit",))
    assert isinstance(run.progress, progress) and run.progress.n > 0
    assert "fit" in widget.status.value and "%" in widget.status.value
    widget.cancel()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)


def test_cancel_while_measuring_files_keeps_layers(viewer, widget, qtbot, held_sizes):
    viewer.open_sample(PLUGIN, "ihc")
    widget.n_colors.value = 8
    worker = widget.run()
    run = wait_for_stage(qtbot, widget, ("sizes",))
    # The layers are in, the report too; Cancel is still on while the files are measured.
    assert len(outputs(viewer, "labels")) == 1
    assert "measuring" in widget.report.value
    assert widget.cancel_button.enabled and widget.run_button.enabled
    widget.cancel()
    assert not widget.running and "the layers stay" in widget.status.value
    assert "not measured: cancelled" in widget.report.value
    held_sizes.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(50)
    (labels,) = outputs(viewer, "labels")
    assert "storage" not in labels.metadata[METADATA_KEY]
    assert run.progress.disable


def test_sweep_one_layer_per_k_in_grid(viewer, widget, qtbot):
    (source,) = viewer.open_sample(PLUGIN, "stain_patches")
    run_and_wait(qtbot, widget, n_colors=4)  # a single run's layers, hidden by the grid
    widget.sweep.value = "2, 3, 6, 16"
    assert widget.run_sweep() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    sweep = outputs(viewer, "sweep")
    assert [layer.name for layer in sweep] == [f"stain patches K={k} sweep" for k in (2, 3, 6, 16)]
    assert [row["K"] for row in widget.sweep_rows] == [2, 3, 6, 16]
    n = source.data.shape[0] * source.data.shape[1]
    for row, layer in zip(widget.sweep_rows, sweep, strict=True):
        assert row["total_bits"] == bit_report(n, row["K"]).total_bits
        assert layer.data.dtype == np.uint8 and layer.rgb
        assert len(np.unique(layer.data.reshape(-1, 3), axis=0)) == row["K"]
    # J falls as K grows.
    assert all(
        a["J"] > b["J"] for a, b in zip(widget.sweep_rows[:-1], widget.sweep_rows[1:], strict=True)
    )
    assert "<th" in widget.report.value and widget.status.value.startswith("Sweep done")

    # The grid (napari 0.9's viewer.canvas.grid) holds only the sweep, each tile named...
    grid = viewer.canvas.grid
    assert grid.enabled
    assert [layer for layer in viewer.layers if layer.visible] == sweep
    assert all(layer.name_overlay.visible for layer in sweep)
    rows, cols = grid.actual_shape(viewer.layers)
    assert rows * cols == 4
    # ... and the camera shows each tile's whole image.
    tile = np.asarray(viewer.canvas.viewbox_size(viewer.layers))
    extent = np.asarray(source.data.shape[:2])
    assert np.all(viewer.scene.camera.zoom * extent <= tile + 1e-6)
    assert np.max(viewer.scene.camera.zoom * extent / tile) > 0.9
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (extent - 1) / 2, atol=1)

    # A second sweep with other K updates the common ones and drops the rest.
    first = sweep[0]
    widget.run_sweep(ks="2, 4")
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    names = [layer.name for layer in outputs(viewer, "sweep")]
    assert names == ["stain patches K=2 sweep", "stain patches K=4 sweep"]
    assert outputs(viewer, "sweep")[0] is first

    # Leaving the grid shows again what it hid; a single run leaves it by itself.
    run_and_wait(qtbot, widget, n_colors=5)
    assert not grid.enabled
    assert source.visible and all(layer.visible for layer in outputs(viewer, "labels"))
    assert not any(layer.name_overlay.visible for layer in outputs(viewer, "sweep"))


def test_cancelled_sweep_adds_nothing(viewer, widget, qtbot, noise):
    widget.image.value = noise
    n_layers = len(viewer.layers)
    worker = widget.run_sweep(ks="2, 64")
    qtbot.waitUntil(lambda: widget._run is not None and widget._run.percent >= 50, timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(50)
    assert len(viewer.layers) == n_layers and not viewer.canvas.grid.enabled


def test_canvas_shows_palette_colours(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    # Four quadrants, each one colour plus a little noise: K = 4 finds one cluster each.
    rng = np.random.default_rng(3)
    means = np.array([[200, 40, 40], [40, 160, 60], [50, 60, 200], [230, 210, 90]])
    image = np.empty((64, 64, 3))
    halves = (slice(0, 32), slice(32, 64))
    for i, (ys, xs) in enumerate((ys, xs) for ys in halves for xs in halves):
        image[ys, xs] = means[i] + rng.normal(0, 6, size=(32, 32, 3))
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    source = viewer.add_image(image, name="quadrants")
    widget.n_colors.value = 4
    run_and_wait(qtbot, widget)
    (labels,) = outputs(viewer, "labels")
    palette = np.array(labels.metadata[METADATA_KEY]["palette"], dtype=np.uint8)
    for layer in viewer.layers:
        layer.visible = layer is labels
    labels.opacity = 1.0
    labels.blending = "opaque"
    viewer.reset_view()
    qtbot.wait(100)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    h, w = shot.shape[:2]
    zoom = viewer.scene.camera.zoom
    cy, cx = viewer.scene.camera.center[-2:]
    for y, x in [(16, 16), (16, 48), (48, 16), (48, 48)]:
        row = round(h / 2 + (y - cy) * zoom)
        col = round(w / 2 + (x - cx) * zoom)
        expected = palette[labels.data[y, x] - 1]
        np.testing.assert_allclose(shot[row, col, :3], expected, atol=2)
    assert source.visible is False  # we hid it ourselves; the widget never touches it


def test_single_channel_image(viewer, widget, qtbot):
    grey = np.ascontiguousarray(viewer.open_sample(PLUGIN, "ihc")[0].data[:64, :64, 0])
    source = viewer.add_image(grey, name="grey", colormap="magma")
    widget.image.value = source
    widget.n_colors.value = 5
    run_and_wait(qtbot, widget)
    (recon,), (labels,) = outputs(viewer, "reconstruction"), outputs(viewer, "labels")
    assert not recon.rgb and recon.data.shape == grey.shape and recon.data.dtype == np.uint8
    assert recon.colormap.name == "magma"
    palette = np.array(labels.metadata[METADATA_KEY]["palette"], dtype=np.uint8).reshape(-1)
    np.testing.assert_array_equal(recon.data, palette[labels.data - 1])


def test_bad_input_says_why_and_adds_nothing(viewer, widget, qtbot, errors):
    # No image at all, a labels layer active.
    viewer.add_labels(np.zeros((8, 8), dtype=np.uint8), name="seg")
    assert widget.run() is None
    assert "is a Labels layer" in errors()[-1].message
    assert "is a Labels layer" in widget.status.value
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # The status keeps the error: choosing another layer does not say "Ready." over it.
    grey = viewer.add_image(base[..., 0], name="grey")
    widget.image.value = grey
    assert "is a Labels layer" in widget.status.value
    # Lab needs a colour axis.
    widget.color_space.value = "lab"
    assert widget.run(layer=grey) is None
    assert "no colour axis" in errors()[-1].message
    widget.color_space.value = "rgb"
    # Two channels are refused, not clustered one value at a time.
    two = viewer.add_image(base[..., :2].copy(), name="two")
    assert widget.run(layer=two) is None
    assert "2 values per pixel" in widget.status.value
    # K out of range (the library's limit), and a bad sweep.
    rgb = viewer.add_image(base, name="rgb")
    before = rgb.data.copy()
    for k in (0, MAX_FIT_COLORS + 1):
        assert widget.run(layer=rgb, n_colors=k) is None
        assert "out of range" in errors()[-1].message
        assert f"1 to {MAX_FIT_COLORS}" in widget.status.value
    assert widget.run_sweep(layer=rgb, ks="2, three") is None
    assert "not a whole number" in errors()[-1].message
    assert widget.run_sweep(layer=rgb, ks=f"2, {MAX_FIT_COLORS + 1}") is None
    assert "out of range" in errors()[-1].message
    assert "Ready" not in widget.status.value
    # The engine's own refusal (NaN pixels), in the worker, is said the same way.
    nan = np.full((8, 8, 3), 0.5)
    nan[0, 0, 0] = np.nan
    bad = viewer.add_image(nan, rgb=True, name="nan")
    n_errors = len(errors())
    assert widget.run(layer=bad, n_colors=2) is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert len(errors()) == n_errors + 1
    assert "Cannot quantize" in errors()[-1].message
    assert "Cannot quantize" in widget.status.value

    assert not any(METADATA_KEY in layer.metadata for layer in viewer.layers)
    assert rgb.data.tobytes() == before.tobytes()
    assert (widget.n_colors.min, widget.n_colors.max) == (1, MAX_FIT_COLORS)


def test_unexpected_error_ends_the_run(viewer, widget, qtbot, errors, monkeypatch):
    # A RuntimeError raised in a superqt worker would silence its signals: the job returns
    # failures instead, and the widget says so.
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(jobs_module, "quantization_layer_data", broken)
    (source,) = viewer.open_sample(PLUGIN, "stain_patches")
    n_layers = len(viewer.layers)
    run_and_wait(qtbot, widget, layer=source, n_colors=4)
    assert "failed (RuntimeError): boom" in widget.status.value
    assert "boom" in errors()[-1].message
    assert len(viewer.layers) == n_layers and widget.run_button.enabled


def test_one_colour_reports_no_negative_zero(viewer, widget, qtbot, errors):
    source = viewer.add_image(np.full((16, 16, 3), 7, dtype=np.uint8), name="flat")
    run_and_wait(qtbot, widget, layer=source, n_colors=1)
    panel = widget.report.value
    assert "-0" not in panel
    assert "0 bits (0.0 KiB), 0/pixel" in panel
    # More K than colours: the engine's warning reaches napari, the report says so too.
    run_and_wait(qtbot, widget, layer=source, n_colors=4)
    assert "1 (asked 4)" in widget.report.value and "-0" not in widget.report.value
    assert "distinct" in errors()[-1].message


def test_report_says_why_there_is_no_png(viewer, widget, qtbot):
    rng = np.random.default_rng(2)
    deep = rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    source = viewer.add_image(deep, rgb=True, name="deep")
    run_and_wait(qtbot, widget, layer=source, n_colors=4)
    (labels,) = outputs(viewer, "labels")
    files = labels.metadata[METADATA_KEY]["storage"]["files"]
    assert files["png"] is None and files["png_reason"]
    assert f"none: {files['png_reason']}"[:40] in widget.report.value.replace("&#x27;", "'")


def test_report_does_not_widen_the_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    qtbot.wait(50)
    width, minimum = dock.width(), widget.native.minimumSizeHint().width()
    (source,) = viewer.open_sample(PLUGIN, "ihc")
    widget.sweep.value = "2, 3, 6, 16, 64, 256"
    widget.run_sweep()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    run_and_wait(qtbot, widget, layer=source, n_colors=300)  # the longest report
    widget._set_status("A long message " * 20, error=True)
    qtbot.wait(50)
    assert widget.native.minimumSizeHint().width() <= minimum
    assert dock.width() == width


def close_mid_run(viewer, qtbot, capfd, close, stage, gate):
    """Close the dock or the viewer while a run is in ``stage``; nothing may follow."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    if stage == "sizes":
        (source,) = viewer.open_sample(PLUGIN, "stain_patches")
        worker = widget.run(layer=source, n_colors=8)
    else:
        rng = np.random.default_rng(0)
        big = rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
        worker = widget.run(layer=viewer.add_image(big, name="big"), n_colors=64)
    run = wait_for_stage(qtbot, widget, (stage,))
    names = [layer.name for layer in viewer.layers]
    close(viewer, widget)
    gate.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(100)
    assert run.stop.is_set()
    assert [layer.name for layer in viewer.layers] in (names, [])  # [] if the viewer closed
    out = capfd.readouterr()
    assert "has been deleted" not in out.out + out.err
    assert "Traceback" not in out.err


def close_dock(viewer, widget):
    viewer.window.remove_dock_widget(widget.native)  # what the dock's close button does


def close_viewer(viewer, widget):
    viewer.close()


@pytest.mark.parametrize("stage", ["fit", "sizes"])
@pytest.mark.parametrize("close", [close_dock, close_viewer], ids=["dock", "viewer"])
def test_closing_mid_run_is_clean(make_napari_viewer, qtbot, capfd, close, stage, held_sizes):
    close_mid_run(make_napari_viewer(), qtbot, capfd, close, stage, held_sizes)


def test_closed_dock_adds_nothing_later(viewer, docked, qtbot, noise):
    # The run is past its fit when the dock closes; its layers must not appear afterwards.
    _, widget = docked
    worker = widget.run(layer=noise, n_colors=64)
    wait_for_stage(qtbot, widget, ("fit",))
    n_layers = len(viewer.layers)
    close_dock(viewer, widget)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    qtbot.wait(100)
    assert len(viewer.layers) == n_layers
    assert not widget.running


def test_report_has_real_bytes_on_disk(viewer, widget, qtbot, tmp_path, ihc):
    # A source that comes from a file: its own size is reported too.
    path = tmp_path / "ihc.png"
    from PIL import Image as PILImage

    PILImage.fromarray(ihc).save(path)
    (source,) = viewer.open(str(path), plugin="napari")
    assert str(source.source.path) == str(path)
    widget.image.value = source
    widget.n_colors.value = 8
    run_and_wait(qtbot, widget)
    (labels,) = outputs(viewer, "labels")
    (recon,) = outputs(viewer, "reconstruction")
    sizes = labels.metadata[METADATA_KEY]["storage"]
    assert recon.metadata[METADATA_KEY]["storage"] == sizes
    assert widget.last_result["storage"] == sizes

    # The numbers are what storage.save writes to disk for the same quantization.
    q = quantize(ihc, 8)
    np.testing.assert_array_equal(labels.data - 1, q.labels)
    kvq = save(tmp_path / "same.kvq", q)
    png = save(tmp_path / "same.png", q)
    packed = save(tmp_path / "packed.kvq", q, deflate=False)
    assert sizes["files"]["kvq_deflated"] == os.path.getsize(kvq)
    assert sizes["files"]["png"] == os.path.getsize(png)
    assert sizes["files"]["kvq_raw"] == os.path.getsize(packed)
    # ... and what the layers hold saves to the same bytes.
    palette = np.array(labels.metadata[METADATA_KEY]["palette"], dtype=np.uint8)
    from_layers = save(tmp_path / "layers.kvq", labels.data - 1, palette)
    assert os.path.getsize(from_layers) == os.path.getsize(kvq)
    assert sizes["input_bytes"] == os.path.getsize(path)
    assert sizes["raw_bytes"] == 512 * 512 * 3
    assert sizes["formula"]["total_bits"] == q.report.total_bits

    panel = widget.report.value
    assert ".kvq file" in panel and f"{os.path.getsize(kvq):,} B" in panel
    assert "PNG file" in panel and f"{os.path.getsize(png):,} B" in panel
    assert "source file" in panel and f"{os.path.getsize(path):,} B" in panel


def _pyramid(ihc, chunks=256):
    """A 1024 x 1024 IHC-derived RGB image (four mirrored copies) and its 3-level dask pyramid."""
    da = pytest.importorskip("dask.array")
    top = np.concatenate([ihc, ihc[:, ::-1]], axis=1)
    full = np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))
    levels = [da.from_array(full[:: 2**i, :: 2**i], chunks=(chunks, chunks, 3)) for i in range(3)]
    return full, levels


def test_multiscale_dask_layer_gives_multiscale_outputs(viewer, widget, qtbot, ihc, tmp_path):
    full, levels = _pyramid(ihc)
    source = viewer.add_image(levels, multiscale=True, rgb=True, name="pyramid")
    widget.image.value = source
    assert widget.fit_level.enabled and widget.fit_level.max == 2
    assert not widget.fit_level.native.isHidden()
    widget.n_colors.value = 8
    run_and_wait(qtbot, widget)

    (recon,), (labels,) = outputs(viewer, "reconstruction"), (outputs(viewer, "labels"))
    assert recon.multiscale and labels.multiscale
    assert len(recon.data) == len(labels.data) == 3
    assert [lv.shape for lv in labels.data] == [lv.shape[:2] for lv in levels]
    assert all(lv.dtype == np.uint8 for lv in labels.data)
    assert recon.rgb and recon.data[0].dtype == np.uint8

    # Full resolution fitted exactly: the eager quantization's labels, palette and counts.
    q = quantize(full, 8)
    summary = labels.metadata[METADATA_KEY]
    palette = np.array(summary["palette"], dtype=np.uint8)
    np.testing.assert_array_equal(palette, q.palette)
    level0 = np.asarray(labels.data[0])
    np.testing.assert_array_equal(level0 - 1, q.labels)
    np.testing.assert_array_equal(np.asarray(recon.data[0]), q.reconstruction)
    # Every level encoded with the same codebook.
    for i in (1, 2):
        np.testing.assert_array_equal(
            np.asarray(labels.data[i]) - 1, q.codebook.encode(np.asarray(levels[i]))
        )
    np.testing.assert_array_equal(labels.features["pixels"], q.cluster_sizes)
    for i, colour in enumerate(palette):
        expected = np.append(colour / 255, 1.0).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(labels.colormap.color_dict[i + 1]), expected)
    assert summary["report"]["total_bits"] == q.report.total_bits
    assert summary["info"]["n_levels"] == 3 and summary["info"]["fit_level"] == 0
    sizes = summary["storage"]
    assert sizes["files"]["kvq_deflated"] == os.path.getsize(save(tmp_path / "full.kvq", q))
    assert sizes["files"]["png"] == os.path.getsize(save(tmp_path / "full.png", q))
    assert "fit" in widget.report.value and ".kvq file" in widget.report.value

    # A re-run fitted on the coarsest level updates the outputs in place: no piling up,
    # and what the user set on them (opacity, visibility, order) stays.
    n_layers = len(viewer.layers)
    labels.opacity, recon.visible = 0.3, False
    order = [layer.name for layer in viewer.layers]
    widget.fit_level.value = 2
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert outputs(viewer, "labels") == [labels] and outputs(viewer, "reconstruction") == [recon]
    assert labels.opacity == 0.3 and not recon.visible
    assert [layer.name for layer in viewer.layers] == order
    assert labels.multiscale and len(labels.data) == 3
    assert labels.metadata[METADATA_KEY]["info"]["fit_level"] == 2
    coarse = quantize(np.asarray(levels[2]), 8)
    np.testing.assert_array_equal(
        np.array(labels.metadata[METADATA_KEY]["palette"], np.uint8), coarse.palette
    )
    # The layers hold the new run's pyramid.
    np.testing.assert_array_equal(np.asarray(labels.data[0]) - 1, coarse.codebook.encode(full))
    np.testing.assert_array_equal(np.asarray(recon.data[1]), coarse.codebook.decode(
        coarse.codebook.encode(np.asarray(levels[1]))))  # fmt: skip


def test_dask_layer_not_multiscale(viewer, widget, qtbot, ihc_crop):
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(ihc_crop, chunks=(48, 64, 3))
    source = viewer.add_image(lazy, rgb=True, name="lazy")
    widget.image.value = source
    assert not widget.fit_level.enabled and widget.fit_level.native.isHidden()
    widget.n_colors.value = 5
    run_and_wait(qtbot, widget)
    (recon,), (labels,) = outputs(viewer, "reconstruction"), outputs(viewer, "labels")
    assert not labels.multiscale and not recon.multiscale
    q = quantize(ihc_crop, 5)
    np.testing.assert_array_equal(np.asarray(labels.data) - 1, q.labels)
    np.testing.assert_array_equal(np.asarray(recon.data), q.reconstruction)
    assert labels.data.dtype == np.uint8 and recon.rgb
    assert labels.metadata[METADATA_KEY]["storage"]["files"]["kvq_deflated"] > 0
    assert source.data is lazy  # the source layer still holds its own dask array


def test_cancel_multiscale_run_adds_nothing(viewer, widget, qtbot):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    # About 4 million distinct colours: the exact fit takes seconds, time enough to cancel.
    full = rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    levels = [da.from_array(full[:: 2**i, :: 2**i], chunks=(512, 512, 3)) for i in range(2)]
    source = viewer.add_image(levels, multiscale=True, rgb=True, name="noise")
    widget.image.value = source
    n_layers = len(viewer.layers)
    run = cancel_mid_run(widget, qtbot, stages=("histogram", "fit"))
    assert len(viewer.layers) == n_layers
    assert run.reporter.stopped_in in ("histogram", "fit")


@pytest.mark.parametrize("module", ["widget", "jobs", "inputs", "layers"])
def test_widget_has_no_workarounds(module):
    """The issue's workarounds stay gone: no frozen GC, pandas, private imports or timers."""
    import ast
    import importlib
    from pathlib import Path

    path = importlib.import_module(f"napari_kmeans_vq.napari.{module}").__file__
    tree = ast.parse(Path(path).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {"gc", "pandas", "vispy"} & {name.split(".")[0] for name in imported}
    assert not any(name.startswith(("napari._", "qtpy._")) for name in imported)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not {"QTimer", "freeze"} & names


# -- mask, min region and the class table ------------------------------------------------


@pytest.fixture
def patches(viewer):
    """The generated H&E-like sample, as napari's File > Open Sample gives it."""
    (source,) = viewer.open_sample(PLUGIN, "stain_patches")
    return source


def test_mask_choices_follow_the_viewer(viewer, widget, patches):
    combo = widget.mask.native
    assert [combo.itemText(i) for i in range(combo.count())] == ["none", "automatic (tissue)"]
    assert widget.mask.choices == ("none", "auto") and widget.mask.value == "none"
    assert widget.tissue_threshold.native.isHidden()
    seg = viewer.add_labels(np.zeros(patches.data.shape[:2], np.uint8), name="seg")
    outline = viewer.add_shapes(name="outline")
    assert widget.mask.choices[2:] == (seg, outline)
    widget.mask.value = "auto"
    assert widget.tissue_threshold.enabled and not widget.tissue_threshold.native.isHidden()
    widget.mask.value = outline
    assert widget.tissue_threshold.native.isHidden()
    viewer.layers.remove(outline)
    assert widget.mask.choices[2:] == (seg,)


def test_mask_from_a_labels_layer(viewer, widget, qtbot, patches):
    painted = np.zeros(patches.data.shape[:2], np.uint8)
    painted[100:300, 50:400] = 2
    painted[400:450, 400:500] = 7
    widget.mask.value = viewer.add_labels(painted, name="tissue")
    widget.n_colors.value = 3
    run_and_wait(qtbot, widget, layer=patches)
    (labels,) = outputs(viewer, "labels")
    mask = painted > 0
    expected = quantize(patches.data, 3, mask=mask)
    assert (labels.data[~mask] == 0).all()
    np.testing.assert_array_equal(labels.data[mask] - 1, expected.labels[mask])
    (recon,) = outputs(viewer, "reconstruction")
    np.testing.assert_array_equal(recon.data[~mask], patches.data[~mask])
    assert sum(widget.class_table.column("pixels")) == mask.sum()
    assert labels.metadata[METADATA_KEY]["masked"]
    assert "inside the mask" in widget.status.value
    assert "inside the mask" in widget.class_title.text()


def test_mask_from_a_shapes_layer(viewer, widget, qtbot, patches):
    square = np.array([[40, 60], [40, 300], [250, 300], [250, 60]], float)
    ellipse = np.array([[300, 300], [300, 450], [450, 450], [450, 300]], float)
    shapes = viewer.add_shapes(
        [square, ellipse], shape_type=["polygon", "ellipse"], name="outline"
    )
    widget.mask.value = shapes
    widget.n_colors.value = 3
    run_and_wait(qtbot, widget, layer=patches)
    (labels,) = outputs(viewer, "labels")
    expected = shapes.to_masks(mask_shape=patches.data.shape[:2]).any(axis=0)
    np.testing.assert_array_equal(labels.data > 0, expected)
    assert 0.1 < expected.mean() < 0.5

    # A shapes layer at twice the image's scale: its shapes land on the image's pixels
    # through the world coordinates.
    half = viewer.add_shapes([square / 2], shape_type="polygon", scale=(2, 2), name="half")
    widget.mask.value = half
    run_and_wait(qtbot, widget, layer=patches)
    inside = labels.data > 0
    drawn = viewer.add_shapes([square], shape_type="polygon").to_masks(
        mask_shape=patches.data.shape[:2]
    )[0]
    np.testing.assert_array_equal(inside, drawn)


def test_automatic_tissue_mask(viewer, widget, qtbot, patches):
    from napari_kmeans_vq.core.tissue import tissue_mask

    widget.mask.value = "auto"
    widget.tissue_threshold.value = 0.2
    widget.color_space.value = "hed"
    widget.n_colors.value = 3
    run_and_wait(qtbot, widget, layer=patches)
    (labels,) = outputs(viewer, "labels")
    mask = tissue_mask(patches.data, 0.2)
    assert 0.5 < mask.mean() < 1  # the sample's white lumens are left out
    np.testing.assert_array_equal(labels.data > 0, mask)
    q = quantize(patches.data, 3, color_space="hed", mask=mask)
    np.testing.assert_array_equal(labels.data[mask] - 1, q.labels[mask])
    assert "mean_hematoxylin" in widget.class_table.columns
    assert widget.class_view.horizontalHeaderItem(4).text() == "hematoxylin"
    # The nuclei class is the one with the most hematoxylin.
    table = widget.class_table
    nuclei = int(np.argmax(table.column("mean_hematoxylin")))
    assert table.rows[nuclei]["share"] < 0.2


def test_bad_masks_are_refused_and_add_nothing(viewer, widget, qtbot, patches, errors):
    n_layers = len(viewer.layers)
    wrong = viewer.add_labels(np.ones((100, 120), np.uint8), name="wrong")
    widget.mask.value = wrong
    assert widget.run(layer=patches) is None
    assert "has shape (100, 120)" in widget.status.value
    assert "(512, 512)" in widget.status.value and "Nothing was added" in widget.status.value
    assert "has shape (100, 120)" in errors()[-1].message
    empty = viewer.add_labels(np.zeros((512, 512), np.uint8), name="empty")
    widget.mask.value = empty
    assert widget.run(layer=patches) is None
    assert "selects no pixel" in widget.status.value
    widget.mask.value = viewer.add_shapes(name="nothing drawn")
    assert widget.run_sweep(layer=patches, ks="2, 3") is None
    assert "has no shapes" in widget.status.value
    # The automatic mask needs colour; on bare glass it finds nothing (in the worker).
    grey = viewer.add_image(patches.data[..., 0], name="grey")
    widget.mask.value = "auto"
    assert widget.run(layer=grey) is None
    assert "needs an RGB image" in widget.status.value
    glass = viewer.add_image(np.full((64, 64, 3), 250, np.uint8), name="glass")
    run_and_wait(qtbot, widget, layer=glass, n_colors=2)
    assert "selects no pixels" in widget.status.value and "lower the" in widget.status.value
    assert not outputs(viewer, "labels") and not outputs(viewer, "reconstruction")
    assert len(viewer.layers) == n_layers + 5
    assert widget.class_table is None and widget._class_panel.isHidden()


def test_mask_on_lazy_images(viewer, widget, qtbot, ihc, ihc_crop):
    da = pytest.importorskip("dask.array")
    # A small dask image is computed in the worker, then masked.
    lazy = viewer.add_image(da.from_array(ihc_crop, chunks=(48, 64, 3)), rgb=True, name="lazy")
    widget.mask.value = "auto"
    widget.min_region.value = 4
    run_and_wait(qtbot, widget, layer=lazy, n_colors=3)
    (labels,) = outputs(viewer, "labels")
    from napari_kmeans_vq.core.tissue import tissue_mask

    mask = tissue_mask(ihc_crop)
    q = quantize(ihc_crop, 3, mask=mask, min_region=4)
    np.testing.assert_array_equal(labels.data, np.where(mask, q.labels + 1, 0))
    # A multiscale one is refused: the mask and the clean-up need it in memory.
    levels = [da.from_array(ihc[:: 2**i, :: 2**i], chunks=(128, 128, 3)) for i in range(2)]
    pyramid = viewer.add_image(levels, multiscale=True, rgb=True, name="pyramid")
    assert widget.run(layer=pyramid) is None
    assert "need the image in memory" in widget.status.value
    assert "multiscale" in widget.status.value


def test_min_region_cleans_up(viewer, widget, qtbot, patches):
    widget.n_colors.value = 4
    run_and_wait(qtbot, widget, layer=patches)
    (labels,) = outputs(viewer, "labels")
    speckled = labels.data.copy()
    widget.min_region.value = 50
    run_and_wait(qtbot, widget, layer=patches)
    q = quantize(patches.data, 4, min_region=50)
    np.testing.assert_array_equal(labels.data - 1, q.labels)
    assert (labels.data != speckled).any()
    from napari_kmeans_vq.core.regions import regions

    assert regions(labels.data)[1] < regions(speckled)[1]
    assert widget.class_table.column("pixels") == q.cluster_sizes.tolist()
    summary = labels.metadata[METADATA_KEY]
    assert summary["report"]["entropy_bits"] == pytest.approx(q.report.entropy_bits)


def test_class_table_rows_and_areas_from_the_layer_scale(viewer, widget, qtbot, patches):
    # No physical scale: areas in pixels.
    widget.n_colors.value = 3
    run_and_wait(qtbot, widget, layer=patches)
    assert not widget._class_panel.isHidden()
    assert widget.class_view.horizontalHeaderItem(3).text() == "area (pixels)"
    assert "areas in pixels" in widget.class_title.text()
    # A scale in micrometres (napari 0.9: layer.scale and pint layer.units).
    source = viewer.add_image(patches.data, name="slide", scale=(0.5, 0.25), units="um")
    run_and_wait(qtbot, widget, layer=source)
    q = quantize(patches.data, 3)
    table = widget.class_table
    assert table.columns == ("label", "name", "color", "pixels", "share", "area_um2")
    assert table.column("pixels") == q.cluster_sizes.tolist()
    assert table.column("area_um2") == pytest.approx(list(q.cluster_sizes * 0.125))
    assert table.column("share") == pytest.approx(list(q.cluster_sizes / q.cluster_sizes.sum()))
    view = widget.class_view
    assert view.rowCount() == 3
    headers = [view.horizontalHeaderItem(i).text() for i in range(view.columnCount())]
    assert headers == ["class", "name", "share", "area (µm²)"]
    for r, row in enumerate(table.rows):
        assert view.item(r, 0).text() == str(r + 1)
        assert view.item(r, 1).text() == f"class {r + 1}"
        assert view.item(r, 2).text() == f"{100 * row['share']:.1f}%"
        assert view.item(r, 3).text() == f"{row['area_um2']:,.1f}"
        swatch = view.item(r, 0).icon().pixmap(8, 8).toImage().pixelColor(4, 4)
        assert swatch.name() == row["color"]
    labels = next(lay for lay in outputs(viewer, "labels") if lay.name.startswith("slide"))
    rows = labels.metadata[METADATA_KEY]["classes"]
    assert [r["area_um2"] for r in rows] == pytest.approx(table.column("area_um2"))
    # The report is folded under the table; its button opens it.
    assert not widget.report_toggle.isChecked() and widget._report_scroll.isHidden()
    widget.report_toggle.click()
    assert not widget._report_scroll.isHidden() and ".kvq file" in widget.report.value


def test_rename_propagates_to_features_and_metadata(viewer, widget, qtbot, patches, tmp_path):
    widget.n_colors.value = 3
    run_and_wait(qtbot, widget, layer=patches)
    (labels,), (recon,) = outputs(viewer, "labels"), outputs(viewer, "reconstruction")
    assert list(labels.features["name"]) == ["class 1", "class 2", "class 3"]
    item = widget.class_view.item(0, 1)
    assert item.flags() & item.flags().ItemIsEditable
    assert not widget.class_view.item(0, 2).flags() & item.flags().ItemIsEditable
    # A real edit: double-click opens an editor in the cell, Enter commits it.
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QLineEdit

    view = widget.class_view
    view.editItem(item)
    (editor,) = view.viewport().findChildren(QLineEdit)
    editor.setText("nuclei")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: widget.class_names[0] == "nuclei", timeout=5_000)
    assert view.item(0, 1).text() == "nuclei"
    widget.rename_class(3, "  stroma ")
    assert widget.class_names == ["nuclei", "class 2", "stroma"]
    assert widget.class_view.item(2, 1).text() == "stroma"
    assert list(labels.features["name"]) == ["nuclei", "class 2", "stroma"]
    for layer in (labels, recon):
        assert layer.metadata[METADATA_KEY]["names"] == ["nuclei", "class 2", "stroma"]
        classes = layer.metadata[METADATA_KEY]["classes"]
        assert [row["name"] for row in classes] == widget.class_names
    # An empty name gives back the default one.
    widget.rename_class(3, "")
    assert widget.class_names[2] == "class 3" and labels.features["name"][2] == "class 3"
    # The names go out with the table.
    path = widget.export_classes(tmp_path / "classes.csv")
    assert "nuclei" in path.read_text()


def test_merge_selected_classes(viewer, widget, qtbot, patches):
    widget.n_colors.value = 5
    widget.color_space.value = "hed"
    run_and_wait(qtbot, widget, layer=patches)
    (labels,), (recon,) = outputs(viewer, "labels"), outputs(viewer, "reconstruction")
    before = quantize(patches.data, 5, color_space="hed")
    widget.rename_class(4, "stroma")
    view = widget.class_view
    assert not widget.merge_button.isEnabled()
    view.selectRow(1)
    assert not widget.merge_button.isEnabled()  # one class: nothing to merge
    selection = view.selectionModel()
    flags = selection.SelectionFlag.Select | selection.SelectionFlag.Rows
    selection.select(view.model().index(3, 0), flags)
    assert widget.merge_button.isEnabled()
    n_layers = len(viewer.layers)
    widget.merge_button.click()

    # The same layers, updated: K = 4, class 2 the union of 2 and 4, 5 became 4.
    assert len(viewer.layers) == n_layers
    assert outputs(viewer, "labels") == [labels] and outputs(viewer, "reconstruction") == [recon]
    lut = np.array([0, 1, 2, 3, 2, 4])  # by label: 4 joins 2, 5 moves down
    np.testing.assert_array_equal(labels.data, lut[before.labels + 1])
    assert labels.name.endswith("K=4 labels")
    summary = labels.metadata[METADATA_KEY]
    palette = np.array(summary["palette"], np.uint8)
    sizes = before.cluster_sizes
    w = sizes[[1, 3]] / sizes[[1, 3]].sum()
    np.testing.assert_array_equal(palette[1], np.rint(w @ before.palette[[1, 3]].astype(float)))
    np.testing.assert_array_equal(recon.data, palette[labels.data - 1])
    np.testing.assert_allclose(np.asarray(labels.colormap.color_dict[2])[:3], palette[1] / 255)
    assert summary["n_colors"] == 4 and summary["report"]["n_colors"] == 4
    diff = patches.data.astype(float) - recon.data.astype(float)
    assert summary["distortion"] == pytest.approx((diff**2).sum(axis=2).mean())
    assert summary["distortion"] > before.distortion
    assert "storage" not in summary
    assert widget.class_names == ["class 1", "stroma", "class 3", "class 4"]
    assert list(labels.features["name"]) == widget.class_names
    assert widget.class_table.column("pixels") == [
        sizes[0],
        sizes[1] + sizes[3],
        sizes[2],
        sizes[4],
    ]
    assert view.rowCount() == 4
    assert "Merged classes 2, 4 into class 2" in widget.status.value
    assert "not measured: classes merged" in widget.report.value
    assert widget.last_result["n_colors"] == 4
    # Refusals: one class, or no run yet.
    assert widget.merge_classes([1]) is None and "at least two" in widget.status.value


def test_export_classes_to_csv(viewer, widget, qtbot, patches, tmp_path, monkeypatch):
    assert widget.export_classes(tmp_path / "none.csv") is None
    assert "press Run first" in widget.status.value
    assert not (tmp_path / "none.csv").exists()
    source = viewer.add_image(patches.data, name="slide", scale=(0.5, 0.5), units="um")
    widget.mask.value = "auto"
    widget.color_space.value = "hed"
    run_and_wait(qtbot, widget, layer=source, n_colors=3)
    widget.rename_class(1, "nuclei")
    path = widget.export_classes(tmp_path / "classes.csv")
    text = path.read_text()
    assert text == widget.class_table.to_csv()
    import csv

    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == [
        "label", "name", "color", "pixels", "share", "area_um2",
        "mean_hematoxylin", "mean_eosin", "mean_residual",
    ]  # fmt: skip
    assert rows[0]["name"] == "nuclei"
    assert float(rows[0]["area_um2"]) == pytest.approx(int(rows[0]["pixels"]) * 0.25)
    assert "written to" in widget.status.value

    # The button asks where, with napari's file dialog (here answered by the test).
    asked = tmp_path / "asked.csv"
    monkeypatch.setattr(
        widget_module.QFileDialog, "getSaveFileName", lambda *a, **k: (str(asked), "")
    )
    widget.export_button.click()
    assert asked.read_text() == text
    monkeypatch.setattr(widget_module.QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))
    assert widget.export_classes() is None  # cancelled
    assert widget.export_classes(tmp_path / "missing" / "x.csv") is None
    assert "Cannot write" in widget.status.value


def test_sweep_with_a_mask_opens_the_report(viewer, widget, qtbot, patches):
    from napari_kmeans_vq.core.tissue import tissue_mask

    widget.mask.value = "auto"
    widget.run_sweep(layer=patches, ks="2, 3")
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    mask = tissue_mask(patches.data)
    for layer in outputs(viewer, "sweep"):
        np.testing.assert_array_equal(layer.data[~mask], patches.data[~mask])
    n = int(mask.sum())
    assert [row["total_bits"] for row in widget.sweep_rows] == [
        bit_report(n, k).total_bits for k in (2, 3)
    ]
    assert widget.report_toggle.isChecked() and not widget._report_scroll.isHidden()
