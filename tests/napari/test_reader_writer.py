"""The .kvq reader and the writers, through napari's plugin machinery (needs a display: xvfb)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import KVQError, load, png_bit_depth, save
from napari_kmeans_vq.napari.layers import METADATA_KEY, quantization_layer_data
from napari_kmeans_vq.napari.reader import get_reader, read_kvq_layers
from napari_kmeans_vq.napari.writer import (
    codes_from_layers,
    write_geojson,
    write_indexed_png,
    write_kvq,
    write_labels_tiff,
)

PLUGIN = "napari-kmeans-vq"


@pytest.fixture(scope="module")
def q(ihc_crop):
    return quantize(ihc_crop, 6)


# ---------------------------------------------------------------------------------------------
# without a viewer: the functions napari calls


def test_get_reader_claims_kvq_and_only_our_png_and_tiff(tmp_path, q):
    from napari_kmeans_vq.io import encode_image
    from napari_kmeans_vq.io.tiff import write_labels_tiff

    assert get_reader(str(tmp_path / "a.kvq")) is read_kvq_layers
    assert get_reader([str(tmp_path / "a.KVQ")]) is read_kvq_layers
    assert get_reader(str(tmp_path / "missing.png")) is None
    assert get_reader([str(tmp_path / "a.kvq"), str(tmp_path / "b.kvq")]) is None
    ours = [save(tmp_path / "ours.png", q), save(tmp_path / "ours.tif", q)]
    for path in ours:
        assert get_reader(str(path)) is read_kvq_layers
    # Ordinary images, and palette files from other tools, are left to other readers.
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode_image(q.reconstruction, ".png"))
    (tmp_path / "photo.tif").write_bytes(encode_image(q.reconstruction, ".tif"))
    palette_png = tmp_path / "gimp.png"
    image = Image.frombytes("P", q.labels.shape[::-1], q.labels.tobytes())
    image.putpalette(q.palette.tobytes())
    image.save(palette_png)
    tifffile = pytest.importorskip("tifffile")
    colormap = np.zeros((3, 256), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "fiji.tif", q.labels, photometric="palette", colormap=colormap)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 40)
    (tmp_path / "junk.tif").write_bytes(b"II*\0" + b"\xff" * 40)
    for name in ("photo.png", "photo.tif", "gimp.png", "fiji.tif", "junk.png", "junk.tif"):
        assert get_reader(str(tmp_path / name)) is None, name
    write_labels_tiff(tmp_path / "named.tiff", q.labels, q.palette, names=list("abcdef"))
    assert get_reader(str(tmp_path / "named.tiff")) is read_kvq_layers


@pytest.mark.parametrize("suffix", [".kvq", ".png", ".tif"])
def test_reader_gives_the_names_the_file_records(tmp_path, q, suffix):
    names = ["nuclei", "stroma", "glass", "red cells", "fat", "Ödem"]
    path = save(tmp_path / f"named{suffix}", q, names=names)
    recon, labels = read_kvq_layers(str(path))
    assert list(labels[1]["features"]["name"]) == names
    assert labels[1]["metadata"][METADATA_KEY]["names"] == names
    assert np.array_equal(labels[0], q.labels + 1)
    assert np.array_equal(recon[0], q.reconstruction)
    plain = read_kvq_layers(str(save(tmp_path / f"plain{suffix}", q)))[1]
    assert list(plain[1]["features"]["name"]) == [f"class {i + 1}" for i in range(6)]


def test_writer_takes_names_from_features(tmp_path, q):
    names = ["nuclei", "stroma", "glass", "red cells", "fat", "muscle"]
    layers = quantization_layer_data(q, names=names)
    for writer, suffix in (
        (write_kvq, ".kvq"),
        (write_indexed_png, ".png"),
        (write_labels_tiff, ".tif"),
    ):
        [written] = writer(str(tmp_path / f"named{suffix}"), [layers[1]])
        assert load(written).names == names
        # Round trip through the reader: the features' names survive.
        assert list(read_kvq_layers(written)[1][1]["features"]["name"]) == names
    # A name edited in the features table (as the widget does) is the one written.
    data, meta, kind = layers[1]
    features = dict(meta["features"])
    features["name"] = np.array([*names[:-1], "edited"], dtype=object)
    [written] = write_kvq(
        str(tmp_path / "edited.kvq"), [(data, {**meta, "features": features}, kind)]
    )
    assert load(written).names[-1] == "edited"
    # Default names are not written: the same bytes as a file saved without names.
    [default] = write_kvq(str(tmp_path / "default.kvq"), [quantization_layer_data(q)[1]])
    assert load(default).names is None
    assert Path(default).read_bytes() == save(tmp_path / "lib.kvq", q).read_bytes()


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


def test_writers_save_a_multiscale_layer_at_full_resolution(tmp_path, ihc_crop, monkeypatch):
    """napari gives a multiscale layer's smallest level as its array: the writers take
    level 0 (within the pixel limit; over it, they point to OME-Zarr)."""
    from napari_kmeans_vq.io import limits

    q = quantize([ihc_crop, ihc_crop[::2, ::2]], 6)  # a lazy multiscale result
    layers = quantization_layer_data(q)
    assert layers[1][1]["multiscale"] and len(layers[1][0]) == 2
    eager = quantize(ihc_crop, 6)
    for chosen in ([layers[1]], layers):
        [written] = write_kvq(str(tmp_path / "m.kvq"), chosen)
        back = load(written)
        assert np.array_equal(back.labels, eager.labels)
        (tmp_path / "m.kvq").unlink()
    [outlines] = write_geojson(str(tmp_path / "m.geojson"), [layers[1]])

    def points(nested):
        if isinstance(nested[0], int | float):
            yield nested
        else:
            for item in nested:
                yield from points(item)

    features = json.loads(Path(outlines).read_text())["features"]
    ys = [p[1] for f in features for p in points(f["geometry"]["coordinates"])]
    assert max(ys) == ihc_crop.shape[0]
    monkeypatch.setattr(limits, "MAX_PIXELS", 100)
    with pytest.raises(ValueError, match="OME-Zarr"):
        write_kvq(str(tmp_path / "big.kvq"), [layers[1]])
    assert not (tmp_path / "big.kvq").exists()


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


@pytest.mark.napari
def test_viewer_reopens_our_png_and_tiff_as_labels_with_names(make_napari_viewer, tmp_path, q):
    names = ["nuclei", "stroma", "glass", "red cells", "fat", "muscle"]
    viewer = make_napari_viewer()
    for suffix in (".png", ".tif"):
        path = save(tmp_path / f"ours{suffix}", q, names=names)
        layers = viewer.open(str(path), plugin=PLUGIN)
        assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
        assert np.array_equal(layers[1].data, q.labels + 1)
        assert list(layers[1].features["name"]) == names
        # Saved back from the viewer, the names travel on.
        out = tmp_path / f"again{suffix}.kvq"
        viewer.layers.selection = {layers[1]}
        viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
        assert load(out).names == names


@pytest.mark.napari
def test_an_ordinary_png_is_not_claimed(make_napari_viewer, tmp_path, q):
    import npe2

    from napari_kmeans_vq.io import encode_image

    photo = tmp_path / "photo.png"
    photo.write_bytes(encode_image(q.reconstruction, ".png"))
    viewer = make_napari_viewer()
    # npe2 asks our reader, which declines; napari's own reader opens it as an RGB image.
    with pytest.raises(ValueError, match="napari-kmeans-vq"):
        npe2.read([str(photo)], plugin_name=PLUGIN, stack=False)
    [layer] = viewer.open(str(photo))
    assert type(layer).__name__ == "Image" and layer.rgb
    assert np.array_equal(layer.data, q.reconstruction)
    ours = save(tmp_path / "ours.png", q)
    [(_, _, kind), (labels, _, kind2)] = npe2.read([str(ours)], plugin_name=PLUGIN, stack=False)
    assert (kind, kind2) == ("image", "labels") and np.array_equal(labels, q.labels + 1)


def test_geojson_writer_outlines_every_class_with_its_name(tmp_path, q):
    names = ["nuclei", "stroma", "glass", "red cells", "fat", "muscle"]
    [written] = write_geojson(
        str(tmp_path / "outlines"), [quantization_layer_data(q, names=names)[1]]
    )
    assert written.endswith("outlines.geojson")
    features = json.loads(Path(written).read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in features} == set(names)
    pixels = np.bincount(
        [f["properties"]["label"] for f in features],
        weights=[f["properties"]["pixels"] for f in features],
        minlength=len(names) + 1,
    )
    np.testing.assert_array_equal(pixels[1:], np.bincount(q.labels.ravel(), minlength=len(names)))


@pytest.mark.napari
def test_viewer_saves_labels_as_tiff_and_geojson(make_napari_viewer, tmp_path, q):
    viewer = make_napari_viewer()
    for data, meta, kind in quantization_layer_data(q):
        getattr(viewer, f"add_{kind}")(data, **meta)
    viewer.layers.selection = {viewer.layers[-1]}
    for suffix in (".tif", ".geojson"):
        out = tmp_path / f"saved{suffix}"
        viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
        assert out.exists()
    np.testing.assert_array_equal(load(tmp_path / "saved.tif").labels, q.labels)


@pytest.mark.napari
def test_viewer_opens_our_ome_zarr_labels_as_multiscale_labels(make_napari_viewer, tmp_path, q):
    pytest.importorskip("zarr")
    from napari_kmeans_vq.io import save_ome_zarr

    names = ["nuclei", "stroma", "glass", "red cells", "fat", "muscle"]
    store = tmp_path / "slide_labels.ome.zarr"
    save_ome_zarr(store, q, names=names, chunk=64)
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    assert get_reader(str(other)) is None
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(store), plugin=PLUGIN)
    assert type(layer).__name__ == "Labels" and layer.multiscale
    np.testing.assert_array_equal(np.asarray(layer.data[0]), q.labels + 1)
    assert list(layer.features["name"]) == names
