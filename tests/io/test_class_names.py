"""Class names travel into every file written and back; other tools open the files.

Issue 18's acceptance for files: ome-zarr-py's Reader reads the labels-only store; tifffile
and Pillow read the TIFF with its palette; the GeoJSON parses with ``json``, has one feature
per class region and, rasterised back, covers the labels (IoU >= 0.99; here exactly).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import load, save

NAMES = ["nuclei", "stroma", "background (glass)", "red cells"]


@pytest.fixture(scope="module")
def q4(ihc):
    return quantize(ihc[100:260, 120:320], 4)


def test_tiff_names_and_palette_for_other_tools(tmp_path, q4):
    tifffile = pytest.importorskip("tifffile")
    from PIL import Image

    path = save(tmp_path / "classes.tif", q4, names=NAMES, pixel_size=0.25)
    back = load(path)
    assert back.format == "tiff" and back.names == NAMES
    assert np.array_equal(back.labels, q4.labels) and np.array_equal(back.palette, q4.palette)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert np.array_equal(page.asarray(), q4.labels)
        colormap = page.colormap[:, : q4.n_colors].T
        assert np.array_equal(np.rint(colormap / 257).astype(np.uint8), q4.palette)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im.convert("RGB")), q4.reconstruction)
    assert load(save(tmp_path / "plain.tiff", q4)).names is None
    with pytest.raises(ValueError, match="one per class"):
        save(tmp_path / "bad.tif", q4, names=NAMES[:2])
    assert not (tmp_path / "bad.tif").exists()


def _rasterise(collection: dict, shape) -> np.ndarray:
    draw = pytest.importorskip("skimage.draw")
    out = np.zeros(shape, dtype=np.int64)
    for feature in collection["features"]:
        inside = np.zeros(shape, dtype=bool)
        for i, ring in enumerate(feature["geometry"]["coordinates"]):
            ring = np.asarray(ring, dtype=float)
            rr, cc = draw.polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)
            part = np.zeros(shape, dtype=bool)
            part[rr, cc] = True
            inside = inside | part if i == 0 else inside & ~part
        out[inside] = feature["properties"]["label"]
    return out


def _regions(labels: np.ndarray) -> int:
    from scipy import ndimage

    return sum(ndimage.label(labels == v)[1] for v in np.unique(labels))


def test_geojson_names_regions_and_iou(tmp_path, q4):
    path = save(tmp_path / "classes.geojson", q4, names=NAMES)
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == _regions(q4.labels)
    for feature in features:
        label = feature["properties"]["label"]
        classification = feature["properties"]["classification"]
        assert classification["name"] == NAMES[label - 1]
        colour = "#{:02x}{:02x}{:02x}".format(*classification["color"])
        assert colour == "#{:02x}{:02x}{:02x}".format(*q4.palette[label - 1])
    painted = _rasterise(collection, q4.labels.shape)
    for i in range(q4.n_colors):
        truth, drawn = q4.labels == i, painted == i + 1
        iou = (truth & drawn).sum() / max((truth | drawn).sum(), 1)
        assert iou >= 0.99
    # Without names QuPath still gets a class name per label.
    plain = json.loads(save(tmp_path / "plain.geojson", q4).read_text())
    assert {f["properties"]["classification"]["name"] for f in plain["features"]} == {
        f"Class {i + 1}" for i in range(q4.n_colors)
    }


def test_geojson_leaves_out_pixels_outside_the_mask(tmp_path, ihc):
    image = ihc[:96, :128]
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[10:80, 20:110] = True
    q = quantize(image, 3, mask=mask)
    collection = json.loads(save(tmp_path / "m.geojson", q).read_text())
    painted = _rasterise(collection, mask.shape)
    assert not painted[~mask].any()
    assert np.array_equal(painted[mask], q.labels[mask] + 1)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ome_zarr_names_in_properties_and_ome_zarr_py_reads_labels_only(tmp_path, q4, version):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    path = omezarr.write_labels(
        tmp_path / "n.ome.zarr", q4, chunk=64, names=NAMES, ngff_version=version
    )
    levels, meta = omezarr.read_labels(path)
    assert meta["names"] == NAMES
    assert [p["name"] for p in meta["properties"]] == NAMES
    assert np.array_equal(np.asarray(levels[0]) - 1, q4.labels)
    nodes = [n for n in Reader(parse_url(str(path)))() if n.load(Label)]
    assert len(nodes) == 1
    assert np.array_equal(np.asarray(nodes[0].data[0]) - 1, q4.labels)
    properties = nodes[0].metadata["properties"]
    assert [properties[i + 1]["name"] for i in range(4)] == NAMES
    unnamed = omezarr.write_labels(tmp_path / "u.ome.zarr", q4, chunk=64, ngff_version=version)
    assert omezarr.read_labels(unnamed)[1]["names"] is None
    with pytest.raises(ValueError, match="one per class"):
        omezarr.write_labels(tmp_path / "bad.ome.zarr", q4, names=NAMES[:1])


def test_save_ome_zarr_passes_names(tmp_path, q4):
    pytest.importorskip("napari_kmeans_vq.io.omezarr")
    from napari_kmeans_vq.io import save_ome_zarr
    from napari_kmeans_vq.io.omezarr import read_labels

    path = save_ome_zarr(tmp_path / "s.ome.zarr", q4, image="reconstruction", names=NAMES)
    assert read_labels(path)[1]["names"] == NAMES
