"""Labels as a palette TIFF: tifffile and Pillow read the classes and the colours."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import KVQError
from napari_kmeans_vq.io.tiff import read_labels_tiff, write_labels_tiff

tifffile = pytest.importorskip("tifffile")


def test_round_trip_and_other_readers(ihc, tmp_path):
    from PIL import Image

    q = quantize(ihc, 16)
    path = tmp_path / "labels.tif"
    names = [f"class {i}" for i in range(16)]
    write_labels_tiff(path, q.labels, q.palette, names=names, pixel_size=0.5)
    back = read_labels_tiff(path)
    assert np.array_equal(back.labels, q.labels)
    assert np.array_equal(back.palette, q.palette)
    assert back.extra["names"] == names
    # Any viewer shows the quantized image; the values are the classes.
    with Image.open(path) as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im), q.labels)
        assert np.array_equal(np.asarray(im.convert("RGB")), q.reconstruction)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert page.resolution == (20000.0, 20000.0)  # 0.5 um pixels, per centimetre


def test_sixteen_bit_palette_and_many_classes(ihc, tmp_path):
    image = ihc[:128, :128].astype(np.uint16) * 257
    q = quantize(image, 300)
    path = tmp_path / "many.tif"
    write_labels_tiff(path, q.labels, q.palette)
    back = read_labels_tiff(path)
    assert back.labels.dtype == np.uint16
    assert np.array_equal(back.labels, q.labels)
    assert np.array_equal(back.palette, q.palette) and back.palette.dtype == np.uint16


def test_foreign_palette_tiff_and_non_labels(tmp_path):
    labels = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    colormap = np.zeros((3, 256), dtype=np.uint16)
    colormap[:, 1] = 65535
    colormap[0, 2] = 65535
    tifffile.imwrite(tmp_path / "p.tif", labels, photometric="palette", colormap=colormap)
    back = read_labels_tiff(tmp_path / "p.tif")
    assert np.array_equal(back.labels, labels)
    assert back.palette.tolist() == [[0, 0, 0], [255, 255, 255], [255, 0, 0]]
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(KVQError, match="without a palette"):
        read_labels_tiff(tmp_path / "rgb.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(KVQError, match="not a readable TIFF"):
        read_labels_tiff(tmp_path / "junk.tif")
