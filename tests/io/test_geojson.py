"""Class outlines as GeoJSON: exact pixel-edge polygons, one feature per region."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io.geojson import label_features, write_geojson

draw = pytest.importorskip("skimage.draw")


def rasterise(collection: dict, shape) -> np.ndarray:
    """Each feature's label painted where its polygon (outer minus holes) covers a pixel
    centre; -1 where none does."""
    out = np.full(shape, -1)
    for feature in collection["features"]:
        inside = np.zeros(shape, dtype=bool)
        for i, ring in enumerate(feature["geometry"]["coordinates"]):
            ring = np.asarray(ring, dtype=float)
            # Pixel (r, c) covers [c, c + 1] x [r, r + 1]: its centre is at (c + .5, r + .5).
            rr, cc = draw.polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)
            mask = np.zeros(shape, dtype=bool)
            mask[rr, cc] = True
            inside = inside | mask if i == 0 else inside & ~mask
        assert not (out[inside] >= 0).any(), "features overlap"
        out[inside] = feature["properties"]["label"]
    return out


def regions(labels: np.ndarray) -> int:
    from scipy import ndimage

    return sum(ndimage.label(labels == v)[1] for v in np.unique(labels))


def test_holes_islands_and_diagonal_touches():
    labels = np.zeros((9, 9), dtype=np.uint8)
    labels[1:8, 1:8] = 1  # a square with a hole ...
    labels[3:6, 3:6] = 0
    labels[4, 4] = 2  # ... holding an island
    labels[0, 8] = labels[1, 7] = 3  # two pixels touching at a corner: two regions
    collection = label_features(labels, names={1: "stroma"}, colors={1: (255, 0, 0)})
    assert len(collection["features"]) == regions(labels)
    assert np.array_equal(rasterise(collection, labels.shape), labels)
    square = next(f for f in collection["features"] if f["properties"]["label"] == 1)
    assert len(square["geometry"]["coordinates"]) == 2  # outer ring and one hole
    assert square["properties"]["classification"] == {"name": "stroma", "color": [255, 0, 0]}
    assert square["properties"]["objectType"] == "annotation"
    assert square["properties"]["pixels"] == int((labels == 1).sum())
    # Rings are closed and keep only corners.
    outer = square["geometry"]["coordinates"][0]
    # Six corners (the square less its notched corner pixel [1, 7]), then the first again.
    assert outer == [[1, 1], [7, 1], [7, 2], [8, 2], [8, 8], [1, 8], [1, 1]]


def test_quantized_tissue_round_trips_exactly(ihc, tmp_path):
    labels = quantize(ihc[:160, :200], 6).labels
    path = tmp_path / "classes.geojson"
    write_geojson(path, labels, background=None)
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == regions(labels)
    painted = rasterise(collection, labels.shape)
    assert np.array_equal(painted, labels)


def test_background_is_left_out_and_bad_input_refused():
    labels = np.array([[0, 0, 1], [0, 1, 1]])
    collection = label_features(labels, background=0)
    assert [f["properties"]["label"] for f in collection["features"]] == [1]
    with pytest.raises(ValueError, match="2D integer"):
        label_features(np.zeros((2, 2, 2), dtype=int))
    with pytest.raises(ValueError, match="2D integer"):
        label_features(np.zeros((2, 2)))
