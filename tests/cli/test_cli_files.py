"""compress writes the files other tools open: palette TIFF (Fiji, QuPath) and GeoJSON
outlines (QuPath), with the class names and the pixel size given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import run
from PIL import Image

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import load

NAMES = "nuclei,stroma,dab,glass"


@pytest.fixture(scope="module")
def slide(tmp_path_factory, ihc) -> Path:
    path = tmp_path_factory.mktemp("files") / "ihc.png"
    Image.fromarray(ihc).save(path)
    return path


def test_tiff_output_holds_the_labels_palette_names_and_pixel_size(slide, ihc, tmp_path):
    out = tmp_path / "ihc.tif"
    result = run(
        "compress",
        str(slide),
        "-k",
        "4",
        "-o",
        str(out),
        "--names",
        NAMES,
        "--pixel-size",
        "0.5",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    q = quantize(ihc, 4)
    data = load(out)
    np.testing.assert_array_equal(data.palette[data.labels], q.reconstruction)
    assert data.names == NAMES.split(",")
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        x, y = page.tags["XResolution"].value, page.tags["YResolution"].value
    assert x == y and x[0] / x[1] == pytest.approx(1e4 / 0.5)  # pixels per cm
    # Pillow reads the same indices and palette
    with Image.open(out) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), data.labels)


def test_geojson_output_has_one_named_class_per_outline(slide, ihc, tmp_path):
    out = tmp_path / "ihc.geojson"
    result = run("compress", str(slide), "-k", "4", "-o", str(out), "--names", NAMES, "-q")
    assert result.returncode == 0, result.stderr
    collection = json.loads(out.read_text())
    assert collection["type"] == "FeatureCollection"
    names = {f["properties"]["classification"]["name"] for f in collection["features"]}
    assert names == set(NAMES.split(","))
    counted = np.bincount(
        [f["properties"]["label"] for f in collection["features"]],
        weights=[f["properties"]["pixels"] for f in collection["features"]],
        minlength=5,
    )
    q = quantize(ihc, 4)
    np.testing.assert_array_equal(counted[1:], np.bincount(q.labels.ravel(), minlength=4))


def test_unknown_suffix_and_rectangular_tiff_pixels_are_usage_errors(slide, tmp_path):
    result = run("compress", str(slide), "-k", "4", "-o", str(tmp_path / "x.jpg"))
    assert result.returncode == 2
    assert ".kvq, .png, .tif, .geojson or .ome.zarr" in result.stderr.splitlines()[-1]
    out = tmp_path / "x.tif"
    result = run("compress", str(slide), "-k", "4", "-o", str(out), "--pixel-size", "0.5,0.25")
    assert result.returncode == 2
    assert "square pixels" in result.stderr.splitlines()[-1]
    assert not out.exists()
