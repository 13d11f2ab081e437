"""The .kvq reader and the writers, through napari's plugin machinery (needs a display: xvfb)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import KVQError, load, png_bit_depth, save
from napari_kmeans_vq.napari.layers import METADATA_KEY, quantization_layer_data
from napari_kmeans_vq.napari.reader import get_reader, read_kvq_layers
from napari_kmeans_vq.napari.writer import codes_from_layers, write_indexed_png, write_kvq

PLUGIN = "napari-kmeans-vq"


@pytest.fixture(scope="module")
def q(ihc_crop):
    return quantize(ihc_crop, 6)


# ---------------------------------------------------------------------------------------------
# without a viewer: the functions napari calls


def test_get_reader_claims_only_kvq(tmp_path):
    assert get_reader(str(tmp_path / "a.kvq")) is read_kvq_layers
    assert get_reader([str(tmp_path / "a.KVQ")]) is read_kvq_layers
    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader([str(tmp_path / "a.kvq"), str(tmp_path / "b.kvq")]) is None


def test_reader_layers_match_the_widget_layers(tmp_path, q):
    path = save(tmp_path / "crop.kvq", q)
    (recon, recon_meta, kind1), (labels, labels_meta, kind2) = read_kvq_layers(str(path))
    assert (kind1, kind2) == ("image", "labels")
    assert np.array_equal(recon, q.reconstruction) and recon.dtype == np.uint8
    assert np.array_equal(labels, q.labels + 1)
    widget_layers = quantization_layer_data(q)
    assert labels_meta["colormap"] == widget_layers[1][1]["colormap"]
    for key in ("cluster", "hex", "R", "G", "B", "pixels"):
        assert np.array_equal(labels_meta["features"][key], widget_layers[1][1]["features"][key])
    summary = labels_meta["metadata"][METADATA_KEY]
    assert summary["file_size"] == path.stat().st_size
    assert summary["report"]["total_bits"] == q.report.total_bits
    assert summary["palette"] == q.palette.tolist()
    assert recon_meta["name"] == "crop K=6 reconstruction"


def test_writers_round_trip_the_widget_layers(tmp_path, q):
    layers = quantization_layer_data(q)
    labels_only = [layers[1]]
    for chosen in (labels_only, layers):
        [written] = write_kvq(str(tmp_path / "w"), chosen)
        assert written.endswith("w.kvq")
        back = load(written)
        assert np.array_equal(back.labels, q.labels) and np.array_equal(back.palette, q.palette)
        [png] = write_indexed_png(str(tmp_path / "w.png"), chosen)
        with Image.open(png) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), q.reconstruction)
        (tmp_path / "w.kvq").unlink()


def test_writer_derives_a_palette_from_an_image_and_any_labels(tmp_path, ihc_crop):
    # A hand-made segmentation (labels 3 and 7) with its image: mean colour per label.
    labels = np.full(ihc_crop.shape[:2], 3, dtype=np.uint8)
    labels[:, 64:] = 7
    layers = [(ihc_crop, {"rgb": True}, "image"), (labels, {}, "labels")]
    indices, palette, scalar = codes_from_layers(layers)
    assert not scalar and palette.dtype == np.uint8 and palette.shape == (2, 3)
    left = np.rint(ihc_crop[:, :64].reshape(-1, 3).mean(axis=0))
    assert np.array_equal(palette[0], left)
    assert np.array_equal(indices, (labels == 7).astype(np.uint8))
    # A reconstruction with its labels is stored exactly.
    q = quantize(ihc_crop, 4)
    exact = [(q.reconstruction, {}, "image"), (q.labels.astype(np.uint16) * 5 + 2, {}, "labels")]
    indices, palette, _ = codes_from_layers(exact)
    assert np.array_equal(palette[indices], q.reconstruction)


def test_writer_errors_say_what_to_do(tmp_path):
    labels = np.ones((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="save it together with its image layer"):
        write_kvq(str(tmp_path / "x.kvq"), [(labels, {}, "labels")])
    with pytest.raises(ValueError, match="one labels layer"):
        write_kvq(str(tmp_path / "x.kvq"), [(labels, {}, "labels"), (labels, {}, "labels")])
    meta = {"metadata": {METADATA_KEY: {"palette": [[1, 2, 3]]}}}
    with pytest.raises(ValueError, match="label 0, the background"):
        write_kvq(str(tmp_path / "x.kvq"), [(labels * 0, meta, "labels")])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# in napari, through the manifest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")


@pytest.mark.napari
def test_viewer_opens_kvq_with_the_plugin(make_napari_viewer, tmp_path, q):
    path = save(tmp_path / "slide.kvq", q)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    recon, labels = layers
    assert recon.rgb and np.array_equal(recon.data, q.reconstruction)
    assert labels.data.dtype == np.uint8 and np.array_equal(labels.data, q.labels + 1)
    # Every cluster label shows exactly its palette colour.
    for index, colour in enumerate(q.palette):
        shown = labels.colormap.map(np.array([index + 1]))[0]
        np.testing.assert_allclose(shown[:3], colour / 255, atol=1e-6)
    assert list(labels.features["hex"]) == [
        "#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in q.palette
    ]
    assert labels.metadata[METADATA_KEY]["file_size"] == path.stat().st_size


@pytest.mark.napari
def test_viewer_saves_layers_back(make_napari_viewer, tmp_path, q):
    viewer = make_napari_viewer()
    source = save(tmp_path / "in.kvq", q)
    _, labels = viewer.open(str(source), plugin=PLUGIN)

    out = tmp_path / "out.kvq"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert [str(p) for p in written] == [str(out)]
    back = load(out)
    assert np.array_equal(back.labels, q.labels) and np.array_equal(back.palette, q.palette)

    png = tmp_path / "labels.png"
    viewer.layers.selection = {labels}
    written = viewer.layers.save(str(png), selected=True, plugin=PLUGIN)
    assert [str(p) for p in written] == [str(png)]
    blob = png.read_bytes()
    assert png_bit_depth(blob) in (4, 8)
    with Image.open(io.BytesIO(blob)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), q.reconstruction)

    # The saved file opens again as the same layers.
    again = viewer.open(str(out), plugin=PLUGIN)
    assert np.array_equal(again[1].data, labels.data)


@pytest.mark.napari
def test_viewer_reports_a_damaged_file(make_napari_viewer, tmp_path, q):
    path = save(tmp_path / "bad.kvq", q)
    path.write_bytes(path.read_bytes()[:-10])
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(str(path), plugin=PLUGIN)
    # napari may wrap it; the cause is our documented error with its message.
    chain, error = [], info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, KVQError) and "truncated" in str(e) for e in chain)
    assert len(viewer.layers) == 0
