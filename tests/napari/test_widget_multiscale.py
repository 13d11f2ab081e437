"""A multiscale slide in napari (issue 19, item 6): the widget's run on a multiscale image
layer reports each dask task (block) as it gets through, keeps napari's event loop running
meanwhile, and adds multiscale labels that stay lazy; an OME-Zarr store written from the
same result opens as multiscale labels over the multiscale slide."""

from __future__ import annotations

import re

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

from napari_kmeans_vq import quantize  # noqa: E402
from napari_kmeans_vq.large import quantize_lazy  # noqa: E402
from napari_kmeans_vq.napari.layers import ome_zarr_labels_layer_data  # noqa: E402

PLUGIN = "napari-kmeans-vq"
BLOCK = 128


@pytest.fixture(scope="module")
def slide(ihc):
    """A 1024 x 1024 slide of real tissue (the IHC sample mirrored four ways) and its
    3-level pyramid as dask arrays in 128 x 128 blocks: 64 blocks at full resolution."""
    top = np.concatenate([ihc, ihc[:, ::-1]], axis=1)
    full = np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))
    levels = [da.from_array(full[:: 2**i, :: 2**i], chunks=(BLOCK, BLOCK, 3)) for i in range(3)]
    return full, levels


def test_multiscale_run_reports_each_block_and_stays_lazy(viewer, widget, qtbot, slide):
    full, levels = slide
    source = viewer.add_image(levels, multiscale=True, rgb=True, name="slide")
    widget.image.value = source
    widget.n_colors.value = 6
    seen = []  # (stage, done, total, still running) as the main thread receives them
    widget.relay.counted.connect(
        lambda _run, stage, done, total: seen.append((stage, done, total, widget.running))
    )
    statuses = []  # what the status line said, sampled as the run goes
    widget.relay.counted.connect(lambda *_: statuses.append(widget.status.value))
    measuring = []  # what it said once the layers were in (the files being measured)

    def after_layers(*_):
        if widget._run is not None and widget._run.layers_at is not None:
            measuring.append(widget.status.value)

    widget.relay.progressed.connect(after_layers)
    widget.relay.counted.connect(after_layers)
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)

    # The colour count went block by block: one report per task, at least one per block,
    # received while the run was still going (the event loop kept running).
    done = [d for stage, d, _, _ in seen if stage == "histogram"]
    assert len(set(done)) >= levels[0].npartitions and done == sorted(done)
    assert all(running for *_, running in seen)
    assert any(re.search(r"counting colours, [\d,]+ of [\d,]+ blocks' tasks", s) for s in statuses)
    # Measuring the files encodes blocks again: the status stays on measuring.
    assert measuring and not any(s.startswith("Quantizing") for s in measuring), measuring

    labels = next(layer for layer in viewer.layers if layer.name.endswith("labels"))
    assert labels.multiscale and len(labels.data) == 3
    # Lazy: napari reads the blocks it shows; nothing was turned into one whole array.
    assert all(isinstance(level, da.Array) for level in labels.data)
    eager = quantize(full, 6)
    np.testing.assert_array_equal(np.asarray(labels.data[0]) - 1, eager.labels)


def test_ome_zarr_output_opens_as_multiscale_labels_over_the_slide(viewer, tmp_path, slide):
    from napari_kmeans_vq.io import save_ome_zarr

    _, levels = slide
    q = quantize_lazy(levels, 6)
    out = tmp_path / "slide_labels.ome.zarr"
    save_ome_zarr(out, q, chunk=256, pixel_size=(0.5, 0.5))
    image = viewer.add_image(levels, multiscale=True, rgb=True, name="slide", scale=(0.5, 0.5))
    data, meta, kind = ome_zarr_labels_layer_data(out)
    assert kind == "labels"
    labels = viewer.add_labels(data, **meta)
    assert labels.multiscale and image.multiscale
    assert len(labels.data) == len(image.data) == 3
    assert [lv.shape for lv in labels.data] == [lv.shape[:2] for lv in image.data]
    # Placed over the slide: the same world extent and scale.
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.extent.world, image.extent.world)
    np.testing.assert_array_equal(np.asarray(labels.data[0]) - 1, q.compute().labels)
    # Coloured with the palette, the class table from the store.
    for i, colour in enumerate(q.palette):
        np.testing.assert_allclose(
            np.asarray(labels.colormap.color_dict[i + 1])[:3], colour / 255, atol=1e-6
        )
    assert list(labels.features["pixels"]) == q.cluster_sizes.tolist()
    # A store written without a pixel size is placed as the slide's layer is.
    plain = tmp_path / "plain.ome.zarr"
    save_ome_zarr(plain, q, chunk=256)
    _, meta, _ = ome_zarr_labels_layer_data(plain, source_layer=image)
    np.testing.assert_allclose(meta["scale"], image.scale)


def test_a_slide_opened_with_open_image_is_a_multiscale_layer(viewer, tmp_path, slide):
    """As the docs show: open_image's levels go straight into add_image (napari asks the
    layer data for numpy's ``size`` too)."""
    tifffile = pytest.importorskip("tifffile")
    from napari_kmeans_vq.large import open_image

    full, _ = slide
    path = tmp_path / "slide.tif"
    with tifffile.TiffWriter(path) as tw:
        options = {"tile": (128, 128), "photometric": "rgb", "compression": "zlib"}
        tw.write(full, subifds=2, **options)
        for i in (1, 2):
            tw.write(full[:: 2**i, :: 2**i], subfiletype=1, **options)
    levels = open_image(path)
    layer = viewer.add_image(levels, multiscale=True, rgb=True)
    assert layer.multiscale and len(layer.data) == 3
    assert levels[0].size == full.shape[0] * full.shape[1] * 3
    assert np.array_equal(np.asarray(layer.data[2][:, :]), full[::4, ::4])
